"""The study spec: a YAML file naming a base run config, pretraining sources and grid axes.

Everything a study could get wrong about its *shape* is checked here, before a single
run starts: an unknown top-level key, a grid axis that is not a config key, an empty
axis, an exclude rule on a key that is not an axis, an init ``source:NAME`` naming a
source that is not defined. (That every expanded config is valid is checked by
``grid.expand``.) Each problem is a ConfigError whose one line names the key at fault.

Sources are standalone train configs, plus an optional ``site: same | other`` (is the
source from the target's hospital / body site? the report groups transfer gains by it)
and ``allow_overlap: true``, which lets a source share images or patients with its target
(refused by default, before any run: see ``study.disjoint``; the report marks it).
Two keys may be left out and are then taken from ``base``: ``image_size`` and
``model.arch``. When ``model.arch`` is a grid axis, a source that does not fix its own
arch is pretrained once per arch in that axis, so a DenseNet never starts from ResNet weights.

Grid axes are dotted config keys (``train.seed``) or whole sections (``task``: each value
replaces the section, so ``{kind: binary, positive: Pneumonia}`` sets both keys together).
An exclude rule drops every combination whose value on each named axis equals the rule's
value (or is in its list); "5 seeds up to N=2000, 1 above" is one such rule.

``baselines: [radiomics]`` adds one radiomics + logistic-regression run per (task, N, seed)
left in the grid (see ``grid.expand``), on the same splits and N-subsets as the CNN runs.

``keep_weights`` (default false): a grid run's ``model.safetensors`` is deleted once its
metrics are recorded, because the report needs only the store and a full grid of DenseNets
would fill a disk; sources always keep theirs (grid runs start from them). With false,
``medtransfer study best STUDY_DIR --out RUN_DIR`` retrains the best recipe into a run folder
``predict`` can use; with true it copies the best seed's folder instead (no retraining).
Not part of any run id: switching it never reruns a finished run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import RunConfig, did_you_mean, load_yaml, override_text, parse_overrides, set_dotted
from ..errors import ConfigError
from ..kinds import Init, Site

KNOWN_BASELINES = ("radiomics",)
SITES = tuple(Site)
SOURCE_ONLY_KEYS = ("site", "allow_overlap")   # source keys that are not train config keys
OVERRIDE_PREFIX = "# --set "


class Resources(BaseModel):
    """What one run asks of an executor (Ray uses both; fractional GPUs let small runs share a card)."""
    model_config = ConfigDict(extra="forbid")
    gpus_per_run: float = Field(0.0, ge=0, le=64)       # upper bounds: a typo is an error, not an unschedulable run
    cpus_per_run: float = Field(1.0, gt=0, le=1024)
    pack: int = Field(1, ge=1, le=64, description="train up to this many CNN grid runs together as one fused model "
                                           "(medtransfer.train.packed) where their steps line up; 1 = each alone. "
                                           "Above 1 it is part of the grid runs' ids (train.pack): packed results "
                                           "differ from unpacked ones by rounding, so the two are never mixed")


class ReportOptions(BaseModel):
    """What the report answers beyond the measured N (study spec key ``report``)."""
    model_config = ConfigDict(extra="forbid")
    targets: list[float] = Field(default_factory=list, description="AUROC values whose required N the learning-"
                                                                    "curve fit predicts, e.g. [0.85, 0.90]")
    equivalence_margin: float = Field(0.02, description="AUROC points within which two methods are called "
                                      "comparable (two one-sided tests on the paired difference, 90% interval)")

    @field_validator("equivalence_margin")
    @classmethod
    def _margin(cls, v):
        if not 0 < v < 0.5:
            raise ValueError(f"report.equivalence_margin must lie between 0 and 0.5 AUROC points, got {v}")
        return v

    @field_validator("targets")
    @classmethod
    def _auroc_targets(cls, v):
        bad = [t for t in v if not 0.5 < t < 1.0]
        if bad:
            raise ValueError(f"report.targets must be AUROC values between 0.5 and 1, got {bad[0]}")
        return sorted(set(v))


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    base: dict[str, Any]
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    baselines: list[str] = Field(default_factory=list)
    resources: Resources = Resources()
    report: ReportOptions = ReportOptions()
    # Grid runs' model.safetensors are deleted once the run is complete: the report needs only
    # the store, and 3,360 DenseNets would fill a disk. Sources always keep theirs (grid runs load them).
    # `study best` retrains the chosen recipe when its weights are gone, or copies them when kept.
    keep_weights: bool = False


def get_dotted(tree: dict, dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def is_config_key(dotted: str) -> bool:
    """True when ``dotted`` names a RunConfig field or section (walks the pydantic models)."""
    model: Any = RunConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def _init_or_none(value) -> Init | None:
    """A model.init value of a spec tree, parsed; None when absent or invalid (RunConfig then says why)."""
    try:
        return None if value is None else Init.parse(value)
    except ValueError:
        return None


def source_inits(values) -> list[Init]:
    return [i for i in map(_init_or_none, values) if i is not None and i.is_source]


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None) -> StudySpec:
    """Read and check a study YAML.

    ``overrides`` (``key=value``) apply to the base, and to every source too unless they are
    ``data.*`` / ``task.*`` keys (a source's dataset is its own): ``--set train.epochs=1``
    shortens everything, ``--set data.path=/big/NIH`` moves only the target.
    """
    path = Path(path)
    tree = load_yaml(path)
    if isinstance(tree, dict) and "base" not in tree and {"data", "task"} <= set(tree):
        raise ConfigError(f"{path} is a run config (it has data and task), not a study spec: train it with "
                          f"`medtransfer train {path} --out RUN_DIR`, or put it under `base:` with a `grid:` "
                          "(see examples/quickstart.yaml)")
    return parse_spec(tree, overrides, origin=str(path))


def parse_spec(tree: dict, overrides: list[str] | None = None, origin: str = "study") -> StudySpec:
    try:
        spec = StudySpec.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_spec_error(err, origin)) from None
    _apply_overrides(spec, overrides, origin)
    check_spec(spec, origin)
    return spec


def _format_spec_error(err: ValidationError, origin: str) -> str:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = {"resources": Resources, "report": ReportOptions}.get(str(e["loc"][0])) if len(e["loc"]) == 2 else None
            known = ", ".join((section or StudySpec).model_fields)
            hint = did_you_mean(loc, list(StudySpec.model_fields) if section is None
                                else [f"{e['loc'][0]}.{k}" for k in section.model_fields])
            problems.append(f"unknown study key '{loc}'{hint} (known: {known})")
        elif e["type"] == "missing":
            problems.append(f"missing study key '{loc}'")
        else:
            problems.append(f"'{loc}': {e['msg']}")
    return f"{origin}: " + "; ".join(problems)


def _apply_overrides(spec: StudySpec, overrides: list[str] | None, origin: str) -> None:
    """Apply ``--set`` to base and sources. ``parse_overrides`` has checked each key against the config's
    shape; what is left is the study's own rule: a grid axis (or a section an axis replaces whole) is set
    by its list in the spec, so an override there would be silently overwritten by every grid run."""
    for pair, (key, value) in zip(overrides or [], parse_overrides(overrides)):
        shown = override_text(pair)
        if key in spec.grid:
            raise ConfigError(f"{origin}: {shown}: '{key}' is a grid axis; change its list in the study instead")
        whole = next((axis for axis in spec.grid if key.startswith(axis + ".")), None)
        if whole is not None:
            raise ConfigError(f"{origin}: {shown}: the grid axis '{whole}' replaces that whole section in every "
                              "run; change its list in the study instead")
        set_dotted(spec.base, key, value)
        if key.split(".")[0] not in ("data", "task"):  # a source's dataset is its own
            for source in spec.sources.values():
                set_dotted(source, key, value)


def check_spec(spec: StudySpec, origin: str = "study") -> None:
    """Shape checks that need no data: axes, excludes, source names, baselines."""
    if spec.baselines:
        unknown = [b for b in spec.baselines if b not in KNOWN_BASELINES]
        if unknown:
            raise ConfigError(f"{origin}: baselines: unknown baseline '{unknown[0]}' (known: {', '.join(KNOWN_BASELINES)})")
        if len(set(spec.baselines)) != len(spec.baselines):
            raise ConfigError(f"{origin}: baselines: a baseline is listed twice")
    for axis, values in spec.grid.items():
        if not is_config_key(axis):
            raise ConfigError(f"{origin}: grid: unknown axis '{axis}' (not a config key){did_you_mean(axis)}")
        if not values:
            raise ConfigError(f"{origin}: grid: axis '{axis}' is empty (give at least one value)")
        if len({_canonical(v) for v in values}) != len(values):
            raise ConfigError(f"{origin}: grid: axis '{axis}' lists a value twice")
    for i, rule in enumerate(spec.exclude):
        if not rule:
            raise ConfigError(f"{origin}: exclude[{i}]: empty rule (it would drop every run)")
        for key, wanted in rule.items():
            if key not in spec.grid:
                raise ConfigError(f"{origin}: exclude[{i}]: '{key}' is not a grid axis")
            axis_values = {_canonical(v) for v in spec.grid[key]}
            for value in (wanted if isinstance(wanted, list) else [wanted]):
                if _canonical(value) not in axis_values:
                    raise ConfigError(f"{origin}: exclude[{i}]: {key}={value!r} is not a value of that grid axis")
    for name, source in spec.sources.items():
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{origin}: sources: name '{name}' must be letters, digits, '-' or '_'")
        site = source.get("site")
        if site is not None and site not in SITES:
            raise ConfigError(f"{origin}: sources.{name}.site must be 'same' or 'other', got {site!r}")
        if not isinstance(source.get("allow_overlap", False), bool):
            raise ConfigError(f"{origin}: sources.{name}.allow_overlap must be true or false")
        init = _init_or_none(get_dotted(source, "model.init"))
        if init is not None and init.is_source:
            raise ConfigError(f"{origin}: sources.{name}.model.init: a source cannot start from another source ({init})")
    inits = [get_dotted(spec.base, "model.init")] + list(spec.grid.get("model.init", []))
    for init in source_inits(inits):
        name = init.source_name
        if name not in spec.sources:
            known = ", ".join(spec.sources) or "none defined"
            raise ConfigError(f"{origin}: model.init '{init}': no source named '{name}' (sources: {known})")


def matches(rule: dict[str, Any], combo: dict[str, Any]) -> bool:
    """An exclude rule matches when every key's value equals (or is listed in) the rule."""
    for key, wanted in rule.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if _canonical(combo[key]) not in {_canonical(v) for v in options}:
            return False
    return True


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def source_config_tree(source: dict) -> dict:
    """A source entry without its study-only keys (``site``, ``allow_overlap``): what goes to RunConfig."""
    return {k: v for k, v in source.items() if k not in SOURCE_ONLY_KEYS}


def spec_text_with_overrides(path: Path, overrides: list[str] | None) -> str:
    """The spec as given, with the ``--set`` overrides recorded as comment lines ``study status`` reads back."""
    header = "".join(f"{OVERRIDE_PREFIX}{o}\n" for o in overrides or [])
    return header + Path(path).read_text()


def overrides_from_text(text: str) -> list[str]:
    return [line[len(OVERRIDE_PREFIX):].rstrip("\n") for line in text.splitlines() if line.startswith(OVERRIDE_PREFIX)]
