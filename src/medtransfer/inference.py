"""Score new images with a finished run folder: scores, a 0/1 label at an operating threshold, heat maps.

A score is not a decision; a label needs a threshold, and the threshold must come from the
validation split (the run stores it in ``threshold.json``, Youden's J by default). ``--threshold``
replaces it with a given value; ``--sensitivity S`` chooses it again on the run's stored
validation predictions (``predictions_val.csv``), e.g. 0.95 for screening. Multiclass runs label
each image with its highest-scoring class. ``--cam DIR`` writes a Grad-CAM overlay per image, records each
map's share of mass outside the image centre (column ``cam_mass_outside_centre``) and warns when most maps put
most of their mass there (``Prediction.cam_warning``: suspect a shortcut such as a marker or text).

A batch is scored image by image as far as reading goes: one unreadable file (corrupt, missing, not an
image) must not cost the scores of the hundred readable ones beside it, so it is listed in
``Prediction.failures`` with its one-line reason and the rest are scored; only a batch with no readable
image at all is an error (``NoReadableImages``). An image whose short side is less than a quarter of the
model's input is upsampled more than 4x into pixels the model never saw at that scale, so its score is
flagged (``Prediction.warnings`` and a ``warning`` column) rather than silently trusted.

This is an edge module: it reads the run folder and writes the CAM PNGs; the models and
evaluate layers below it take and return arrays.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .config import config_from_dict, load_yaml
from .data import decode_image
from .data.images import is_dicom, read_dicom, read_pil, square_resize
from .errors import DataError, MedtransferError, reason_of
from .evaluate.threshold import YOUDEN, Criterion, RunThresholds, choose_thresholds, given_thresholds
from .kinds import SCRATCH, RunMethod, TaskKind, ThresholdCriterion
from .models import create_model, load_weights
from .models.cam import (CENTRE_SIDE, cam_target_layer, grad_cam_maps, import_grad_cam, outside_centre_share,
                         overlay_heatmap, overlay_png, shortcut_warning, view_side)
from .run_folder import RunFolder, write_bytes_atomic
from .study.schema import STORE_FILE
from .train import predict, resolve_device
from .train.augment import normalise
from .train.inputs import to_device


# An image is flagged when the model's input is more than this many times its short side.
MAX_UPSAMPLING = 4


@dataclass(frozen=True)
class Unreadable:
    """An image predict could not read, with why in one line: listed instead of scored, so the rest go on."""
    path: Path
    reason: str


@dataclass(frozen=True)
class SmallImage:
    """An image scored after upsampling more than ``MAX_UPSAMPLING`` x: its score is kept but flagged, because
    the model sees interpolated blur it was never trained on (a 1-pixel image still gets a confident score)."""
    path: Path
    width: int
    height: int
    input_size: int

    @property
    def upsampling(self) -> float:
        return self.input_size / min(self.width, self.height)

    @property
    def reason(self) -> str:
        return (f"{self.width}x{self.height} px, upsampled {self.upsampling:.3g}x to the model's {self.input_size} px "
                f"input (more than {MAX_UPSAMPLING}x): its score may be unreliable")


class NoReadableImages(DataError):
    """Not one image of the batch could be read: there is nothing to score or write. ``failures`` lists them all."""

    def __init__(self, failures: list[Unreadable]):
        self.failures = list(failures)
        first = self.failures[0]
        if len(self.failures) == 1:
            text = f"cannot read {first.path}: {first.reason}; nothing was written"
        else:
            text = (f"none of the {len(self.failures)} images could be read ({first.path}: {first.reason}; "
                    f"{len(self.failures) - 1} more); nothing was written")
        super().__init__(text)


@dataclass
class Prediction:
    """What ``predict`` produced: the table (readable images only), the thresholds it used, the heat-map files,
    the images it could not read and the ones it flagged as too small. Nothing is printed here, so a notebook
    gets the same facts the CLI prints."""
    frame: "object"                     # pandas DataFrame, one row per readable image
    thresholds: RunThresholds
    notes: list[str] = field(default_factory=list)
    cam_layer: str | None = None
    cam_files: list[Path] = field(default_factory=list)
    failures: list[Unreadable] = field(default_factory=list)
    warnings: list[SmallImage] = field(default_factory=list)
    n_images: int = 0                   # images asked for: scored + failures
    cam_warning: str | None = None      # most maps put most of their mass outside the image centre (a shortcut?)
    run_warning: str | None = None      # the run's own verdict: its model is not shown better than chance / a baseline


def run_verdict_warning(run_dir: Path) -> str | None:
    """One line when the run's own verdict (metrics.json ``verdict``) says its model is no recommendation: its
    test interval reaches 0.5, or it is not shown better than a simple baseline on the same split. Scores from
    such a model are shown, since a user may want to look at them, but never without this line."""
    import json

    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    verdict = metrics.get("verdict") if isinstance(metrics, dict) else None
    if not isinstance(verdict, dict) or verdict.get("usable") is not False:
        return None
    first = next((line for line in verdict.get("lines") or [] if "NOT" in line or "no better" in line), None)
    why = first.removeprefix("verdict: ") if isinstance(first, str) else "its own verdict says it is not usable"
    return f"this run's model is no recommendation ({why}); its scores are shown for inspection only"


def _study_of(run_dir: Path) -> Path | None:
    """The study folder a grid run folder sits in (STUDY/runs/RUN_ID), if it is one."""
    study = run_dir.resolve().parent.parent
    return study if (study / STORE_FILE).is_file() else None


def check_run_folder(run_dir: Path) -> RunFolder:
    """A run folder predict can use, or a one-line error saying exactly what is missing and what to do."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise MedtransferError(f"--run {run_dir}: no such folder")
    if not folder.config_path.is_file():
        if (folder.path / STORE_FILE).is_file():
            raise MedtransferError(f"{run_dir} is a study folder, not a run folder: use `medtransfer study best "
                                   f"{run_dir} --out DIR` to get its best recipe as a run folder, then --run DIR")
        raise MedtransferError(f"{run_dir} has no config.yaml: --run takes a folder written by `medtransfer train` "
                               "or `medtransfer study best`")
    if not folder.is_finished:
        if folder.failed_path.is_file():
            raise MedtransferError(f"{run_dir} has failed.json but no metrics.json: the run failed "
                                   f"(see {folder.log_path}); it has no model to predict with")
        raise MedtransferError(f"{run_dir} has config.yaml but no metrics.json: the run has not finished "
                               "(it is still running or was interrupted)")
    method = folder.read_metrics().method
    if method is not RunMethod.CNN:
        raise MedtransferError(f"{run_dir} is a {method} baseline run: predict needs a CNN run")
    if not folder.has_weights:
        study = _study_of(run_dir)
        if study is not None:
            raise MedtransferError(
                f"{run_dir} has metrics.json but no model.safetensors: the study ran with keep_weights: false "
                f"(grid runs' weights are deleted); use `medtransfer study best {study} --out DIR` to get its best "
                "recipe as a run folder with weights, or set keep_weights: true in the study spec")
        raise MedtransferError(f"{run_dir} has metrics.json but no model.safetensors: its weights were deleted; "
                               f"train it again with `medtransfer train {folder.config_path} --out DIR`")
    return folder


