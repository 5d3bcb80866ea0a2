"""Where a ``checkpoint:`` init points, resolved before a model is built from it."""
from __future__ import annotations

from pathlib import Path

from ..kinds import Init, InitKind
from ..run_folder import RunFolder


def resolve_init(init: Init, base: Path | None = None) -> Init:
    """``checkpoint:PATH`` relative to the working directory; a run folder means its weights."""
    if init.kind is not InitKind.CHECKPOINT:
        return init
    path = init.path
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    if path.is_dir():
        path = RunFolder(path).weights_path
    return Init.checkpoint(path)
