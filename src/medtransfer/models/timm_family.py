"""Any timm model as ``timm:NAME`` (optional dependency: ``pip install timm``).

timm builds the backbone with ``num_classes=0`` (pooled features out) and ``in_chans``
(it sums RGB kernels for grey input when loading pretrained weights). Layer groups come
from timm's own ``group_matcher`` (stem, stage 1..n, neck), split in half.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import ConfigError, WeightsUnavailable
from .classifier import Backbone, split_names
from .init import error_detail, hub_checkpoint_dir, offline, reachable
from .registry import CachedWeights, register_family

Log = Callable[[str], None]
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_or_none():
    """timm, or None when it is not installed (an optional dependency: imported only when a timm arch is used)."""
    try:
        import timm
    except ImportError:
        return None
    return timm


def _import_timm():
    timm = _timm_or_none()
    if timm is None:
        raise ConfigError("model.arch timm:NAME needs timm: pip install timm")
    return timm


def cached_imagenet_weights(name: str) -> CachedWeights:
    """timm's pretrained file of ``name`` if it is already cached (Hugging Face or torch hub), found offline."""
    timm = _timm_or_none()
    if timm is None:
        return CachedWeights(None, f"ImageNet weights for timm:{name} need timm (pip install 'medtransfer[timm]')")
    pretrained = timm.models.get_pretrained_cfg(name)
    found = _cached_weights(pretrained) if pretrained is not None else None
    if found is None:
        return CachedWeights(None, f"ImageNet weights for timm:{name} are not cached: run `medtransfer train` once "
                                   "online with model.init=imagenet")
    return CachedWeights(found, None)


@register_family("timm:", cached_weights=cached_imagenet_weights)
def build_timm(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    timm = _import_timm()
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r} in model.arch timm:{name} (see timm.list_models())")
    kwargs = dict(num_classes=0, in_chans=in_chans)
    model = _pretrained(timm, name, kwargs, log) if pretrained else timm.create_model(name, **kwargs)
    num_features = getattr(model, "head_hidden_size", None) or model.num_features
    early, late = split_in_half(model)
    return Backbone(model, num_features, early, late)


# ---------------------------------------------------------------- ImageNet weights

def _hf_offline() -> bool:
    from huggingface_hub import constants   # huggingface_hub comes with timm (optional): imported where timm is used
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def _cached_weights(cfg) -> Path | None:
    """A local copy of the pretrained file, found without touching the network."""
    if cfg.file and Path(cfg.file).is_file():
        return Path(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache   # with timm, as above
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else _HF_WEIGHT_FILES):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        legacy = hub_checkpoint_dir() / os.path.basename(cfg.url)
        if legacy.is_file():
            return legacy
    return None


def _pretrained(timm, name: str, kwargs: dict, log: Log) -> nn.Module:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsUnavailable(f"timm has no pretrained weights for {name} (model.arch timm:{name})")
    local = _cached_weights(cfg)
    source = f"Hugging Face repo {cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    if local is not None:
        # Loading from the file skips hf_hub_download's network round-trip entirely.
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(local)), **kwargs)
        except Exception as err:  # a truncated or damaged cache file trips safetensors / torch in any way
            raise WeightsUnavailable(
                f"cached ImageNet weights for timm:{name} in {local} cannot be loaded ({error_detail(err)}): "
                f"delete the file and run once online to cache {source} again") from None
        log(f"model timm:{name}: init imagenet from {local}")
        return model
    if offline() or _hf_offline():
        raise WeightsUnavailable(
            f"ImageNet weights for timm:{name} are not cached and downloads are off "
            f"(MEDTRANSFER_OFFLINE / HF_HUB_OFFLINE): run once online to cache {source}")
    problem = reachable("https://huggingface.co" if cfg.hf_hub_id else cfg.url)
    if problem:
        raise WeightsUnavailable(f"ImageNet weights for timm:{name} unavailable ({problem}): "
                                 f"run once online to cache {source}")
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # timm / hub raise many types; the user needs one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise WeightsUnavailable(f"ImageNet weights for timm:{name} could not be loaded from {source} "
                                 f"({err.__class__.__name__}: {first})") from None
    log(f"model timm:{name}: init imagenet from {source}")
    return model


# ---------------------------------------------------------------- layer groups

def _ordered_param_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters in network order, grouped stem / stage 1..n / neck (timm's coarse matcher)."""
    try:
        from timm.models import group_parameters
        grouped = group_parameters(model, model.group_matcher(coarse=True), return_values=True)
        return [grouped[k] for k in sorted(grouped)]
    except (AttributeError, NotImplementedError, TypeError):
        # no matcher: parameters held by the model itself, then one group per child
        groups = [list(model.parameters(recurse=False))]
        groups += [list(child.parameters()) for child in model.children()]
        return [g for g in groups if g]


def late_groups(model: nn.Module) -> set[int]:
    """Ids of the parameters in the second half of timm's groups (for a ViT: the second half of the blocks and
    the final norm; the first half and the stem, i.e. patch embedding and tokens, are early)."""
    groups = _ordered_param_groups(model)
    cut = (len(groups) + 1) // 2
    return {id(p) for group in groups[cut:] for p in group}


def split_in_half(model: nn.Module) -> tuple[list[str], list[str]]:
    """Early / late names for :class:`Backbone`: the first half of the groups vs the rest."""
    return split_names(model, late_groups(model))
