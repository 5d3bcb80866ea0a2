"""Study specs: every shape error is caught before a run starts; the grid and its ids are deterministic."""
from pathlib import Path

import pytest
import yaml

from medtransfer.errors import ConfigError
from medtransfer.study import expand, load_spec, plan_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = {
    "data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
    "task": {"kind": "binary"},
    "image_size": 28,
    "model": {"arch": "resnet18", "init": "scratch"},
    "train": {"epochs": 1, "batch_size": 16},
}
CHEST = {"data": {"source": "nih14", "path": "nih14-mini"}, "task": {"kind": "multilabel"}, "train": {"epochs": 1}}


def write_spec(tmp_path, **parts) -> Path:
    tree = {"base": BASE, "sources": {"chest": CHEST},
            "grid": {"model.init": ["scratch", "source:chest"], "train.n_train": [50, 200], "train.seed": [0, 1]}}
    tree.update(parts)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.parametrize("parts, needle", [
    ({"gird": {}}, "unknown study key 'gird' (did you mean 'grid'?)"),
    ({"resources": {"gpu": 1}}, "unknown study key 'resources.gpu'"),
    ({"grid": {"train.sed": [0, 1]}}, "unknown axis 'train.sed' (not a config key) (did you mean 'train.seed'?)"),
    ({"grid": {"model.arch": []}}, "axis 'model.arch' is empty"),
    ({"grid": {"model.init": ["source:knee"]}}, "no source named 'knee'"),
    ({"grid": {"train.seed": [0, 0]}}, "axis 'train.seed' lists a value twice"),
    ({"exclude": [{"train.epochs": 3}]}, "exclude[0]: 'train.epochs' is not a grid axis"),
    ({"exclude": [{"train.n_train": 5000}]}, "train.n_train=5000 is not a value"),
    ({"baselines": ["radiomics", "radiomics"]}, "listed twice"),
    ({"baselines": ["lasso"]}, "unknown baseline 'lasso'"),
    ({"grid": {"train.strategy": ["full", "partial"]}}, "train.strategy"),
    ({"sources": {"chest": {"data": {"source": "nih14"}, "task": {"kind": "multilabel"}}}}, "sources.chest"),
    ({"base": {"task": {"kind": "binary"}}}, "base: missing config key 'data'"),
    ({"sources": {"chest": dict(CHEST, site="near")}}, "sources.chest.site must be 'same' or 'other'"),
])
def test_invalid_spec_fails_naming_the_problem(tmp_path, parts, needle):
    with pytest.raises(ConfigError) as err:
        plan_study(write_spec(tmp_path, **parts))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_override_of_a_grid_axis_or_unknown_key_is_refused(tmp_path):
    spec = write_spec(tmp_path)
    with pytest.raises(ConfigError, match="is a grid axis"):
        plan_study(spec, ["train.seed=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch' \(did you mean 'train.epochs'\?\)"):
        plan_study(spec, ["train.epoch=3"])
    plan = plan_study(spec, ["train.epochs=2", "data.split=random"])
    assert all(r.config.train.epochs == 2 for r in plan.all_runs)
    assert plan.runs[0].config.data.split == "random" and plan.sources[0].config.data.split == "random"
    plan = plan_study(spec, ["data.name=chestmnist", "task.kind=multilabel"])  # dataset keys: target only
    assert plan.runs[0].config.data.name == "chestmnist" and plan.sources[0].config.data.path == "nih14-mini"


def test_grid_size_excludes_and_source_inheritance(tmp_path):
    spec = write_spec(tmp_path, sources={"chest": dict(CHEST, site="same")}, exclude=[{"model.init": "source:chest", "train.n_train": 200, "train.seed": [1]}])
    plan = plan_study(spec)
    assert len(plan.runs) == 2 * 2 * 2 - 1
    assert len(plan.sources) == 1
    src = plan.sources[0]
    assert src.config.image_size == 28 and src.config.model.arch == "resnet18"  # inherited from base
    assert src.run_dir == f"sources/chest-{src.run_id}" and src.role == "source"   # named by config, not name alone
    chest_runs = [r for r in plan.runs if str(r.config.model.init) == "source:chest"]
    assert all(r.source == src.run_id for r in chest_runs)
    assert {r.task for r in plan.runs} == {"pneumoniamnist:binary"}
    assert src.task == "nih14-mini:multilabel"
    assert chest_runs[0].recipe == "chest / full / one_cycle"


def test_ids_are_deterministic_unique_and_follow_the_source(tmp_path):
    spec = write_spec(tmp_path)
    ids = [r.run_id for r in plan_study(spec).all_runs]
    assert ids == [r.run_id for r in plan_study(spec).all_runs]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)
    changed = dict(CHEST, train={"epochs": 2})
    (tmp_path / "changed").mkdir()
    ids2 = {r.run_id: r for r in plan_study(write_spec(tmp_path / "changed", sources={"chest": changed})).runs}
    for run in plan_study(spec).runs:  # a changed source changes only the runs that start from it
        assert (run.run_id in ids2) == (run.source is None)


