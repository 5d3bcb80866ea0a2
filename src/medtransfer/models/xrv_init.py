"""torchxrayvision's chest X-ray DenseNet-121 weights as a backbone init (``model.init: xrv:NAME``).

torchxrayvision's DenseNet is torchvision's DenseNet-121 layer for layer (``features.*``
names, one input channel) plus an 18-finding classifier, so its ``features`` load by name
into our ``densenet121`` backbone and the classifier is dropped, like an ImageNet head.

Input scaling. torchxrayvision trained on grey levels scaled to [-1024, 1024]
(``v = x/255 * 2048 - 1024``); our models see ``z = (x/255 - GREY_MEAN) / GREY_STD``. Rather
than give these runs their own input pipeline (predict, Grad-CAM and the image cache would
all have to know which init a run used), the difference is folded into the weights once,
at load: ``v = a z + b`` with ``a = 2048 GREY_STD`` and ``b = 2048 GREY_MEAN - 1024``; conv0
has no bias, so ``conv0(v) = a conv0(z) + b sum(kernel)``. Scaling conv0's kernel by ``a`` and
subtracting ``b sum(kernel)`` from norm0's running mean hands norm0 exactly what it saw in
pretraining (except within conv0's 3-pixel padding, where zero means another grey), so
frozen and evaluation-mode BatchNorm statistics stay valid. The weights were trained at
224 px; another ``image_size`` still loads (global pooling; the run's log notes it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError, WeightsUnavailable
from ..xrv_weights import arch_problem, xrv_weights
from .classifier import Classifier
from .init import (UnreadableWeights, adapt_first_conv, fetch_cached_file, read_state_dict_or_module,
                   remap_legacy_densenet_keys, xrv_cache_dir)
from .inputs import GREY_MEAN, GREY_STD

Log = Callable[[str], None]

XRV_LOW, XRV_HIGH = -1024.0, 1024.0     # torchxrayvision's input range for grey levels 0 .. 255
FIRST_CONV, FIRST_NORM = "features.conv0.weight", "features.norm0.running_mean"


def fold_input_scaling(state: dict[str, torch.Tensor], mean: float = GREY_MEAN,
                       std: float = GREY_STD) -> dict[str, torch.Tensor]:
    """Rewrite conv0 / norm0 of an xrv state so inputs normalised as ``(x/255 - mean)/std`` act as xrv's range."""
    span = XRV_HIGH - XRV_LOW
    scale, shift = span * std, span * mean + XRV_LOW
    kernel = state[FIRST_CONV].to(torch.float64)
    out = dict(state)
    out[FIRST_CONV] = (kernel * scale).to(state[FIRST_CONV].dtype)
    out[FIRST_NORM] = (state[FIRST_NORM].to(torch.float64) - shift * kernel.sum(dim=(1, 2, 3))).to(
        state[FIRST_NORM].dtype)
    return out


def xrv_backbone_state(path, in_chans: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our backbone's tensors, the names left out) from an xrv file: ``features.*`` only, folded for our inputs."""
    state = remap_legacy_densenet_keys(read_state_dict_or_module(path))
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    dropped = sorted(k for k in state if k not in features)
    if FIRST_CONV not in features or FIRST_NORM not in features:
        return features, dropped
    features[FIRST_CONV] = adapt_first_conv(features[FIRST_CONV], in_chans)
    return fold_input_scaling(features), dropped


def xrv_weights_file(name: str, log: Log = print) -> Path:
    """The weights file of ``name`` on disk (downloaded when allowed); WeightsUnavailable naming file, folder, URL.

    A run calls this before reading its data too, so a missing file costs seconds, not a data pass.
    """
    weights = xrv_weights(name)
    return fetch_cached_file(weights.url, f"xrv:{name}", log, folder=xrv_cache_dir(),
                             label=f"torchxrayvision weights xrv:{name}")


def load_xrv_into(model: Classifier, name: str, log: Log = print) -> int:
    """Load torchxrayvision's ``name`` weights into ``model``'s backbone; return how many tensors loaded.

    Raises ConfigError for a name or arch that does not fit, WeightsUnavailable when the
    file is absent (naming the file, the folder and the URL), damaged, or not such a file.
    """
    problem = arch_problem(name, model.arch)
    if problem:
        raise ConfigError(problem)
    weights = xrv_weights(name)
    path = xrv_weights_file(name, log)
    try:
        state, dropped = xrv_backbone_state(path, model.in_chans)
    except UnreadableWeights as err:   # truncated or damaged in the cache: the cure is a fresh copy
        raise WeightsUnavailable(f"{path} is not a readable torchxrayvision weights file ({err.reason}); "
                                 f"delete it and put the file from {weights.url} there") from None
    target = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    fits = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    absent = [k for k in target if k not in fits and not k.endswith("num_batches_tracked")]
    if absent:
        raise WeightsUnavailable(
            f"{path} is not torchxrayvision's {weights.arch} file ({len(absent)} backbone tensors missing or of "
            f"another shape, e.g. {absent[0]}); delete it and put the file from {weights.url} there")
    model.backbone.load_state_dict(fits, strict=False)
    log(f"model {model.arch}: init xrv:{name} from {path}: loaded {len(fits)} of {len(target)} backbone tensors; "
        f"dropped {', '.join(dropped) or 'nothing'}; torchxrayvision's [-1024, 1024] input scaling folded into "
        "features.conv0 / norm0")
    return len(fits)