def load_run(run_dir: Path, device: str = "auto"):
    """Rebuild a run's model from its folder: (config, model, label names, torch device)."""
    folder = check_run_folder(Path(run_dir))
    cfg = config_from_dict(load_yaml(folder.config_path), origin=str(folder.config_path))
    label_names = folder.read_metrics().label_names
    model = create_model(cfg.model.arch, len(label_names), init=SCRATCH, dropout=cfg.model.dropout,
                         log=lambda _line: None)
    load_weights(model, folder.weights_path)   # strict: a run's own weights must fit exactly
    return cfg, model, label_names, resolve_device(device)


def read_val_predictions(folder: RunFolder, kind: TaskKind, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation (0/1 targets (N,K), scores (N,K)) from predictions_val.csv (binary / multilabel:
    a multiclass run is labelled by its top class and never reads them)."""
    path = folder.val_predictions_path
    if not path.is_file():
        raise MedtransferError(f"{path} not found: this run was trained before validation predictions were "
                               "stored, so a threshold cannot be chosen on them; pass --threshold T, or train it again")
    frame = pd.read_csv(path)
    scores = [f"score_{n}" for n in label_names]
    truth = [f"true_{n}" for n in label_names]
    missing = [c for c in scores + truth if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]} missing (columns: {', '.join(frame.columns)})")
    return frame[truth].to_numpy(dtype=np.float32), frame[scores].to_numpy(dtype=np.float64)


def run_thresholds(folder: RunFolder, kind: TaskKind, label_names: list[str], criterion: Criterion | None) -> RunThresholds:
    """The thresholds to label with: the run's stored ones (None), a given value, or re-chosen on validation."""
    if kind == TaskKind.MULTICLASS:
        if criterion is not None:
            raise MedtransferError(f"--threshold / --sensitivity apply to binary and multilabel runs; {folder.path} is "
                                   "a multiclass run, labelled with its highest-scoring class")
        return choose_thresholds(kind, label_names, None, None)
    if criterion is not None and criterion.kind is ThresholdCriterion.GIVEN:
        return given_thresholds(kind, label_names, float(criterion.value))
    if criterion is None and folder.threshold_path.is_file():
        return folder.read_thresholds()
    if criterion is None and not folder.val_predictions_path.is_file():
        raise MedtransferError(f"{folder.threshold_path} not found: this run was trained before operating "
                               "thresholds were stored; pass --threshold T, or train it again")
    y_val, s_val = read_val_predictions(folder, kind, label_names)
    return choose_thresholds(kind, label_names, y_val, s_val, criterion or YOUDEN)


def column_labels(label_names: list[str]) -> list[str]:
    """The ``<label>`` of predict's CSV columns (``score_<label>``, ``predicted_<label>``, ``threshold_<label>``),
    one per label, in order. A binary task on a CSV column of two named values calls its label
    ``COLUMN=POSITIVE`` (``label=covid``); a column name is read by scripts and typed by people, so it gets the
    positive value only (``score_covid``), and any character but ASCII letters, digits, ``-`` and ``_`` becomes
    ``_`` (``No Finding`` -> ``No_Finding``). Two labels that clean to one name get ``_2``, ``_3``, ...; a label
    with nothing left is ``label<k>``."""
    out: list[str] = []
    for k, name in enumerate(label_names):
        text = str(name).partition("=")[2] if "=" in str(name) else str(name)
        base = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]", "_", text)).strip("_") or f"label{k}"
        clean, n = base, 2
        while clean in out:
            clean, n = f"{base}_{n}", n + 1
        out.append(clean)
    return out


