"""timm models from the Hugging Face Hub, as published: ``model.arch: timm:hf-hub:ORG/NAME``.

E.g. DINOv2: ``timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m`` with ``model.init: pretrained``. timm
builds the network from the repository's config.json (its ``architecture`` and ``model_args``) and loads
its weights, all through ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)``. The input is what timm's
evaluation transform makes for that model: its data config (``timm.data.resolve_model_data_config``, from
the config's ``pretrained_cfg``) gives the input size, ``crop_pct`` (resize to size / crop_pct, then a
centre crop), the interpolation and the mean / std. Unlike ``timm:NAME`` (one grey channel with the first
conv summed over RGB, at the run's image size: the convention medtransfer's CNNs share), the network keeps
its three input channels and sees what its authors fed it (see models/published.py).
Layer groups: timm's own group matcher split in half, so for a ViT early = patch embedding, tokens and the
first half of the blocks; late = the other blocks and the final norm.
"""
from __future__ import annotations

import math
from typing import Callable

from ..errors import ConfigError
from .classifier import Backbone
from .published import (HubFile, InputSpec, fetch_files, hf_cache_dir, import_library, interpolation_name,
                        load_failed, loaded_line, published_backbone, reading_cache, rgb_triple)
from .registry import register_family
from .timm_family import late_groups

Log = Callable[[str], None]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")   # what timm's hub loader reads, safetensors first


def timm_input(data: dict, what: str) -> InputSpec:
    """timm's data config of a model as an :class:`InputSpec` (timm's eval transform: resize, centre crop)."""
    height, width = data["input_size"][-2:]
    if height != width:
        raise ConfigError(f"{what}: its input is {height}x{width} px; only square inputs are supported")
    crop_pct = float(data.get("crop_pct") or 1.0)
    return InputSpec(size=int(height), resize=int(math.floor(height / crop_pct)),
                     mean=rgb_triple(data["mean"], f"{what}: mean"), std=rgb_triple(data["std"], f"{what}: std"),
                     interpolation=interpolation_name(data.get("interpolation", "bicubic")),
                     source="timm's data config")


def hub_files(name: str, pretrained: bool = True) -> tuple[list[HubFile], str]:
    """What ``timm.create_model("hf-hub:NAME")`` reads: config.json, and the weights when pretrained."""
    repo, _, revision = name.partition("@")
    files = [HubFile(repo, ("config.json",), revision or None)]
    if pretrained:
        files.append(HubFile(repo, WEIGHT_FILES, revision or None))
    return files, ""


@register_family("timm:hf-hub:", published_files=hub_files)
def build_timm_hub(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    timm = import_library("timm", "timm:hf-hub:ORG/NAME", "timm")
    import timm.data   # resolve_model_data_config lives in the subpackage

    arch = f"timm:hf-hub:{name}"
    what = f"model.arch {arch}"
    repo = name.partition("@")[0]
    found = fetch_files(what, hub_files(name, pretrained)[0], log)
    cache = hf_cache_dir()
    with reading_cache(cache):
        try:
            model = timm.create_model(f"hf-hub:{name}", pretrained=pretrained, num_classes=0, cache_dir=str(cache))
        except Exception as err:  # a damaged or foreign cached file trips timm / safetensors in any way
            raise load_failed(what, repo, err) from None
    spec = timm_input(timm.data.resolve_model_data_config(model), what)
    num_features = getattr(model, "head_hidden_size", None) or model.num_features
    log(loaded_line(arch, pretrained, found, spec))
    return published_backbone(model, num_features, spec, late_groups(model), in_chans)