def test_source_follows_an_arch_axis_and_fixed_arch_mismatch_is_an_error(tmp_path):
    grid = {"model.arch": ["resnet18", "densenet121"], "model.init": ["source:chest"], "train.seed": [0]}
    plan = plan_study(write_spec(tmp_path, grid=grid))
    assert sorted(s.run_dir.rsplit("-", 1)[0] for s in plan.sources) == ["sources/chest-densenet121", "sources/chest-resnet18"]
    assert all(s.run_dir.endswith(s.run_id) for s in plan.sources)
    for run in plan.runs:
        assert plan.source_by_id()[run.source].config.model.arch == run.config.model.arch
    fixed = dict(CHEST, model={"arch": "resnet18"})
    with pytest.raises(ConfigError, match="source:chest is a resnet18"):
        plan_study(write_spec(tmp_path, grid=grid, sources={"chest": fixed}))


def test_section_axis_and_varying_extra_axis_in_recipe(tmp_path):
    base = dict(BASE, data={"source": "nih14", "path": "nih14-mini"}, task={"kind": "multilabel"})
    grid = {"task": [{"kind": "multilabel"}, {"kind": "binary", "positive": "Pneumonia"}], "train.lr": [0.001, 0.01],
            "model.dropout": [0.0, 0.5]}
    plan = plan_study(write_spec(tmp_path, base=base, grid=grid))
    assert {r.task for r in plan.runs} == {"nih14-mini:multilabel", "nih14-mini:binary:Pneumonia"}
    assert "scratch / full / one_cycle / dropout 0.5 / lr 0.01" in {r.recipe for r in plan.runs}


def test_examples_expand(tmp_path):
    for name, n_grid in (("quickstart.yaml", 72 + 9), ("offline-chest.yaml", 168), ("offline-chest-radiomics.yaml", 168 + 14)):   # + radiomics
        plan = plan_study(EXAMPLES / name)
        assert len(plan.runs) == n_grid, name
    paper = plan_study(EXAMPLES / "paper-nih14.yaml")
    assert len(paper.sources) == 4  # chest and knee, once per arch
    seeds_at = {}
    for run in paper.runs:
        seeds_at.setdefault(run.config.train.n_train, set()).add(run.config.train.seed)
    assert all(len(s) == (5 if n != "all" and n <= 2000 else 1) for n, s in seeds_at.items())
    assert len(load_spec(EXAMPLES / "paper-nih14.yaml").grid["train.n_train"]) == 11
    assert len(paper.runs) == 16800 + 70   # + radiomics at every (task, N, seed)
    chest = next(s for s in paper.sources if s.source == "chest")
    assert chest.config.data.pool == "source" and {r.config.data.pool for r in paper.runs} == {"target"}
    assert chest.config.data.partition == paper.runs[0].config.data.partition
    assert expand(load_spec(EXAMPLES / "paper-nih14.yaml")).runs[0].run_id == paper.runs[0].run_id


def test_a_run_config_given_as_a_study_says_so():
    with pytest.raises(ConfigError) as err:
        load_spec(EXAMPLES / "pneumoniamnist.yaml")
    assert "is a run config (it has data and task), not a study spec" in str(err.value)