def labelled_frame(paths: list[Path], scores: np.ndarray, kind: TaskKind, label_names: list[str],
                   thresholds: RunThresholds):
    """image, score_<label>..., predicted_<label> (0/1) and threshold_<label> per label, criterion; ``<label>`` as
    ``column_labels`` cleans it. A multiclass run's ``predicted`` holds the class name as the data spells it."""
    frame = pd.DataFrame({"image": [str(p) for p in paths]})
    columns = column_labels(label_names)
    frame[[f"score_{c}" for c in columns]] = scores
    if kind == TaskKind.MULTICLASS:
        frame["predicted"] = [label_names[i] for i in np.asarray(scores).argmax(axis=1)]
    else:
        for k, (name, column) in enumerate(zip(label_names, columns)):
            threshold = thresholds.labels[name].threshold
            frame[f"predicted_{column}"] = (scores[:, k] >= threshold).astype(int)
            frame[f"threshold_{column}"] = threshold
    frame["criterion"] = thresholds.criterion
    return frame


def predict_files(run_dir: Path, paths: list[Path], device: str = "auto", criterion: Criterion | None = None,
                  cam_dir: Path | None = None, truth: Mapping[str, object] | None = None) -> Prediction:
    """Score ``paths`` with the run, label them at its operating threshold(s), and optionally write CAMs
    (``truth``: true labels by image path or file name, for the CAM titles; see ``truth_of``).

    Unreadable images are skipped and returned in ``failures`` rather than raised, so one bad file does not
    cost the batch; the caller decides what a partial batch means (the CLI writes it, then exits 2).
    Raises ``NoReadableImages`` when none could be read."""
    run_dir = Path(run_dir)
    if cam_dir is not None:
        import_grad_cam()   # fail before any work when the extra is missing
    cfg, model, label_names, dev = load_run(run_dir, device)
    kind = cfg.task.kind
    thresholds = run_thresholds(RunFolder(run_dir), kind, label_names, criterion)
    paths = [Path(p) for p in paths]
    decoded, failures, warnings = read_images(paths, cfg.image_size)
    if not decoded:
        raise NoReadableImages(failures)
    paths = [p for p, _ in decoded]
    images = np.stack([pixels for _, pixels in decoded])
    scores = predict(model, images, kind, cfg.train.batch_size, dev)
    frame = labelled_frame(paths, scores, kind, label_names, thresholds)
    if warnings:   # only then, so a clean batch keeps the columns scripts already read
        flagged = {w.path: w.reason for w in warnings}
        frame["warning"] = [flagged.get(p, "") for p in paths]
    result = Prediction(frame, thresholds, notes=thresholds.notes(), failures=failures, warnings=warnings,
                        n_images=len(paths) + len(failures), run_warning=run_verdict_warning(Path(run_dir)))
    if cam_dir is not None:   # readable images only: the unreadable ones have no pixels to explain
        batch = ScoredImages(paths, images, scores, truth_of(paths, truth))
        result.cam_layer, result.cam_files, outside = write_cams(model, batch, kind, label_names, thresholds,
                                                                 cfg.image_size, Path(cam_dir), dev)
        frame["cam"] = [str(p) for p in result.cam_files]
        frame[CAM_OUTSIDE_COLUMN] = outside
        result.cam_warning = shortcut_warning(outside)
    return result


