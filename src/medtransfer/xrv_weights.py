"""torchxrayvision's published DenseNet-121 chest X-ray weights, and which images each saw; and which images
the published foundation backbones' own weights (``model.init: pretrained``) saw, from their model cards.

One small table, free of torch and torchxrayvision, because three layers need it: the
config checks ``model.init: xrv:NAME`` against ``model.arch``, the models layer names the
file to place (offline, with the optional extra not even installed), and the report marks
recipes whose pretraining may have seen the test images. The file names and URLs are
copied from torchxrayvision 1.5.7's ``models.model_urls``: they are release assets of its
``v1`` tag, unchanged since 2020, so a copy costs nothing and spares importing the package
(and its dataset module) just to say which file is missing.

``images_from`` lists the image collections behind each training set, because what leaks
is images, not labels: the RSNA Pneumonia challenge and Google's relabelling are NIH
ChestX-ray14 images, and ChestMNIST is NIH ChestX-ray14 downsampled.
"""
from __future__ import annotations

from dataclasses import dataclass

RELEASE_URL = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"

NIH = "NIH ChestX-ray14"
PADCHEST = "PadChest"
CHEXPERT = "CheXpert"
MIMIC = "MIMIC-CXR"
OPENI = "OpenI"
RSNA = "RSNA Pneumonia (NIH images)"
GOOGLE = "Google's NIH labels (NIH images)"
BRAX = "BRAX"


@dataclass(frozen=True)
class XrvWeights:
    """One torchxrayvision weights file: a whole pickled DenseNet-121 (1-channel input, 18 outputs)."""
    name: str                       # the xrv name, e.g. densenet121-res224-all
    arch: str                       # our model.arch it loads into
    file: str                       # the file name in torchxrayvision's cache folder
    trained_on: tuple[str, ...]     # as torchxrayvision describes the training sets
    images_from: frozenset[str]     # the image collections behind them (what can leak)
    input_size: int = 224

    @property
    def url(self) -> str:
        return RELEASE_URL + self.file

    @property
    def label(self) -> str:
        """The weights as a config names them: ``xrv:NAME``."""
        return f"xrv:{self.name}"

    def saw(self, images: str | None) -> bool:
        """True when ``images`` (a collection name, e.g. :data:`NIH`) is among what these weights trained on."""
        return images is not None and images in self.images_from


def _densenet(key: str, stem: str, trained_on: tuple[str, ...], images_from: set[str]) -> XrvWeights:
    return XrvWeights(f"densenet121-res224-{key}", "densenet121",
                      f"{stem}-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
                      trained_on, frozenset(images_from))


XRV_WEIGHTS: dict[str, XrvWeights] = {w.name: w for w in (
    _densenet("all", "nih-pc-chex-mimic_ch-google-openi-kaggle",
              (NIH, PADCHEST, CHEXPERT, MIMIC, GOOGLE, OPENI, RSNA), {NIH, PADCHEST, CHEXPERT, MIMIC, OPENI}),
    _densenet("nih", "nih", (NIH,), {NIH}),
    _densenet("pc", "pc", (PADCHEST,), {PADCHEST}),
    _densenet("chex", "chex", (CHEXPERT,), {CHEXPERT}),
    _densenet("rsna", "kaggle", (RSNA,), {NIH}),
    _densenet("mimic_nb", "mimic_nb", (MIMIC,), {MIMIC}),
    _densenet("mimic_ch", "mimic_ch", (MIMIC,), {MIMIC}),
)}


@dataclass(frozen=True)
class PublishedPretraining:
    """What a published backbone's own weights (``model.arch`` with ``model.init: pretrained``) were trained on,
    as its model card or paper says; ``images_from`` as for torchxrayvision: the image collections behind them."""
    arch: str
    trained_on: tuple[str, ...]
    images_from: frozenset[str]
    source: str            # where the list comes from

    @property
    def label(self) -> str:
        return self.arch

    def saw(self, images: str | None) -> bool:
        return images is not None and images in self.images_from


# RAD-DINO (Perez-Garcia et al., Nature Machine Intelligence 2025, arXiv 2401.10815): DINOv2 continued on chest
# X-rays of five public collections (self-supervised: images, no labels); its repository's training_images.csv
# lists the files. Backbones trained on natural images (DINOv2's LVD-142M) or on figures (BiomedCLIP's PMC-15M)
# are not listed: no known target collection of ours is among them.
PUBLISHED_PRETRAINING: dict[str, PublishedPretraining] = {p.arch: p for p in (
    PublishedPretraining("hf:microsoft/rad-dino", (MIMIC, CHEXPERT, NIH, PADCHEST, BRAX),
                         frozenset({MIMIC, CHEXPERT, NIH, PADCHEST, BRAX}),
                         "the RAD-DINO paper and model card (training_images.csv in microsoft/rad-dino)"),
    PublishedPretraining("hf:microsoft/rad-dino-maira-2", (MIMIC, CHEXPERT, NIH, PADCHEST, BRAX),
                         frozenset({MIMIC, CHEXPERT, NIH, PADCHEST, BRAX}),
                         "the model card of microsoft/rad-dino-maira-2 (RAD-DINO's data and more)"),
)}


def pretraining_of(init_text: str, arch: str) -> XrvWeights | PublishedPretraining | None:
    """The public pretraining behind a run's init (``xrv:NAME``, or ``pretrained`` on a listed ``model.arch``),
    None when there is none on record. Takes the init's text so that this module stays free of ``kinds``."""
    if init_text.startswith("xrv:"):
        return XRV_WEIGHTS.get(init_text[len("xrv:"):])
    if init_text == "pretrained":
        return PUBLISHED_PRETRAINING.get(arch)
    return None


def xrv_weights(name: str) -> XrvWeights:
    """The table entry for ``name``; ValueError listing the valid names otherwise."""
    try:
        return XRV_WEIGHTS[name]
    except KeyError:
        raise ValueError(f"unknown torchxrayvision weights {name!r}; valid: {', '.join(XRV_WEIGHTS)}") from None


def arch_problem(name: str, arch: str) -> str | None:
    """Why ``model.init: xrv:NAME`` cannot start ``model.arch: ARCH`` (None when it can)."""
    try:
        weights = xrv_weights(name)
    except ValueError as err:
        return f"model.init xrv:{name}: {err}"
    if arch != weights.arch:
        return f"model.init xrv:{name} holds {weights.arch} weights: set model.arch to {weights.arch} (got {arch!r})"
    return None


# Our data sources whose images are known to come from a collection in the table.
_TARGET_IMAGES = {("nih14", None): NIH, ("medmnist", "chestmnist"): NIH}


def target_images(source: str, name: str | None = None) -> str | None:
    """The image collection a run's data comes from, when known (``nih14``, ChestMNIST -> NIH ChestX-ray14).

    A CSV source can hold anything, so it is None: the run's log still lists what the
    weights saw, for the user to judge.
    """
    return _TARGET_IMAGES.get((source, name if source == "medmnist" else None))


def leak_note(weights: XrvWeights | PublishedPretraining) -> str:
    """The one-line caveat the log and the report show for recipes starting from these weights."""
    return (f"{weights.label} was pretrained on {', '.join(weights.trained_on)}: "
            "test images from these collections may have been seen in pretraining")
