"""open_clip image towers, as published: ``model.arch: openclip:hf-hub:ORG/NAME`` (optional extra ``openclip``).

E.g. BiomedCLIP: ``openclip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` with
``model.init: pretrained``. The model is ``open_clip.create_model("hf-hub:ORG/NAME")``, the call
``create_model_from_pretrained`` makes: the repository's open_clip_config.json and weights, and, where
the config names a Hugging Face text model (BiomedCLIP's PubMedBERT), that model's config.json, because
open_clip builds the whole CLIP model before loading it. Only the image tower (``model.visual``) is kept:
its output is the image embedding ``model.encode_image`` gives. The input is open_clip's preprocess config
of the model (``open_clip.get_model_preprocess_cfg``: size, interpolation, mean / std; a square image is
resized to the size, which its centre crop then keeps whole), grey replicated to RGB as its ``_convert_to_rgb``
does (see models/published.py).
Layer groups: a timm tower (BiomedCLIP's ViT-B/16) by timm's own matcher, split in half, its projection late;
open_clip's own ViT: patch embedding, tokens and the first half of the blocks | the rest and ``proj``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import ConfigError
from .classifier import Backbone
from .published import (HubFile, InputSpec, cached, fetch_files, hf_cache_dir, import_library, interpolation_name,
                        late_half, load_failed, loaded_line, published_backbone, read_json, reading_cache,
                        rgb_triple)
from .registry import register_family
from .timm_family import late_groups

Log = Callable[[str], None]
HUB = "hf-hub:"
CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")   # open_clip's order of preference
TEXT_NOTE = "and the config.json of the Hugging Face text model its open_clip_config.json names, if it names one"


def _text_repo(config_path) -> str | None:
    """The Hugging Face text model an open_clip config builds its text tower from (None: open_clip's own)."""
    tree = read_json(config_path, CONFIG)
    return ((tree.get("model_cfg") or tree).get("text_cfg") or {}).get("hf_model_name")


def hub_files(name: str, pretrained: bool = True) -> tuple[list[HubFile], str]:
    """open_clip_config.json (and the weights when pretrained), plus the config.json of the text model the
    config names when the config is here to say which; otherwise the note says it will be needed."""
    if not name.startswith(HUB):
        return [], ""   # not a repository: the build says how to name one
    repo = name[len(HUB):]
    config = HubFile(repo, (CONFIG,))
    files = [config] + ([HubFile(repo, WEIGHT_FILES)] if pretrained else [])
    path = cached(config, hf_cache_dir())
    if path is None:
        return files, TEXT_NOTE
    text = _text_repo(path)
    return files + ([HubFile(text, ("config.json",))] if text else []), ""


def _files(name: str, pretrained: bool, what: str, log: Log) -> dict[HubFile, Path]:
    """Every file :func:`hub_files` names, in the cache (downloaded when allowed), or one line saying which."""
    files, note = hub_files(name, pretrained)
    found = fetch_files(what, files, log, note=note)
    if note:   # the config has just been downloaded: now it names the text model
        found.update(fetch_files(what, hub_files(name, pretrained)[0], log))
    return found


def preprocess_input(cfg: dict, what: str) -> InputSpec:
    """open_clip's preprocess config as an :class:`InputSpec` (its eval transform on a square image)."""
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise ConfigError(f"{what}: its input is {height}x{width} px; only square inputs are supported")
    return InputSpec(size=int(height), resize=int(height), mean=rgb_triple(cfg["mean"], f"{what}: mean"),
                     std=rgb_triple(cfg["std"], f"{what}: std"),
                     interpolation=interpolation_name(cfg.get("interpolation", "bicubic")),
                     source="open_clip's preprocess config")


def tower_late(visual: nn.Module) -> set[int]:
    """Late-group ids of an image tower: a timm trunk's second half and its head, or open_clip's own ViT's."""
    trunk = getattr(visual, "trunk", None)
    if isinstance(trunk, nn.Module):
        in_trunk = {id(p) for p in trunk.parameters()}
        return late_groups(trunk) | {id(p) for p in visual.parameters() if id(p) not in in_trunk}
    return late_half(visual, late_names=("proj",))


@register_family("openclip:", published_files=hub_files)
def build_openclip(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    open_clip = import_library("open_clip", "openclip:hf-hub:ORG/NAME", "openclip")
    arch = f"openclip:{name}"
    what = f"model.arch {arch}"
    if not name.startswith(HUB) or len(name) == len(HUB):
        raise ConfigError(f"{what}: give the model's Hugging Face repository, as open_clip names it: "
                          f"openclip:hf-hub:ORG/NAME (e.g. openclip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-"
                          "vit_base_patch16_224)")
    repo = name[len(HUB):]
    found = _files(name, pretrained, what, log)
    with reading_cache(hf_cache_dir()):
        try:
            model = open_clip.create_model(name, load_weights=pretrained, require_pretrained=pretrained,
                                           pretrained_text=False, cache_dir=str(hf_cache_dir()))
        except Exception as err:  # damaged files trip open_clip / torch in any way
            raise load_failed(what, repo, err) from None
    spec = preprocess_input(open_clip.get_model_preprocess_cfg(model), what)
    visual = model.visual
    width = int((read_json(found[HubFile(repo, (CONFIG,))], CONFIG).get("model_cfg") or {}).get("embed_dim", 0))
    if width <= 0:
        raise ConfigError(f"{what}: its {CONFIG} gives no model_cfg.embed_dim")
    log(loaded_line(arch, pretrained, found, spec))
    return published_backbone(visual, width, spec, tower_late(visual), in_chans)
