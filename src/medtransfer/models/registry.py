"""Registry + factory (timm style): families register builders, ``create_model`` picks one.

A family is a file that knows how to build some backbones and load their ImageNet
weights; adding an architecture means registering a name, not editing the training code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol

from ..errors import ConfigError
from .classifier import Backbone, Classifier
from ..kinds import SCRATCH, Init, InitKind, published_init_problem
from .init import load_checkpoint_into
from .published import HubFile, absent_files_line
from .xrv_init import load_xrv_into
from ..xrv_weights import arch_problem

Log = Callable[[str], None]


class FamilyBuilder(Protocol):
    def __call__(self, name: str, *, in_chans: int, pretrained: bool, log: Log) -> Backbone: ...


class CachedWeights(NamedTuple):
    """An arch's ImageNet weights file if it is already on disk (``path``), else ``missing``: why not, and what
    to place where. Exactly one of the two is None."""
    path: Path | None
    missing: str | None


class WeightsLookup(Protocol):
    def __call__(self, name: str) -> CachedWeights: ...


class PublishedFiles(Protocol):
    """The files a published backbone's ``pretrained`` weights need and what else cannot be named yet."""
    def __call__(self, name: str) -> tuple[list[HubFile], str]: ...


_NAMED: dict[str, FamilyBuilder] = {}      # "resnet18" -> builder
_PREFIXED: dict[str, FamilyBuilder] = {}   # "timm:" -> builder (gets the name after the prefix)
_CACHED: dict[FamilyBuilder, WeightsLookup] = {}   # builder -> its family's "are the ImageNet weights on disk"
_PUBLISHED: dict[FamilyBuilder, PublishedFiles] = {}   # builder -> the files of a published backbone's weights


def register_family(prefix_or_names: str | list[str] | tuple[str, ...], cached_weights: WeightsLookup | None = None,
                    published_files: PublishedFiles | None = None):
    """Decorator: ``@register_family(["resnet18", ...])`` or ``@register_family("timm:")``.

    A string ending in ``:`` is a prefix: ``timm:NAME`` calls the builder with ``NAME``.
    ``cached_weights(name)`` (optional) says whether the family's ImageNet file of ``name`` is on disk,
    without touching the network (:func:`cached_imagenet_weights`); ``published_files(name)`` (a published
    backbone's family) names the files its ``pretrained`` weights need (:func:`published_weights_missing`).
    """
    def decorator(builder: FamilyBuilder) -> FamilyBuilder:
        if cached_weights is not None:
            _CACHED[builder] = cached_weights
        if published_files is not None:
            _PUBLISHED[builder] = published_files
        if isinstance(prefix_or_names, str) and prefix_or_names.endswith(":"):
            _PREFIXED[prefix_or_names] = builder
        else:
            names = [prefix_or_names] if isinstance(prefix_or_names, str) else list(prefix_or_names)
            for name in names:
                if name in _NAMED:
                    raise ValueError(f"model arch {name!r} is registered twice")
                _NAMED[name] = builder
        return builder
    return decorator


def list_archs() -> list[str]:
    """The named architectures; any timm model is also available as ``timm:NAME``."""
    return sorted(_NAMED)


def cached_imagenet_weights(arch: str) -> CachedWeights:
    """Whether ``arch``'s ImageNet weights are already on disk, asked of its family; nothing is downloaded.

    An arch whose family registered no ``cached_weights`` (or no family at all) has no known ImageNet file.
    """
    builder, name = _NAMED.get(arch), arch
    if builder is None:
        prefix = _prefix_of(arch)
        builder, name = (_PREFIXED[prefix], arch[len(prefix):]) if prefix else (None, arch)
    lookup = _CACHED.get(builder)
    if lookup is None:
        return CachedWeights(None, f"no ImageNet weights are known for model.arch {arch}")
    return lookup(name)


def published_weights_missing(arch: str) -> str | None:
    """The one line naming what a ``pretrained`` run of ``arch`` would miss in the Hugging Face cache (None: all
    there, or ``arch`` is no published backbone); looked up without the network, nothing downloaded."""
    prefix = _prefix_of(arch)
    files = _PUBLISHED.get(_PREFIXED[prefix]) if prefix else None
    if files is None:
        return None
    needed, note = files(arch[len(prefix):])
    return absent_files_line(f"model.arch {arch}", needed, note)


def _prefix_of(arch: str) -> str | None:
    """The longest registered prefix ``arch`` starts with (``timm:hf-hub:`` before ``timm:``), or None."""
    fits = [p for p in _PREFIXED if arch.startswith(p) and len(arch) > len(p)]
    return max(fits, key=len) if fits else None


def _lookup(arch: str) -> tuple[FamilyBuilder, str]:
    if arch in _NAMED:
        return _NAMED[arch], arch
    prefix = _prefix_of(arch)
    if prefix is not None:
        return _PREFIXED[prefix], arch[len(prefix):]
    forms = ", ".join(list_archs() + [f"{p}NAME" for p in sorted(_PREFIXED)])
    raise ConfigError(f"unknown model.arch {arch!r}; valid: {forms}")


def create_model(arch: str, num_outputs: int, init: Init | str = SCRATCH, dropout: float = 0.0,
                 in_chans: int = 1, log: Log = print) -> Classifier:
    """Build ``arch`` with a fresh ``num_outputs`` head and initialise its backbone.

    ``init``: ``scratch`` (the family's default random init), ``imagenet`` (the family's
    ImageNet weights, first conv summed over RGB for grey input), ``pretrained`` (a published
    backbone's own weights: ``hf:``, ``openclip:hf-hub:``, ``timm:hf-hub:`` archs), ``checkpoint:PATH``
    (a medtransfer run's weights or a plain state_dict; matching tensors only) or
    ``xrv:NAME`` (torchxrayvision's chest X-ray weights; densenet121 only).
    """
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ConfigError(f"num_outputs must be a positive integer, got {num_outputs!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans must be a positive integer, got {in_chans!r}")
    try:
        init = Init.parse(init)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    builder, name = _lookup(arch)
    problem = published_init_problem(arch, init)
    if problem:
        raise ConfigError(problem)
    match init.kind:
        case InitKind.SCRATCH | InitKind.IMAGENET | InitKind.PRETRAINED:
            backbone = builder(name, in_chans=in_chans, pretrained=init.kind is not InitKind.SCRATCH, log=log)
            model = Classifier(arch, backbone, num_outputs, dropout, in_chans)
            if init.kind is InitKind.SCRATCH:
                log(f"model {arch}: {_millions(model)} parameters, {in_chans}-channel input, init scratch")
            return model
        case InitKind.CHECKPOINT:
            backbone = builder(name, in_chans=in_chans, pretrained=False, log=log)
            model = Classifier(arch, backbone, num_outputs, dropout, in_chans)
            load_checkpoint_into(model, init.path, log)
            return model
        case InitKind.XRV:
            problem = arch_problem(init.xrv_name, arch)
            if problem:   # before building: a wrong arch must not cost a model build or a download
                raise ConfigError(problem)
            backbone = builder(name, in_chans=in_chans, pretrained=False, log=log)
            model = Classifier(arch, backbone, num_outputs, dropout, in_chans)
            load_xrv_into(model, init.xrv_name, log)
            return model
        case InitKind.SOURCE:
            raise ConfigError(f"model.init '{init}': a source run must be resolved to checkpoint:PATH before building the model")
    raise AssertionError(init.kind)


def _millions(model: Classifier) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"
