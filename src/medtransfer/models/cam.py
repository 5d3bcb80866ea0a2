"""Grad-CAM heat maps: where in the image a trained classifier found the evidence for a label.

Radiologists judge a model partly by where it looked (a pneumonia score driven by a text
marker in the corner is a shortcut, not a finding), so ``predict --cam`` shows it.
The maps come from the ``grad-cam`` package (an optional extra: ``medtransfer[cam]``).

Target layer: the last convolutional block (ResNet: the last block of ``layer4``; DenseNet:
``features.norm5``, the normalised output of the last dense block), torchvision or timm alike.
A block whose feature map is smaller than ``MIN_CAM_SIDE`` pixels a side cannot say *where*
(ResNet-18 turns a 32 px image into 1x1 at ``layer4``), so the last block that is still at
least that wide at the run's image size is used instead, and its name is reported.

Each map's share of mass outside the image centre (``outside_centre_share``, the box ``CENTRE_SIDE``) flags a
model that looks at the border: when most maps of a batch put most of their mass there, ``shortcut_warning``
says to suspect a shortcut (a side marker, burnt-in text, the film's edge).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn

from ..errors import ConfigError

MIN_CAM_SIDE = 4          # a heat map coarser than 4x4 says little about where
VIEW_MIN_SIDE = 224       # overlays of small images are upsampled to at least this, so they are viewable
CAM_INSTALL_HINT = "pip install 'medtransfer[cam]'"

# Per family: candidate target blocks, last first (names relative to the backbone).
_RESNET_STAGES = ("layer4", "layer3", "layer2", "layer1")
_DENSENET_BLOCKS = ("features.norm5", "features.denseblock3", "features.denseblock2", "features.denseblock1")


def import_grad_cam():
    """The GradCAM class and its target type; a one-line ConfigError naming the extra when missing."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ConfigError(f"--cam needs the grad-cam package ({err.name or 'pytorch_grad_cam'} is not "
                          f"installed): {CAM_INSTALL_HINT}") from None
    return GradCAM, ClassifierOutputTarget


def candidate_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv blocks a Grad-CAM may target, last first: ResNet stages, DenseNet blocks, else every Conv2d."""
    def get(name):
        try:
            return backbone.get_submodule(name)
        except AttributeError:
            return None

    if all(get(n) is not None for n in _RESNET_STAGES):
        return [(f"{n}[-1]", get(n)[-1]) for n in _RESNET_STAGES]
    found = [(n, get(n)) for n in _DENSENET_BLOCKS if get(n) is not None]
    if found:
        return found
    convs = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"--cam: {type(backbone).__name__} has no convolutional layer to take a Grad-CAM from")
    if all(tuple(m.stride) == tuple(m.kernel_size) and max(m.kernel_size) > 1 for _, m in convs):   # 1x1: a conv
        # a vision transformer: its only convolution cuts the image into patches, and a map of that layer
        # shows the input, not the evidence (a ViT's Grad-CAM needs its last block's tokens as a map)
        raise ConfigError(f"--cam: {type(backbone).__name__} is a vision transformer (its only convolution is the "
                          "patch embedding): Grad-CAM is not available for it")
    return list(reversed(convs))


def cam_target_layer(model: nn.Module, image_size: int) -> tuple[str, nn.Module]:
    """The last candidate block whose feature map is at least ``MIN_CAM_SIDE`` wide at ``image_size``
    (the widest one when none is); returns (name, module)."""
    candidates = candidate_layers(model.backbone)
    sides: dict[int, int] = {}
    hooks = [m.register_forward_hook(lambda mod, _in, out, i=i: sides.__setitem__(i, min(out.shape[-2:])))
             for i, (_, m) in enumerate(candidates)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, getattr(model, "in_chans", 1), image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for i, candidate in enumerate(candidates):
        if sides.get(i, 0) >= MIN_CAM_SIDE:
            return candidate
    return max(enumerate(candidates), key=lambda ic: sides.get(ic[0], 0))[1]


def grad_cam_maps(model: nn.Module, batch: torch.Tensor, outputs: list[int], layer: nn.Module,
                  batch_size: int = 16, device: torch.device | None = None) -> np.ndarray:
    """Grad-CAM of output ``outputs[i]`` (a logit) for image ``i`` of the normalised ``batch`` (N,C,S,S):
    (N,S,S) float32 in [0, 1], each map min-max scaled (an all-zero map means no positive evidence).
    ``batch`` may stay on the host: each chunk goes to ``device`` (default: where it is) as it is used."""
    GradCAM, ClassifierOutputTarget = import_grad_cam()
    maps = []
    model.eval()
    with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
        for start in range(0, len(batch), batch_size):
            chunk = batch[start:start + batch_size]
            chunk = chunk if device is None else chunk.to(device)
            targets = [ClassifierOutputTarget(int(k)) for k in outputs[start:start + batch_size]]
            maps.append(np.asarray(cam(input_tensor=chunk, targets=targets), dtype=np.float32))
    out = np.concatenate(maps) if maps else np.zeros((0,) + tuple(batch.shape[-2:]), dtype=np.float32)
    return np.nan_to_num(np.clip(out, 0.0, 1.0))


# The image centre a map is measured against: the middle CENTRE_SIDE of each side (a box of 56% of the area, a
# border band of 12.5% of each side around it). Markers, burnt-in text, collimator edges and film borders lie in
# that band on a centred radiograph, the anatomy a finding is in lies inside it. The box is this large, not the
# middle 60% (36% of the area), so that a map with no place to point at (spread evenly) puts less than half its
# mass outside (44%): "most of the mass outside" then means the model's evidence is drawn to the border.
CENTRE_SIDE = 0.75
SHORTCUT_SHARE = 0.5      # a map with more than this share of its mass outside the centre points at the border


def centre_box(height: int, width: int, side: float = CENTRE_SIDE) -> tuple[slice, slice]:
    """The rows and columns of the central box of a ``height`` x ``width`` map (the middle ``side`` of each)."""
    top, left = round(height * (1 - side) / 2), round(width * (1 - side) / 2)
    return slice(top, height - top), slice(left, width - left)


def outside_centre_share(maps: np.ndarray, side: float = CENTRE_SIDE) -> np.ndarray:
    """Per map of ``maps`` (N,H,W, non-negative, as ``grad_cam_maps`` gives them) the share of its mass outside
    the central box (``centre_box``): 0 = all evidence in the centre, 1 = all on the border band; NaN for an
    all-zero map (no positive evidence anywhere, so no place)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"expected maps of shape (N, H, W), got {maps.shape}")
    rows, cols = centre_box(maps.shape[1], maps.shape[2], side)
    total = maps.sum(axis=(1, 2))
    inside = maps[:, rows, cols].sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - inside / np.where(total > 0, total, 1.0), np.nan)


