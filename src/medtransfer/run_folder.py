"""A run folder and the metrics it holds: one type for each, so no layer spells a file name or a JSON key.

A run folder is the unit of truth of the project: ``config.yaml`` first, ``train.log`` throughout,
``metrics.json`` last and atomically (its presence means the run finished), ``failed.json``
instead when it failed. CNN runs, radiomics runs, the study (``study.execute`` and its executors),
``predict`` and the report all go through ``RunFolder``; what a run measured travels as ``RunMetrics``.
The protocol a run follows to fill its folder is ``runs.folder_protocol``.

Writes are atomic (a temp file renamed into place), and a full disk is a one-line error naming
the path and the free space, with the temp file removed: a reader never sees half a file.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MedtransferError, write_error
from .kinds import RunMethod, TaskKind


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to ``path.tmp`` and rename; on failure remove the temp file and say why in one line."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, err) from None


def write_json_atomic(path: Path, payload: dict) -> None:
    """Strict JSON (NaN -> null), written atomically."""
    write_text_atomic(path, json.dumps(_json_safe(payload), indent=2, allow_nan=False))


disk_error = write_error   # the name the run folder's callers use


_CORE_BLOCK = ("auroc_macro", "auprc_macro", "auroc", "auprc", "n_images", "n_labels_scored")
_OPTIONAL_BLOCK = ("undefined", "accuracy", "auroc_ci", "operating_point", "patients_per_class")   # written only when they hold something


@dataclass
class MetricBlock:
    """One split's scores: metrics.json's ``val`` / ``test`` block, made by ``evaluate.score_metrics``.

    ``to_json`` writes the keys in the order every run has written them; a block read by ``from_json``
    writes back exactly the keys it held, in their order (``read``), so a metrics.json of any version
    (and the store's copy of it) keeps its bytes. ``auroc_ci`` (test: the bootstrap interval),
    ``operating_point`` (binary: at the validation threshold) and ``patients_per_class`` (test: how many
    patients each class's AUROC rests on) are added after scoring.
    """
    auroc_macro: float | None = None
    auprc_macro: float | None = None
    auroc: dict[str, float | None] = field(default_factory=dict)   # per label (one-vs-rest per class)
    auprc: dict[str, float | None] = field(default_factory=dict)
    n_images: int | None = None
    n_labels_scored: int | None = None
    undefined: dict[str, str] = field(default_factory=dict)         # label -> why it has no value
    accuracy: float | None = None                                   # multiclass: the arg-max accuracy
    auroc_ci: dict[str, Any] | None = None                          # ``evaluate.per_run`` interval's JSON
    operating_point: dict[str, Any] | None = None
    patients_per_class: dict[str, int] | None = None                # test: patients of each class present
    extra: dict[str, Any] = field(default_factory=dict)             # keys this version does not know, as read
    read: tuple[str, ...] | None = None                             # the keys a read block held, in order

    def ci_bounds(self) -> tuple[float | None, float | None]:
        """The test AUROC interval's (low, high); (None, None) without one."""
        interval = self.auroc_ci or {}
        return interval.get("low"), interval.get("high")

    def _holds(self, key: str) -> bool:
        if key in _CORE_BLOCK:
            return self.read is None
        value = getattr(self, key)
        return value is not None and value != {}

    def to_json(self) -> dict[str, Any]:
        keys = list(self.read or ()) + [k for k in _CORE_BLOCK + _OPTIONAL_BLOCK
                                        if k not in (self.read or ()) and self._holds(k)]
        keys += [k for k in self.extra if k not in keys]
        return {k: self.extra[k] if k in self.extra else getattr(self, k) for k in keys}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "MetricBlock":
        if not isinstance(payload, dict):
            raise TypeError(f"a metrics block must be a JSON object, got {type(payload).__name__}")
        known = {k: payload[k] for k in _CORE_BLOCK + _OPTIONAL_BLOCK if k in payload}
        for key in ("auroc", "auprc", "undefined"):   # null where a dict belongs: kept as read (extra)
            if key in known and not isinstance(known[key], dict):
                del known[key]
        return cls(**known, extra={k: v for k, v in payload.items() if k not in known}, read=tuple(payload))


@dataclass
class RunMetrics:
    """What one finished run measured; ``to_json`` is exactly the layout of ``metrics.json``.

    ``val`` / ``test`` are ``MetricBlock``s (``evaluate.score_metrics``: macro and per-label AUROC / AUPRC).
    ``details`` holds what only one method reports (radiomics: the chosen C and the feature
    counts), written as top-level keys so older readers keep working.
    """
    task_kind: TaskKind
    label_names: list[str]
    val: dict[str, Any]
    test: dict[str, Any]
    n_train_images: int
    n_train_patients: int
    n_val_images: int
    n_test_images: int
    epochs_run: int | None
    best_epoch: int | None
    stopped_reason: str
    seconds: float
    device: str
    history: list[dict] = field(default_factory=list)
    method: RunMethod = RunMethod.CNN
    torch_threads: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    _CORE = ("task_kind", "label_names", "val", "test", "n_train_images", "n_train_patients", "n_val_images",
             "n_test_images", "epochs_run", "best_epoch", "stopped_reason", "seconds", "device")

    def auroc(self, split: str) -> float | None:
        """The split's macro AUROC (None when undefined)."""
        block = self.block(split)
        return None if block is None or block.auroc_macro is None else float(block.auroc_macro)

    def block(self, split: str) -> MetricBlock | None:
        """The ``val`` or ``test`` block (None when the run recorded none)."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be val or test, got {split!r}")
        return self.val if split == "val" else self.test

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_kind": self.task_kind, "label_names": self.label_names}
        if self.method is not RunMethod.CNN:
            out["method"] = self.method.value
        out.update({k: getattr(self, k) for k in self._CORE[2:]})
        out.update({split: None if block is None else block.to_json()
                    for split, block in (("val", self.val), ("test", self.test))})
        if self.torch_threads is not None:
            out["torch_threads"] = self.torch_threads
        out["history"] = self.history
        out.update(self.details)
        return _json_safe(out)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "RunMetrics":
        """Read a metrics.json of any version (missing keys take their defaults; unknown ones go to details)."""
        known = set(cls._CORE) | {"method", "torch_threads", "history"}
        core = {k: payload.get(k) for k in cls._CORE}
        core.update({split: None if core[split] is None else MetricBlock.from_json(core[split])
                     for split in ("val", "test")})
        if core["task_kind"] is not None:
            core["task_kind"] = TaskKind(core["task_kind"])
        return cls(**core, history=list(payload.get("history") or []),
                   method=RunMethod(payload.get("method") or RunMethod.CNN),
                   torch_threads=payload.get("torch_threads"),
                   details={k: v for k, v in payload.items() if k not in known})


class RunFolder:
    """The files of one run, by role. Paths are properties; reads and atomic writes are methods."""

    CONFIG = "config.yaml"
    METRICS = "metrics.json"
    FAILED = "failed.json"
    LOG = "train.log"
    WEIGHTS = "model.safetensors"
    PREDICTIONS = "predictions_test.csv"
    VAL_PREDICTIONS = "predictions_val.csv"   # what --sensitivity re-chooses a threshold on
    THRESHOLD = "threshold.json"              # the operating threshold(s) chosen on validation
    LR_TRACE = "lr_trace.csv"
    COEFFICIENTS = "coefficients.csv"
    BOOTSTRAP = "test_bootstrap.npz"          # the test AUROC of each patient resample (evaluate.per_run)
    OUTER_PREDICTIONS = "predictions_outer_cv.csv"   # out-of-fold scores of the outer cross-validation (runs.outer_cv)
    BASELINE_BOOTSTRAP = "baseline_bootstrap.npz"   # the same resamples scored by the baselines fitted beside it
    RESULTS = (METRICS, FAILED, LOG, PREDICTIONS, VAL_PREDICTIONS, THRESHOLD, WEIGHTS, LR_TRACE, COEFFICIENTS,
               BOOTSTRAP, OUTER_PREDICTIONS, BASELINE_BOOTSTRAP)   # what a new run replaces

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config_path = property(lambda self: self.path / self.CONFIG)
    metrics_path = property(lambda self: self.path / self.METRICS)
    failed_path = property(lambda self: self.path / self.FAILED)
    log_path = property(lambda self: self.path / self.LOG)
    weights_path = property(lambda self: self.path / self.WEIGHTS)
    predictions_path = property(lambda self: self.path / self.PREDICTIONS)
    val_predictions_path = property(lambda self: self.path / self.VAL_PREDICTIONS)
    threshold_path = property(lambda self: self.path / self.THRESHOLD)
    lr_trace_path = property(lambda self: self.path / self.LR_TRACE)
    coefficients_path = property(lambda self: self.path / self.COEFFICIENTS)
    bootstrap_path = property(lambda self: self.path / self.BOOTSTRAP)
    outer_predictions_path = property(lambda self: self.path / self.OUTER_PREDICTIONS)
    baseline_bootstrap_path = property(lambda self: self.path / self.BASELINE_BOOTSTRAP)

    def write_bootstrap(self, draws, test_set: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, draws=np.asarray(draws, dtype=np.float32), test_set=np.array(test_set))
        write_bytes_atomic(self.bootstrap_path, buf.getvalue())

    def read_bootstrap(self):
        """(draws, test-set fingerprint) of the run's test bootstrap, or None (an older run, or AUROC undefined)."""
        try:
            with np.load(self.bootstrap_path, allow_pickle=False) as saved:
                draws, test_set = saved["draws"], str(saved["test_set"])
        except (OSError, ValueError, KeyError):
            return None
        return (draws, test_set) if draws.ndim == 1 else None

    def write_baseline_bootstrap(self, draws: dict[str, np.ndarray], test_set: str) -> None:
        """Each baseline's test AUROC on the run's own patient resamples ({baseline key: draws}), so a report can
        pair the model with it over seeds as it pairs two recipes."""
        buf = io.BytesIO()
        np.savez(buf, test_set=np.array(test_set), **{k: np.asarray(v, dtype=np.float32) for k, v in draws.items()})
        write_bytes_atomic(self.baseline_bootstrap_path, buf.getvalue())

    def read_baseline_bootstrap(self, key: str):
        """(draws, test-set fingerprint) of one baseline, or None (not fitted, or a run from before baselines)."""
        try:
            with np.load(self.baseline_bootstrap_path, allow_pickle=False) as saved:
                draws, test_set = saved[key], str(saved["test_set"])
        except (OSError, ValueError, KeyError):
            return None
        return (draws, test_set) if draws.ndim == 1 else None

    @property
    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    @property
    def has_weights(self) -> bool:
        return self.weights_path.is_file()

    def prepare(self, overwrite: bool) -> None:
        """Create the folder for a new run; refuse to clobber a finished one unless told to."""
        if self.is_finished and not overwrite:
            raise MedtransferError(f"{self.metrics_path} exists: {self.path} holds a finished run "
                                   "(choose another --out or pass --overwrite)")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.RESULTS:
            (self.path / stale).unlink(missing_ok=True)

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config_path, text)

    def write_metrics(self, metrics: RunMetrics) -> None:
        write_json_atomic(self.metrics_path, metrics.to_json())

    def read_metrics(self) -> RunMetrics:
        """The finished run's metrics; a MedtransferError naming the file when it is missing or unreadable."""
        try:
            return RunMetrics.from_json(json.loads(self.metrics_path.read_text()))
        except FileNotFoundError:
            raise MedtransferError(f"{self.metrics_path} not found: {self.path} holds no finished run") from None
        except (OSError, ValueError, TypeError) as err:
            raise MedtransferError(f"{self.metrics_path} is not a readable metrics file ({err})") from None

    def write_thresholds(self, thresholds) -> None:
        """``thresholds``: an ``evaluate.threshold.RunThresholds``."""
        write_json_atomic(self.threshold_path, thresholds.to_json())

    def read_thresholds(self):
        """The run's ``RunThresholds``; a MedtransferError naming the file when it is missing or unreadable."""
        # imported here: scikit-learn (about 1.1 s measured), which every importer of this module (the CLI's
        # `--help` among them, 0.35 s in all) would pay; only predict reads thresholds
        from .evaluate.threshold import RunThresholds

        try:
            return RunThresholds.from_json(json.loads(self.threshold_path.read_text()))
        except FileNotFoundError:
            raise MedtransferError(f"{self.threshold_path} not found") from None
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise MedtransferError(f"{self.threshold_path} is not a readable threshold file ({err})") from None

    def write_failed(self, reason: str, error_type: str, seconds: float) -> None:
        write_json_atomic(self.failed_path, {"error": reason, "type": error_type, "seconds": round(seconds, 2)})

    def failure_reason(self) -> str | None:
        """The reason failed.json records (None when there is none or it is unreadable)."""
        try:
            return str(json.loads(self.failed_path.read_text()).get("error") or "") or None
        except (OSError, ValueError, AttributeError):
            return None

    def remove_weights(self) -> None:
        self.weights_path.unlink(missing_ok=True)
