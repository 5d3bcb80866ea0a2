"""transformers vision backbones, as published: ``model.arch: hf:ORG/NAME`` (optional extra ``hf``).

E.g. RAD-DINO: ``hf:microsoft/rad-dino`` with ``model.init: pretrained``. The network is
``AutoModel.from_pretrained(ORG/NAME)`` (``AutoModel.from_config`` of its config.json for ``scratch``), its
input what ``AutoImageProcessor.from_pretrained(ORG/NAME)`` would make: resized (``size``), centre-cropped
(``crop_size``), normalised with ``image_mean`` / ``image_std``, the grey image replicated to RGB as the
processor's ``do_convert_rgb`` does (see models/published.py). The embedding is the model's
``pooler_output``, as RAD-DINO's authors take it (the CLS token after the final layer norm in a DINOv2
model), else the first token of ``last_hidden_state``.
Layer groups: embeddings and the first half of ``encoder.layer`` | the other blocks and the final norm.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from .classifier import Backbone
from .published import (HubFile, InputSpec, fetch_files, hf_cache_dir, import_library,
                        late_half, load_failed, loaded_line, published_backbone, reading_cache, rgb_triple)
from .registry import register_family

Log = Callable[[str], None]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # what from_pretrained reads, safetensors first
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}     # PIL's filter numbers in an image processor config


class PooledOutput(nn.Module):
    """A transformers vision model as ``(B, 3, S, S) -> (B, F)``: its pooled output, as its users read it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


def _field(value, key: str):
    """``key`` of an image processor's size (a dict in transformers 4, a SizeDict in 5)."""
    if value is None:
        return None
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def processor_input(processor, what: str) -> InputSpec:
    """An image processor's resize / centre crop / normalisation as an :class:`InputSpec` (square images)."""
    size = processor.size if getattr(processor, "do_resize", True) else None
    side = _field(size, "shortest_edge") or _field(size, "height")
    crop = _field(processor.crop_size, "height") if getattr(processor, "do_center_crop", False) else None
    if not side and not crop:
        raise ConfigError(f"{what}: its image processor gives no input size (size / crop_size)")
    resample = getattr(processor, "resample", 3)
    mean = processor.image_mean if getattr(processor, "do_normalize", True) else (0.0,)
    std = processor.image_std if getattr(processor, "do_normalize", True) else (1.0,)
    return InputSpec(size=int(crop or side), resize=int(side or crop), mean=rgb_triple(mean, f"{what}: image_mean"),
                     std=rgb_triple(std, f"{what}: image_std"),
                     interpolation=_RESAMPLE.get(int(getattr(resample, "value", resample)), "bicubic"),
                     source="preprocessor_config.json")


def _width(config) -> int:
    """The pooled embedding's width: ``hidden_size``, or the last stage's for a hierarchical model."""
    width = getattr(config, "hidden_size", None)
    if not isinstance(width, int):
        sizes = getattr(config, "hidden_sizes", None)
        width = sizes[-1] if sizes else None
    if not isinstance(width, int):
        raise ConfigError(f"{type(config).__name__} names no hidden_size: not a vision backbone medtransfer can pool")
    return width


def _load(transformers, name: str, pretrained: bool) -> tuple:
    """(image processor, model) as their users load them; the architecture alone for ``scratch``."""
    cache = str(hf_cache_dir())
    processor = transformers.AutoImageProcessor.from_pretrained(name, cache_dir=cache)
    if pretrained:
        return processor, transformers.AutoModel.from_pretrained(name, cache_dir=cache)
    return processor, transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(name, cache_dir=cache))


@contextmanager
def quiet_progress(transformers) -> Iterator[None]:
    """transformers 5 draws a progress bar per loaded model on stderr; a run's log says what was loaded."""
    logging = transformers.utils.logging
    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def hub_files(name: str, pretrained: bool = True) -> tuple[list[HubFile], str]:
    """What ``AutoImageProcessor`` / ``AutoModel.from_pretrained(NAME)`` read (no weights for ``scratch``)."""
    files = [HubFile(name, ("config.json",)), HubFile(name, ("preprocessor_config.json",))]
    return files + ([HubFile(name, WEIGHT_FILES)] if pretrained else []), ""


@register_family("hf:", published_files=hub_files)
def build_hf(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    transformers = import_library("transformers", "hf:ORG/NAME", "hf")
    arch = f"hf:{name}"
    what = f"model.arch {arch}"
    found = fetch_files(what, hub_files(name, pretrained)[0], log)
    with reading_cache(hf_cache_dir()), quiet_progress(transformers):
        try:
            processor, model = _load(transformers, name, pretrained)
        except Exception as err:  # damaged files, or a repository that is not a vision model, trip it in any way
            raise load_failed(what, name, err) from None
    model = model.float()   # transformers 5 loads a checkpoint in its stored dtype; training here is float32
    spec = processor_input(processor, what)
    log(loaded_line(arch, pretrained, found, spec))
    encoder = PooledOutput(model)
    return published_backbone(encoder, _width(model.config), spec, late_half(encoder), in_chans)
