"""Backbones loaded as their authors publish them: a Hugging Face repository read through its own library.

``model.arch: hf:ORG/NAME`` (transformers), ``openclip:hf-hub:ORG/NAME`` (open_clip) and
``timm:hf-hub:ORG/NAME`` (timm) name such a backbone, ``model.init: pretrained`` its repository's weights.
Each family calls its library's ordinary loading function (``AutoModel.from_pretrained``,
``open_clip.create_model``, ``timm.create_model``) on the Hugging Face cache, so a repository a user already
downloaded is found, and what is found is what their other code would load.

Input. Every medtransfer model is fed one grey channel ``z = (x/255 - GREY_MEAN) / GREY_STD`` at the run's
``image_size`` (models/inputs.py). A published backbone expects what its authors' preprocessing makes: RGB
(a grey X-ray converted by replication, as their processors' convert-to-RGB does), resized and centre-cropped
to its input size and normalised per channel. :class:`InputAdapter`, the backbone's first module, does exactly
that with the numbers read from the model's own config (timm's data config, the image processor's config,
open_clip's preprocess config). Inside the model, the image cache, augmentation, ``predict`` and Grad-CAM need
nothing new (the same reason xrv_init folds its input scaling into weights).

The cache. Files are looked up in huggingface_hub's cache folder (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
else ``~/.cache/huggingface/hub``), read when the model is built. A file that is not there is downloaded into
it with huggingface_hub when downloads are allowed; when they are not (``HF_HUB_OFFLINE=1``,
``MEDTRANSFER_OFFLINE=1``, no route to huggingface.co) the build stops with one line naming the repository,
the files and the folder. Once every file is in the cache the library loads them with huggingface_hub's
offline switch on: loading never waits on the network.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, MissingExtra, WeightsUnavailable
from .classifier import Backbone, split_names
from .init import error_detail, offline, reachable
from .inputs import GREY_MEAN, GREY_STD

Log = Callable[[str], None]
HUB_URL = "https://huggingface.co"
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


# ---------------------------------------------------------------- the input the authors feed

@dataclass(frozen=True)
class InputSpec:
    """What the authors' evaluation preprocessing hands the model: the image resized to ``resize`` px a side,
    centre-cropped to ``size`` px, as RGB normalised with ``mean`` / ``std`` (per channel, on x/255)."""
    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    source: str            # where the numbers were read, for the log

    def describe(self) -> str:
        crop = f", centre crop {self.size} px" if self.resize != self.size else ""
        return (f"grey replicated to RGB, resized to {self.resize} px ({self.interpolation}){crop}, "
                f"mean {_fmt(self.mean)} std {_fmt(self.std)} (from {self.source})")


def _fmt(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.3g}" for v in values)


def rgb_triple(values, what: str) -> tuple[float, float, float]:
    """A mean or std as three floats (a single value, or one per channel, as configs give them)."""
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise WeightsUnavailable(f"{what}: expected 1 or 3 values, got {len(values)}")
    return values[0], values[1], values[2]


def interpolation_name(name: str) -> str:
    """torch's name for a resize filter given as a config names it ('bicubic', 'bilinear', ...)."""
    name = str(name).lower()
    return name if name in _INTERPOLATIONS else "bicubic"


class InputAdapter(nn.Module):
    """medtransfer's grey input -> the input the model's authors feed it (see the module docstring).

    No parameters: the affine map lives in non-persistent buffers rebuilt from the model's config, so a
    run's weights file holds only what trains. The grey image is resized and cropped before it is replicated:
    the same pixels for a third of the work.
    """

    def __init__(self, spec: InputSpec, in_chans: int = 1):
        super().__init__()
        if in_chans not in (1, 3):
            raise ConfigError(f"a published backbone takes 1 (grey) or 3 input channels, not {in_chans}")
        self.size, self.resize, self.mode = spec.size, spec.resize, spec.interpolation
        std = torch.tensor(spec.std).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        # (z * GREY_STD + GREY_MEAN - mean) / std, per RGB channel
        self.register_buffer("scale", GREY_STD / std, persistent=False)
        self.register_buffer("shift", (GREY_MEAN - mean) / std, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-2:] != (self.resize, self.resize):
            shrink = z.shape[-1] > self.resize
            z = F.interpolate(z, size=(self.resize, self.resize), mode=self.mode,
                              **({} if self.mode == "nearest" else dict(align_corners=False, antialias=shrink)))
        if self.size != self.resize:
            top = (self.resize - self.size) // 2
            z = z[..., top:top + self.size, top:top + self.size]
        return z * self.scale + self.shift   # (B, 1 or 3, S, S) -> (B, 3, S, S)

    def extra_repr(self) -> str:
        return f"resize={self.resize}, size={self.size}, mode={self.mode!r}"


