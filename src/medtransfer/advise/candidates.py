"""Which initialisations ``advise`` can compare, and why any of them cannot be used.

A user asks "which pretrained source should I start from?", so every plausible start is listed,
including those that are missing: scratch (always there), ImageNet (only when its weights file
is already on disk; advise never downloads, and says which file to place where), each
``--sources NAME=RUN_DIR``, each source a finished study pretrained (``STUDY_DIR/sources/NAME``) and each
published foundation backbone named by ``--backbone ARCH`` (its own weights, ``model.init: pretrained``: "or
should I just put a linear probe on RAD-DINO?"; usable only when its files are in the Hugging Face cache).
A source run folder carries its own architecture in its config.yaml; when it differs from the
target config's ``model.arch`` the source is still ranked and searched with its own backbone
(features are features), and the candidate says so.

This module reads run folders (config.yaml, metrics.json, model.safetensors); it trains nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, config_from_dict, load_yaml
from ..errors import MedtransferError
from ..kinds import IMAGENET, PRETRAINED, SCRATCH, Init, is_published_arch, published_repo_problem
from ..run_folder import RunFolder

SCRATCH_NAME = "scratch"
IMAGENET_NAME = "imagenet"
REFERENCE_NAMES = (SCRATCH_NAME, IMAGENET_NAME)   # always searched (when usable): the gains are measured against them


@dataclass(frozen=True)
class Candidate:
    """One initialisation to rank: where its weights come from and whether they can be used here.

    ``reason`` is None for a usable candidate, else one line saying why not (and what to do);
    ``note`` is what a reader of the advice must know about a usable one (e.g. another arch).
    """
    name: str
    init: Init
    arch: str
    origin: str                      # "built-in", "--sources" or "--study DIR"
    reason: str | None = None
    note: str | None = None
    run_dir: Path | None = None      # a source's run folder: ``init`` is ``checkpoint:RUN_DIR``, as a user writes it

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def is_reference(self) -> bool:
        return self.name in REFERENCE_NAMES

    def to_json(self) -> dict:
        return {"name": self.name, "init": str(self.init), "arch": self.arch, "origin": self.origin,
                "available": self.available, "reason": self.reason, "note": self.note}


def parse_sources(values: list[str] | None) -> dict[str, Path]:
    """``--sources chest=RUN_DIR,knee=RUN_DIR`` (repeatable) -> {name: run folder}; one-line error otherwise."""
    out: dict[str, Path] = {}
    for value in values or []:
        for item in (part.strip() for part in str(value).split(",")):
            if not item:
                continue
            name, sep, path = item.partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not name or not path:
                raise MedtransferError(f"--sources {item!r}: expected NAME=RUN_DIR (e.g. chest=runs/chest)")
            if name in REFERENCE_NAMES:
                raise MedtransferError(f"--sources {item!r}: '{name}' is a built-in candidate; name the source otherwise")
            if name in out:
                raise MedtransferError(f"--sources: the name '{name}' is given twice")
            out[name] = Path(path).expanduser()
    return out


def parse_backbones(values: list[str] | None) -> list[str]:
    """``--backbone ARCH[,ARCH]`` (repeatable) -> published backbone archs, in order; one-line error otherwise."""
    out: list[str] = []
    for value in values or []:
        for arch in (part.strip() for part in str(value).split(",")):
            if not arch:
                continue
            if not is_published_arch(arch):
                raise MedtransferError(f"--backbone {arch!r}: not a published backbone; expected "
                                       "timm:hf-hub:ORG/NAME, hf:ORG/NAME or openclip:hf-hub:ORG/NAME "
                                       "(e.g. hf:microsoft/rad-dino)")
            problem = published_repo_problem(arch)
            if problem:
                raise MedtransferError(f"--backbone: {problem}")
            if arch in out:
                raise MedtransferError(f"--backbone: {arch} is given twice")
            out.append(arch)
    return out


def backbone_candidate(arch: str) -> Candidate:
    """A published backbone with its own weights; unusable (naming the files and the cache folder) when they are
    not in the Hugging Face cache and the hub is offline."""
    from ..models.registry import published_weights_missing   # lazy (torch): see builtin_candidates
    return Candidate(arch, PRETRAINED, arch, "--backbone", reason=published_weights_missing(arch),
                     note="a published foundation backbone with its own weights (model.init: pretrained)")


def builtin_candidates(cfg: RunConfig) -> list[Candidate]:
    """Scratch, and ImageNet (usable only when its file is on disk) for the config's arch."""
    from ..models.registry import cached_imagenet_weights   # lazy (torch): the CLI imports parse_sources from here
                                                            # before it checks the arguments (see command.py)
    arch = cfg.model.arch
    missing = cached_imagenet_weights(arch).missing
    return [Candidate(SCRATCH_NAME, SCRATCH, arch, "built-in"),
            Candidate(IMAGENET_NAME, IMAGENET, arch, "built-in", reason=missing)]