def truth_of(paths: list[Path], truth: Mapping[str, object] | None) -> list[str | None] | None:
    """Each image's true label from ``truth``, looked up by the path as given, then resolved, then by file name
    (a labels CSV often lists bare names); None where it has none, and None for all without ``truth``."""
    if not truth:
        return None
    keys = {str(k): v for k, v in truth.items()}
    names = {Path(k).name: v for k, v in keys.items()}
    found = []
    for path in paths:
        value = keys.get(str(path), keys.get(str(Path(path).resolve()), names.get(Path(path).name)))
        found.append(None if value is None or pd.isna(value) else str(value))
    return found


def read_truth(csv: Path) -> dict[str, str]:
    """``predict --truth CSV``: {image: true label} from a CSV with ``image`` and ``label`` columns (more are
    ignored); a one-line error naming what is missing otherwise."""
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(f"--truth {csv}: cannot read it as CSV ({reason_of(err)})") from None
    missing = [c for c in ("image", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"--truth {csv}: needs the columns image and label; missing {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, frame.columns))})")
    return dict(zip(frame["image"], frame["label"]))


def read_images(paths: list[Path], size: int) -> tuple[list[tuple[Path, np.ndarray]], list[Unreadable],
                                                       list[SmallImage]]:
    """Decode each image for the model on its own: ([(path, pixels)] of the readable ones, the unreadable ones
    with their reasons, the readable ones upsampled more than ``MAX_UPSAMPLING`` x), all in input order."""
    decoded, failures, warnings = [], [], []
    for path in paths:
        try:
            pixels = decode_image(path, size)
            width, height = source_size(path)
        except (MedtransferError, OSError) as err:
            failures.append(Unreadable(path, _reason(err, path)))
            continue
        decoded.append((path, pixels))
        if min(width, height) * MAX_UPSAMPLING < size:
            warnings.append(SmallImage(path, width, height, size))
    return decoded, failures, warnings


def source_size(path: Path) -> tuple[int, int]:
    """(width, height) of the stored image, from its header only: ``decode_image`` returns the model's square,
    so the size the warning is about has to be read beside it."""
    if is_dicom(path):
        import pydicom  # imported here, as data.images does: only DICOM inputs pay for it

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception as err:   # decode_image just read it, so this is a header pydicom reads only one way
            raise DataError(f"cannot read the size of DICOM {path}: {type(err).__name__}: {err}") from None
    with Image.open(path) as img:
        return img.size


def _reason(err: BaseException, path: Path) -> str:
    """Why ``path`` could not be read, in one line and without repeating the path (the line names it first)."""
    if isinstance(err, OSError) and not isinstance(err, MedtransferError) and err.strerror:
        return err.strerror                                  # e.g. Permission denied, Is a directory
    text = " ".join(reason_of(err).split())
    if text == f"image file not found: {path}":
        return "file not found"
    for prefix in (f"cannot read image {path}: ", f"cannot read DICOM {path}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.replace(f" '{path}'", "") or text


def cam_outputs(scores: np.ndarray, kind: TaskKind) -> list[int]:
    """Which output each image's map explains: binary the one output; multilabel / multiclass the top score."""
    if kind == TaskKind.BINARY:
        return [0] * len(scores)
    return [int(k) for k in np.asarray(scores).argmax(axis=1)]


@dataclass(frozen=True)
class ScoredImages:
    """The readable images of a batch as the model saw them, with their files and scores: what heat maps explain.
    ``truth``: each image's true label where the caller gave one (None where not), shown in its map's title."""
    paths: list[Path]
    images: np.ndarray
    scores: np.ndarray
    truth: list[str | None] | None = None


def shown_label(name: str) -> str:
    """A label as a title names it: a binary CSV label ``label=covid`` (column=positive value) as ``covid``."""
    return str(name).partition("=")[2] or str(name)


def cam_title(kind: TaskKind, label_names: list[str], thresholds: RunThresholds, scores: np.ndarray, output: int,
              truth: str | None = None) -> list[str]:
    """The lines above one overlay: what the map explains, its score and what predict labelled the image (the
    same threshold as the CSV), then the true label where given. A map alone invites reading it as a finding;
    with the score and the call beside it a reader sees what the model concluded from where it looked."""
    name, score = label_names[output], float(np.asarray(scores)[output])
    if kind == TaskKind.MULTICLASS:
        lines = [f"predicted class: {shown_label(name)} (score {score:.3f}, the top class)"]
    else:
        threshold = thresholds.labels[name].threshold
        call = "positive" if score >= threshold else "negative"
        top = " (the top-scoring finding)" if kind == TaskKind.MULTILABEL else ""
        lines = [f"{shown_label(name)}{top}: score {score:.3f}", f"predicted {call} at threshold {threshold:.3f}"]
    return lines + ([f"true label: {truth}"] if truth not in (None, "") else [])


# predict's column: each map's share of Grad-CAM mass outside the central box (models.cam.CENTRE_SIDE of each side)
CAM_OUTSIDE_COLUMN = "cam_mass_outside_centre"


def write_cams(model, batch: ScoredImages, kind: TaskKind, label_names: list[str], thresholds: RunThresholds,
               image_size: int, out: Path, device) -> tuple[str, list[Path], np.ndarray]:
    """One Grad-CAM overlay PNG per image in ``out`` (named <stem>_cam_<label>.png), titled by ``cam_title`` with
    a colour bar; returns (layer, files, each map's share of mass outside the central ``CENTRE_SIDE`` box, NaN
    for a map with no positive evidence)."""
    images, scores, paths = batch.images, batch.scores, batch.paths
    model.to(device)
    layer_name, layer = cam_target_layer(model, image_size)
    outputs = cam_outputs(scores, kind)
    host = normalise(to_device(images, torch.device("cpu")))   # chunks go to the device as Grad-CAM uses them
    maps = grad_cam_maps(model, host, outputs, layer, device=device)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedtransferError(f"--cam {out}: cannot create the folder ({err.strerror or err})") from None
    files, used, columns = [], set(), column_labels(label_names)
    truth = batch.truth or [None] * len(paths)
    for i, path in enumerate(paths):
        target = _unused_name(out, f"{Path(path).stem}_cam_{columns[outputs[i]]}", used)
        title = cam_title(kind, label_names, thresholds, scores[i], outputs[i], truth[i])
        write_bytes_atomic(target, overlay_png(overlay_heatmap(view_image(Path(path)), maps[i]), title))
        files.append(target)
    return layer_name, files, outside_centre_share(maps, CENTRE_SIDE)


def _unused_name(out: Path, name: str, used: set[str]) -> Path:
    """``out/name.png``, or ``name_2.png``, ... when an earlier image of the batch took it: two inputs with one
    stem (from different folders) keep both maps."""
    target, n = out / f"{name}.png", 2
    while target.name in used:
        target, n = out / f"{name}_{n}.png", n + 1
    used.add(target.name)
    return target


def view_image(path: Path) -> np.ndarray:
    """The model's square crop of the image at the image's own resolution (at least 224 px a side)."""
    gray = read_dicom(path) if is_dicom(path) else read_pil(path)
    return square_resize(gray, view_side(min(gray.shape[:2])))