class PublishedBackbone(nn.Module):
    """``adapt`` (the authors' preprocessing) then ``encoder`` (the published network, pooled to (B, F))."""

    def __init__(self, adapt: InputAdapter, encoder: nn.Module):
        super().__init__()
        self.adapt = adapt
        self.encoder = encoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.adapt(z))


def published_backbone(encoder: nn.Module, num_features: int, spec: InputSpec, late: set[int],
                       in_chans: int) -> Backbone:
    """The :class:`Backbone` of ``encoder`` behind its :class:`InputAdapter`; ``late`` holds the ids of the
    encoder's late-group parameters (everything else but the head is early)."""
    module = PublishedBackbone(InputAdapter(spec, in_chans), encoder)
    early, late_names = split_names(encoder, late)
    return Backbone(module, num_features, early=[f"encoder.{n}" for n in early],
                    late=[f"encoder.{n}" for n in late_names], input_size=spec.size)


# ---------------------------------------------------------------- layer groups of a transformer

def block_list(model: nn.Module) -> nn.ModuleList:
    """The network's stack of blocks: its ModuleList holding the most parameters (a ViT's ``blocks``,
    transformers' ``encoder.layer``, open_clip's ``transformer.resblocks``)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not lists:
        raise WeightsUnavailable(f"{type(model).__name__}: no stack of blocks to split into early and late groups")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def late_half(model: nn.Module, late_names: tuple[str, ...] = ()) -> set[int]:
    """Ids of the late group: the second half of the blocks and every parameter registered after them (final
    norm, projection), plus parameters named in ``late_names`` (a projection a container registers first).

    So early = patch embedding, class / position tokens and the first half of the blocks, as the layer groups
    of the CNN families are the stem and the first half of the stages.
    """
    blocks = block_list(model)
    in_block = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    cut = (len(blocks) + 1) // 2
    late: set[int] = set()
    after = False
    for name, param in model.named_parameters():
        index = in_block.get(id(param))
        if index is not None:
            after = after or index >= len(blocks) - 1
            if index >= cut:
                late.add(id(param))
        elif after or name in late_names:
            late.add(id(param))
    return late


# ---------------------------------------------------------------- the Hugging Face cache

@dataclass(frozen=True)
class HubFile:
    """One file a backbone needs from a repository; ``names`` are alternatives, the first preferred."""
    repo: str
    names: tuple[str, ...]
    revision: str | None = None


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder by its own rule, read now rather than when it was imported."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def downloads_off() -> str | None:
    """Why nothing may be downloaded (the variable that says so), or None."""
    if offline():
        return "MEDTRANSFER_OFFLINE=1"
    from huggingface_hub import constants   # installed with every library that reads a repository
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return "HF_HUB_OFFLINE=1" if env or constants.HF_HUB_OFFLINE else None


def cached(file: HubFile, cache: Path) -> Path | None:
    """The cached copy of ``file`` (its first alternative found), looked up without the network."""
    from huggingface_hub import try_to_load_from_cache
    for name in file.names:
        found = try_to_load_from_cache(file.repo, name, cache_dir=str(cache), revision=file.revision)
        if isinstance(found, str):
            return Path(found)
    return None


def fetch_files(what: str, files: list[HubFile], log: Log, note: str = "") -> dict[HubFile, Path]:
    """Every file of ``files`` in the cache (downloaded into it when allowed), or one line saying which to place.

    ``what`` names the backbone in the message, e.g. ``model.arch hf:microsoft/rad-dino``; ``note`` adds what
    else will be needed that cannot be named yet.
    """
    cache = hf_cache_dir()
    found = {f: cached(f, cache) for f in files}
    missing = [f for f, path in found.items() if path is None]
    reason = (downloads_off() or reachable(HUB_URL)) if missing else None
    if missing and reason is None:
        from huggingface_hub import hf_hub_download
        for file in missing:
            log(f"downloading {file.names[0]} of {file.repo} into {cache}")
            for name in file.names:
                try:
                    found[file] = Path(hf_hub_download(file.repo, name, revision=file.revision, cache_dir=str(cache)))
                    break
                except Exception as err:  # hub errors come in many types; the message below says what to do
                    reason = f"download failed: {error_detail(err)}"
        missing = [f for f, path in found.items() if path is None]
    if missing:
        raise WeightsUnavailable(missing_files_line(what, missing, cache, reason or "not downloaded", note))
    return {f: path for f, path in found.items() if path is not None}


def absent_files_line(what: str, files: list[HubFile], note: str = "") -> str | None:
    """The line :func:`fetch_files` would end with for the files not in the cache, found without the network
    and without downloading anything (None: every file is there). For a dry run."""
    cache = hf_cache_dir()
    missing = [f for f in files if cached(f, cache) is None]
    if not missing:
        return None
    reason = downloads_off() or "downloaded when a run needs them, if huggingface.co can be reached"
    return missing_files_line(what, missing, cache, reason, note)


def missing_files_line(what: str, missing: list[HubFile], cache: Path, reason: str, note: str = "") -> str:
    """The one line naming, per repository, the files to place in the cache and the command that does it."""
    by_repo: dict[str, list[str]] = {}
    for file in missing:
        shown = file.names[0] + (f" (or {' or '.join(file.names[1:])})" if len(file.names) > 1 else "")
        by_repo.setdefault(file.repo, []).append(shown)
    parts, commands = [], []
    for repo, names in by_repo.items():
        parts.append(f"{_and(names)} of {repo}")
        plain = [n.split(" ")[0] for n in names]
        commands.append(f"hf download {repo} {' '.join(plain)}")
    repos = _and(list(by_repo))
    also = f", {note}" if note else ""
    return (f"{what}: {repos} {'is' if len(by_repo) == 1 else 'are'} not in the Hugging Face cache {cache} "
            f"({reason}): put {'; and '.join(parts)} there{also} (online: {'; '.join(commands)}, then copy the "
            "models--* folders it makes in that machine's cache over)")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@contextmanager
def reading_cache(cache: Path) -> Iterator[None]:
    """Run a library's loading call on ``cache`` with huggingface_hub's offline switch on.

    Every file is already there, so the call must not spend a network round-trip checking for a newer
    revision (on a workstation without a route it can wait on DNS for minutes). huggingface_hub reads its
    ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` settings when a call is made, from its ``constants`` module, which
    froze the environment when it was imported: setting them there for the call is what ``HF_HUB_OFFLINE=1``
    and ``HF_HUB_CACHE`` would have done, including inside a library that passes no ``cache_dir`` on (open_clip
    building a text tower's config).
    """
    from huggingface_hub import constants
    saved = constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE
    constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = True, str(cache)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_CACHE = saved


def load_failed(what: str, repo: str, err: BaseException) -> WeightsUnavailable:
    """The one line for cached files the library cannot load (truncated, or not what the repository holds)."""
    folder = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    return WeightsUnavailable(f"{what}: the cached files of {repo} cannot be loaded ({type(err).__name__}: "
                              f"{error_detail(err)}): delete {folder} and place them again")


def read_json(path: Path, what: str) -> dict:
    """A repository's JSON config, or one line naming the damaged file."""
    try:
        tree = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise WeightsUnavailable(f"{what}: {path} is not a readable JSON file ({error_detail(err)}): "
                                 "delete it and place it again") from None
    if not isinstance(tree, dict):
        raise WeightsUnavailable(f"{what}: {path} does not hold a JSON object")
    return tree


def import_library(module: str, arch_form: str, extra: str):
    """The optional library a family needs, or one line naming the pip extra that installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"model.arch {arch_form} needs {module}: pip install 'medtransfer[{extra}]'") from None


def loaded_line(arch: str, pretrained: bool, files: dict[HubFile, Path], spec: InputSpec) -> str:
    """The log line of a built backbone: where its weights came from and how its input is made."""
    weights = [p for f, p in files.items() if not f.names[0].endswith(".json")]
    source = f"init pretrained from {weights[0]}" if pretrained and weights else "init scratch (random weights)"
    return f"model {arch}: {source}; input: {spec.describe()}"
