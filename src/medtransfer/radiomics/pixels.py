"""The near-free yardstick: the image's pixels, shrunk to a small grid, into a logistic regression.

A CNN that cannot beat this has learned nothing a linear model of where the image is bright or dark could not,
and the user should know before acting on it (issue 24). It costs seconds, so every run can fit it on its own
training images and test it on its own test images.

Why a 16 x 16 grid of area means (``GRID``): 256 features keep the coarse layout a shortcut lives in (exposure,
collimation and borders, a bright marker or text in a corner, the size of a lung field or a joint space) while
staying near the 50-2,000 images this toolkit is for, so the regression is not just memorising; at 32 x 32 (1,024
features) it already has more features than a 500-image training set has images. The mean over each cell (area
averaging, exact for any image size: a cell that straddles a pixel takes that pixel's share) is the resize that
neither aliases a pattern nor drops a thin marker. Images already smaller than the grid keep their size.

The fit is the radiomics baseline's (``baseline.fit_radiomics_baseline``) on other features: drop the pixels that
are constant in training, standardise, one ``LogisticRegression(class_weight="balanced")`` per output column
(one-vs-rest), L2, C chosen by patient-grouped, label-stratified k-fold CV (``data.splits.pool_folds``, the folds
the CNN runs' cross-validated selection and the radiomics C use) inside the images it is fitted on, never on
validation or test images. Deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kinds import TaskKind
from .baseline import RadiomicsBaseline, fit_radiomics_baseline

GRID = 16
PIXEL_BASELINE = "pixels + LR"     # the baseline's name on every page
PIXEL_KEY = "pixels"                 # its key in metrics.json and in the run folder's draws
CHUNK = 256                          # images averaged at a time: a 224 px stack is not copied to float whole


@dataclass(frozen=True)
class PixelSettings:
    """The fixed settings of the pixel baseline (what ``fit_radiomics_baseline`` reads from ``rcfg``). Not a config
    key: a yardstick that a user tunes stops being one. The grid of C spans the strong penalties 256 correlated
    pixels need at N = 50 to the weak ones 2,000 images can carry."""
    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    selection: str = "pool_cv"
    penalty: str = "l2"
    l1_ratio: float = 0.0


def _cell_weights(size: int, cells: int) -> np.ndarray:
    """(cells, size) weights: row c averages the pixels cell c covers, a straddling pixel by the share it covers."""
    edges = np.linspace(0.0, size, cells + 1)
    left, right = np.arange(size), np.arange(size) + 1.0
    overlap = np.clip(np.minimum(right[None, :], edges[1:, None]) - np.maximum(left[None, :], edges[:-1, None]), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def pixel_features(images: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(N, g * g) float64 area means of (N, H, W) images over a g x g grid (g = min(grid, H, W))."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"pixel baseline: expected (N, H, W) images, got shape {images.shape}")
    n, height, width = images.shape
    rows, cols = _cell_weights(height, min(grid, height)), _cell_weights(width, min(grid, width))
    out = np.empty((n, rows.shape[0] * cols.shape[0]), dtype=np.float64)
    for start in range(0, n, CHUNK):
        block = np.asarray(images[start:start + CHUNK], dtype=np.float64)
        out[start:start + len(block)] = np.einsum("gh,nhw,kw->ngk", rows, block, cols).reshape(len(block), -1)
    return out


@dataclass(frozen=True)
class PixelBaseline:
    """The fitted pixel baseline and how its C was chosen (``note``: in words, for train.log)."""
    model: RadiomicsBaseline
    grid: int
    note: str

    def predict_scores(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict_scores(pixel_features(images, self.grid))

    @property
    def chosen_c(self) -> float:
        return float(self.model.C)


def fit_pixel_baseline(images: np.ndarray, labels: np.ndarray, groups: np.ndarray, task_kind: TaskKind, *,
                       seed: int, label_names: list[str], cv_folds: int = 5) -> PixelBaseline:
    """Fit on every image given (a run's training images, or its N-pool when it cross-validated), C by
    patient-grouped CV over them; ``groups``: one patient id per image."""
    features = pixel_features(images)
    grid = int(round(np.sqrt(features.shape[1])))
    empty = features[:0]
    empty_labels = np.asarray(labels)[:0]
    model, chosen, _ = fit_radiomics_baseline(
        features, labels, empty, empty_labels, task_kind, PixelSettings(), groups_train=groups, seed=seed,
        n_outputs=len(label_names), label_names=label_names, cv_folds=cv_folds)
    folds = model.chosen_on.get("folds")
    how = (f"C={chosen:g} by {folds}-fold patient-grouped CV over its {len(features)} training images" if folds else
           f"C={chosen:g} (the grid value nearest 1: too few patients of a class to cross-validate)")
    note = f"{PIXEL_BASELINE}: {grid}x{grid} area-mean pixels, {len(model.kept_features)} not constant; {how}"
    said = [n for n in model.notes if "undefined for every C" not in n]   # the radiomics wording of "no CV", said above
    return PixelBaseline(model, grid, "; ".join([note] + said))