def source_candidate(name: str, run_dir: Path, cfg: RunConfig, origin: str) -> Candidate:
    """A pretrained run folder as a candidate: its weights, its arch (noted when not the config's)."""
    run_dir = Path(run_dir).expanduser().resolve()
    folder = RunFolder(run_dir)
    if not run_dir.is_dir():
        raise MedtransferError(f"{origin} {name}={run_dir}: no such folder")
    if not folder.config_path.is_file():
        raise MedtransferError(f"{origin} {name}={run_dir}: no config.yaml (a source is a folder written by "
                               "`medtransfer train` or `medtransfer pretrain`)")
    source_cfg = config_from_dict(load_yaml(folder.config_path), origin=str(folder.config_path))
    arch = source_cfg.model.arch
    init = Init.checkpoint(run_dir)   # a run folder; models.init_resolve.resolve_init maps it to its weights file
    if not folder.is_finished:
        why = folder.failure_reason() or "it has no metrics.json (not finished)"
        return Candidate(name, init, arch, origin, reason=f"the source run did not finish: {why}", run_dir=run_dir)
    if not folder.has_weights:
        return Candidate(name, init, arch, origin, reason=f"{folder.weights_path.name} is missing (weights deleted)",
                         run_dir=run_dir)
    notes = []
    if arch != cfg.model.arch:
        notes.append(f"pretrained as a {arch}, not the config's {cfg.model.arch}: ranked with its own backbone, and "
                     f"its recipes train a {arch} (--set model.arch={arch})")
    if source_cfg.image_size != cfg.image_size:
        notes.append(f"pretrained on {source_cfg.image_size} px images; used here at {cfg.image_size} px")
    return Candidate(name, init, arch, origin, note="; ".join(notes) or None, run_dir=run_dir)


def study_sources(study_dir: Path) -> dict[str, Path]:
    """The pretrained sources of a study folder: ``STUDY_DIR/sources/NAME`` (``NAME-ARCH`` when per arch)."""
    study_dir = Path(study_dir).expanduser()
    root = study_dir / "sources"
    if not study_dir.is_dir():
        raise MedtransferError(f"--study {study_dir}: no such folder")
    if not root.is_dir():
        raise MedtransferError(f"--study {study_dir}: no sources/ folder (the study pretrained no source)")
    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and RunFolder(p).config_path.is_file()}
    if not found:
        raise MedtransferError(f"--study {study_dir}: sources/ holds no source run folder")
    return found


def list_candidates(cfg: RunConfig, sources: dict[str, Path] | None = None, study_dir: Path | None = None,
                    backbones: list[str] | None = None) -> list[Candidate]:
    """Every candidate, usable or not, in a stable order: built-ins, --sources, the study's sources, then the
    --backbone ones."""
    out = builtin_candidates(cfg)
    for name, run_dir in (sources or {}).items():
        out.append(source_candidate(name, run_dir, cfg, "--sources"))
    if study_dir is not None:
        given = {c.run_dir for c in out if c.run_dir is not None}
        taken = {c.name for c in out}
        for name, run_dir in study_sources(study_dir).items():
            if run_dir.resolve() in given:
                continue   # named by --sources too: one candidate
            shown = name if name not in taken else f"study-{name}"
            out.append(source_candidate(shown, run_dir, cfg, f"--study {study_dir}"))
            taken.add(shown)
    return out + [backbone_candidate(arch) for arch in backbones or []]