def shortcut_warning(shares: np.ndarray) -> str | None:
    """The one warning line when most maps put most of their mass outside the image centre (None otherwise):
    the model's evidence sits where markers, borders and text are, not where a finding would be. Maps with no
    evidence (NaN shares) are not counted."""
    shares = np.asarray(shares, dtype=float)
    shares = shares[np.isfinite(shares)]
    k, n = int((shares > SHORTCUT_SHARE).sum()), len(shares)
    if n == 0 or 2 * k <= n:
        return None
    return (f"Grad-CAM mass lies mostly outside the image centre in {k} of {n} images: suspect a shortcut "
            "(markers, borders, text)")


def overlay_heatmap(gray: np.ndarray, heat: np.ndarray, colormap: str = "jet",
                    strength: float = 0.6) -> np.ndarray:
    """The grey image with the heat map blended in: (H,W) uint8 + (s,s) [0,1] -> (H,W,3) uint8 RGB.

    The map is upsampled (bilinear) to the image; its opacity follows its value, so regions the
    model ignored show the plain radiograph and hot regions are coloured.
    """
    h, w = gray.shape
    heat_img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR)
    heat_up = np.clip(np.asarray(heat_img), 0.0, 1.0)
    colour = colormaps[colormap](heat_up)[..., :3]
    base = np.repeat((gray.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    alpha = strength * heat_up[..., None]
    return np.clip(np.rint(255.0 * ((1 - alpha) * base + alpha * colour)), 0, 255).astype(np.uint8)


CAM_SCALE = "Grad-CAM (1 = the strongest evidence in this image)"


def overlay_png(rgb: np.ndarray, title: list[str], colormap: str = "jet") -> bytes:
    """The overlay as a PNG a reader can judge on its own: ``title`` (what was scored, the call, the truth where
    known) above it and a colour bar beside it, saying the colours are relative to this image's strongest
    evidence (each map is min-max scaled), not a probability. The image keeps one pixel per pixel of ``rgb``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    height, width = rgb.shape[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    image_axes = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    image_axes.imshow(rgb, interpolation="nearest")
    image_axes.set_axis_off()
    image_axes.set_title("\n".join(title), fontsize=9, loc="left")
    bar_axes = fig.add_axes((1.03, 0.0, max(12 / width, 0.04), 1.0))   # the saved canvas grows to hold it
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps[colormap]), cax=bar_axes)
    bar.set_label(CAM_SCALE, fontsize=8)
    bar.ax.tick_params(labelsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.06, facecolor="white")
    return buf.getvalue()


def view_side(short_side: int) -> int:
    """The overlay's size: the image's own (square-cropped) size, upsampled to at least ``VIEW_MIN_SIDE``."""
    return max(int(short_side), VIEW_MIN_SIDE)

