"""``medtransfer advise`` as one function: check the arguments, run the workflow, write advice.json and advice.html.

The CLI imports this module (with ``candidates.parse_sources`` and ``search.parse_budget``) before the user's
arguments are checked, so nothing heavy is imported at module level: ``workflow`` and ``page`` (torch,
scikit-learn, matplotlib) are imported once the arguments are good. Measured: an argument error
(``medtransfer advise CFG --budget soon``) answers in 0.4 s this way and in 5.7 s with them at the top.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from typing_extensions import TypedDict, Unpack

from ..config import load_config, resolve_data_root
from ..errors import MedtransferError
from ..kinds import auroc_name
from ..run_folder import write_json_atomic, write_text_atomic
from ..parallel import torch_threads
from ..runs.folder_protocol import RunLog
from .candidates import list_candidates
from .plan import SearchSpace

ADVICE_JSON = "advice.json"
ADVICE_HTML = "advice.html"
LOG_FILE = "advise.log"


class AdviseOptions(TypedDict, total=False):
    """:func:`advise`'s keyword options, grouped."""
    space: SearchSpace | None   # the strategies x LR policies searched (None: SearchSpace(), the defaults)
    backbones: list[str]        # published foundation backbones to compare (--backbone ARCH)
    echo: bool                  # print the log as well as writing OUT/advise.log (default True)


def advise(config_path, out, data_root=None, sources: dict[str, Path] | None = None, study_dir=None,
           budget_seconds: float = 600.0, overrides: list[str] | None = None,
           **options: Unpack[AdviseOptions]) -> Path:
    """Rank the candidates, search recipes within ``budget_seconds``, train the pick into OUT/best and write
    OUT/advice.json and OUT/advice.html; returns the path of advice.json."""
    unknown = sorted(set(options) - AdviseOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"advise() got an unexpected keyword argument {unknown[0]!r}")
    started = time.monotonic()
    config_path, out = Path(config_path), Path(out)
    overrides = list(overrides or [])
    cfg = load_config(config_path, overrides)
    root = Path(data_root).expanduser().resolve() if data_root is not None else resolve_data_root(None)
    if budget_seconds <= 0:
        raise MedtransferError(f"--budget must be longer than 0 s, got {budget_seconds}")
    candidates = list_candidates(cfg, sources, Path(study_dir) if study_dir is not None else None,
                                 options.get("backbones"))
    _refuse_existing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedtransferError(f"--out {out}: cannot create the folder ({err.strerror or err})") from None
    from .page import render_advice                      # lazy: see the module docstring
    from .workflow import AdviseRequest, run_workflow    # lazy: see the module docstring

    log = RunLog(out / LOG_FILE, echo=options.get("echo", True))
    try:
        threads = _chosen_threads(cfg, log)
        if threads is not None:
            cfg = cfg.model_copy(deep=True)
            cfg.train.threads = threads
        request = AdviseRequest(cfg, config_path, out, root, overrides, study_dir, budget_seconds,
                                options.get("space") or SearchSpace(), started, threads)
        with torch_threads(cfg.train.threads):
            advice = run_workflow(request, candidates, log)
    except MedtransferError as err:
        log(f"FAILED: {err}")
        raise
    finally:
        log.close()
    write_json_atomic(out / ADVICE_JSON, advice.to_json())
    write_text_atomic(out / ADVICE_HTML, render_advice(advice))
    return out / ADVICE_JSON


def _chosen_threads(cfg, log) -> int | None:
    """The CPU threads advise trains on when the config leaves ``train.threads`` unset and the device is a CPU:
    the cores the machine's other work leaves free (``timing.choose_threads``: on a loaded machine torch's
    default of every core is several times slower); None when the config or a GPU decides."""
    from ..train import resolve_device          # lazy (torch): see the module docstring
    from .timing import busy_cores, choose_threads

    if cfg.train.threads is not None or resolve_device(cfg.train.device).type != "cpu":
        return None
    cores, busy = os.cpu_count() or 1, busy_cores()
    threads = choose_threads(cores, busy)
    shown = "unknown" if busy is None else f"{busy:.1f} of {cores} cores busy"
    log(f"CPU threads: {threads} (train.threads unset; the machine's other work: {shown})")
    return threads


def _refuse_existing(out: Path) -> None:
    if (out / ADVICE_JSON).is_file():
        raise MedtransferError(f"{out / ADVICE_JSON} exists: {out} holds finished advice (choose another --out)")


def advice_summary(path: Path) -> str:
    """The one line ``medtransfer advise`` prints: the pick, its test AUROC, where the page and the model are."""
    advice = json.loads(Path(path).read_text())
    rec = advice["recommendation"]
    auc = "undefined" if rec["test_auroc"] is None else f"{rec['test_auroc']:.4f}"
    out = Path(path).parent
    if rec.get("recommended") is False:
        return (f"{out}: no recommendation at this N: the best recipe found, {rec['recipe']}, has test "
                f"{auroc_name(advice.get('task_kind'))} {auc}, and {rec['why_not']}; see {out / 'advice.html'} "
                f"(its model is kept in {out / 'best'}, marked not recommended)")
    return (f"{out}: advised {rec['recipe']} ({rec['steps']} steps), test {auroc_name(advice.get('task_kind'))} {auc}; "
            f"see {out / 'advice.html'}; model: medtransfer predict --run {out / 'best'}")
