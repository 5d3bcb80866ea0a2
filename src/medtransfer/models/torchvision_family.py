"""torchvision ResNets and DenseNets, the backbones of the transfer-learning literature.

The torchvision model itself is the backbone, with its classifier replaced by Identity,
so state_dict names stay torchvision's (``backbone.layer1.0.conv1.weight``) and plain
torchvision files load by name. Grey input: the first conv takes one channel (the RGB
kernel summed for ImageNet weights) instead of tripling every image.

ImageNet weights are the IMAGENET1K_V1 files for every arch: the classic recipe the
transfer-learning studies (Romero et al. 2020, CheXNet) used, and one recipe across
archs, so comparing resnet50 with densenet121 compares architectures, not training
recipes (resnet50's V2 weights come from a much heavier augmentation recipe).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torchvision
from torch import nn

from ..errors import ConfigError, WeightsUnavailable
from .classifier import Backbone
from .init import adapt_first_conv, fetch_cached_file, hub_checkpoint_dir, read_state_dict, remap_legacy_densenet_keys
from .registry import CachedWeights, register_family

Log = Callable[[str], None]

_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_DENSENETS = ("densenet121", "densenet169")
_WEIGHTS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights", "densenet121": "DenseNet121_Weights", "densenet169": "DenseNet169_Weights",
}


def imagenet_url(name: str) -> str:
    """Download URL of the IMAGENET1K_V1 weights, e.g. .../resnet18-f37072fd.pth."""
    return getattr(torchvision.models, _WEIGHTS[name]).IMAGENET1K_V1.url


def cached_imagenet_weights(name: str) -> CachedWeights:
    """The IMAGENET1K_V1 file of ``name`` if it is already in torch's hub cache, else where to place it."""
    url = imagenet_url(name)
    path = hub_checkpoint_dir() / os.path.basename(url)
    if path.is_file():
        return CachedWeights(path, None)
    return CachedWeights(None, f"ImageNet weights not on disk: put {path.name} in {path.parent} (from {url})")


def _grey_conv(old: nn.Conv2d, in_chans: int, init_fn: Callable[[torch.Tensor], None]) -> nn.Conv2d:
    conv = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
    init_fn(conv.weight)  # the family's own scratch init, so scratch grey == scratch RGB
    return conv


def _load_imagenet(model: nn.Module, name: str, first_conv: str, head: str, in_chans: int, log: Log) -> None:
    path = fetch_cached_file(imagenet_url(name), name, log)
    try:
        state = remap_legacy_densenet_keys(read_state_dict(path))
        state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        key = first_conv + ".weight"
        if key in state:
            state[key] = adapt_first_conv(state[key], in_chans)
        # strict, yet files older than BatchNorm's num_batches_tracked still load (torch fills it in)
        model.load_state_dict(state, strict=True)
    except (ConfigError, RuntimeError) as err:   # a damaged or foreign file: the cure is a fresh copy
        lines = str(err).strip().splitlines()
        reason = getattr(err, "reason", None) or \
            (lines[1] if len(lines) > 1 else lines[0]).strip().removeprefix(f"{path}: ")[:200]
        raise WeightsUnavailable(f"{path} is not torchvision's {name} ImageNet file ({reason}); "
                                 f"delete it and put the file from {imagenet_url(name)} there") from None
    summed = " (first conv summed over RGB)" if in_chans == 1 else ""
    log(f"model {name}: init imagenet from {path}{summed}")


@register_family(_RESNETS, cached_weights=cached_imagenet_weights)
def build_resnet(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    """ResNet; groups: conv1, bn1, layer1, layer2 | layer3, layer4."""
    model = getattr(torchvision.models, name)(weights=None)
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    if in_chans != 3:
        model.conv1 = _grey_conv(model.conv1, in_chans,
                                 lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))
    if pretrained:
        _load_imagenet(model, name, "conv1", "fc", in_chans, log)
    return Backbone(model, num_features,
                    early=["conv1", "bn1", "layer1", "layer2"], late=["layer3", "layer4"])


@register_family(_DENSENETS, cached_weights=cached_imagenet_weights)
def build_densenet(name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone:
    """DenseNet; groups: conv0 .. transition2 | denseblock3 .. norm5.

    torchvision's DenseNet.forward already applies the final ReLU and global average
    pool before ``classifier``, so with an Identity classifier it returns (B, F).
    """
    model = getattr(torchvision.models, name)(weights=None)
    num_features = model.classifier.in_features
    model.classifier = nn.Identity()
    if in_chans != 3:
        model.features.conv0 = _grey_conv(model.features.conv0, in_chans, nn.init.kaiming_normal_)
    if pretrained:
        _load_imagenet(model, name, "features.conv0", "classifier", in_chans, log)
    early = ["conv0", "norm0", "denseblock1", "transition1", "denseblock2", "transition2"]
    late = ["denseblock3", "transition3", "denseblock4", "norm5"]
    return Backbone(model, num_features,
                    early=[f"features.{n}" for n in early], late=[f"features.{n}" for n in late])
