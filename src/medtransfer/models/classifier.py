"""One model shape for every architecture: backbone -> pooled features -> dropout + linear head.

Keeping the head separate and identical across families is what lets a run swap the
backbone (resnet, densenet, any timm model) without touching training code, and lets a
checkpoint from one task initialise another task with a different number of outputs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn


@dataclass
class Backbone:
    """What a family builder returns: the feature extractor and how to split it in two.

    ``early`` / ``late`` name submodules (``"layer1"``) or parameters owned directly by a
    container (``"cls_token"``), relative to ``module``; together they must cover every
    parameter exactly once, which :class:`Classifier` checks.
    """

    module: nn.Module          # forward(x) -> (B, num_features)
    num_features: int
    early: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    input_size: int | None = None   # the side every input is resized to inside ``module`` (None: the run's image_size)


def split_names(module: nn.Module, late: set[int]) -> tuple[list[str], list[str]]:
    """``early`` / ``late`` names for :class:`Backbone` given which parameters (by ``id``) are late.

    The fewest names that cover each parameter once: a submodule whose parameters all fall on one side is named
    whole, otherwise its own parameters are named one by one and its children visited.
    """
    names: dict[bool, list[str]] = defaultdict(list)

    def visit(sub: nn.Module, path: str) -> None:
        sides = {id(p) in late for p in sub.parameters()}
        if len(sides) == 1:
            names[sides.pop()].append(path)
            return
        for pname, param in sub.named_parameters(recurse=False):
            names[id(param) in late].append(f"{path}.{pname}" if path else pname)
        for cname, child in sub.named_children():
            visit(child, f"{path}.{cname}" if path else cname)

    visit(module, "")
    return names[False], names[True]


class _LooseParameters(nn.Module):
    """Parameters that belong to no child module (e.g. a ViT's ``cls_token``), as a module.

    Layer groups are lists of modules, so the optimiser and the freezing code can call
    ``.parameters()`` / ``.requires_grad_()`` on every entry; this stand-in makes those
    calls reach parameters held directly by a container. It is built fresh on each
    ``layer_groups()`` call, so it never holds stale references after ``.to(device)``.
    """

    def __init__(self, named: dict[str, nn.Parameter]):
        super().__init__()
        object.__setattr__(self, "_loose", named)  # not registered: the owner keeps them

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self._loose.items():
            yield prefix + name, param

    def extra_repr(self) -> str:
        return ", ".join(self._loose)


class Classifier(nn.Module):
    """Backbone + ``head = Sequential(Dropout(p), Linear(F, num_outputs))``.

    ``layer_groups()`` returns [stem + early blocks], [late blocks], [head]: the three
    groups that frozen / gradual-unfreezing strategies and discriminative learning rates
    act on (Romero et al. 2020; fastai's ``slice(lr/100, lr)``).
    """

    def __init__(self, arch: str, backbone: Backbone, num_outputs: int,
                 dropout: float = 0.0, in_chans: int = 1):
        super().__init__()
        self.arch = arch
        self.in_chans = in_chans
        self.num_features = backbone.num_features
        self.num_outputs = num_outputs
        self.input_size = backbone.input_size
        self.backbone = backbone.module
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_outputs))
        self._group_names = (list(backbone.early), list(backbone.late))
        self._check_groups_partition_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def layer_groups(self) -> list[list[nn.Module]]:
        """[stem + early blocks], [late blocks], [head] — each parameter in exactly one."""
        return [self._resolve(names) for names in self._group_names] + [[self.head]]

    def _resolve(self, names: list[str]) -> list[nn.Module]:
        modules: list[nn.Module] = []
        loose: dict[str, nn.Parameter] = {}
        for name in names:
            try:
                modules.append(self.backbone.get_submodule(name))
            except AttributeError:
                loose[name] = self.backbone.get_parameter(name)
        if loose:
            modules.insert(0, _LooseParameters(loose))
        return modules

    def _check_groups_partition_parameters(self) -> None:
        # A family whose split misses or repeats a parameter would silently train it at
        # the wrong LR (or never freeze it); catch that when the model is built.
        seen: dict[int, int] = {}
        for g, group in enumerate(self.layer_groups()):
            for module in group:
                for param in module.parameters():
                    if id(param) in seen:
                        raise RuntimeError(f"{self.arch}: a parameter is in layer groups {seen[id(param)]} and {g}")
                    seen[id(param)] = g
        names = {id(p): n for n, p in self.named_parameters()}
        missing = [n for i, n in names.items() if i not in seen]
        if missing:
            raise RuntimeError(f"{self.arch}: parameters in no layer group: {', '.join(missing[:5])}")

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, in_chans={self.in_chans}, num_outputs={self.num_outputs}"
