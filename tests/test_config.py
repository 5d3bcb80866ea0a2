from pathlib import Path

import pytest

from medtransfer.config import config_from_dict, load_config, parse_overrides, resolve_data_root
from medtransfer.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE = {"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"}}


RUN_EXAMPLES = [p for p in sorted(EXAMPLES.glob("*.yaml")) if "grid:" not in p.read_text()]


@pytest.mark.parametrize("example", RUN_EXAMPLES, ids=lambda p: p.name)
def test_every_run_example_validates(example):
    cfg = load_config(example)
    assert cfg.data.source in ("medmnist", "nih14", "csv")


def test_set_overrides_are_typed():
    cfg = config_from_dict(BASE, ["train.n_train=200", "model.arch=resnet18", "model.dropout=0.5", "train.n_train=all"])
    assert cfg.train.n_train == "all"
    assert cfg.model.dropout == 0.5
    assert config_from_dict(BASE, ["train.n_train=200"]).train.n_train == 200


@pytest.mark.parametrize("tree, overrides, named", [
    ({**BASE, "trian": {}}, [], "trian"),
    (BASE, ["train.lr_polcy=cosine"], "train.lr_polcy"),
    (BASE, ["train.strategy=thaw"], "train.strategy"),
    (BASE, ["model.init=imagenet21k"], "model.init"),
    ({"task": {"kind": "binary"}}, [], "data"),
    ({"data": {"source": "csv", "path": "x.csv"}, "task": {"kind": "binary"}}, [], "task.label_column"),
])
def test_bad_config_names_the_key(tree, overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config_from_dict(tree, overrides)


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        config_from_dict(BASE, ["train.n_train"])


def test_missing_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTRANSFER_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == (tmp_path / "env").resolve()
    assert resolve_data_root(str(tmp_path / "flag")) == (tmp_path / "flag").resolve()
    monkeypatch.delenv("MEDTRANSFER_DATA")
    assert resolve_data_root(None) == (Path.home() / ".cache/medtransfer/data").resolve()


def test_set_with_malformed_yaml_value_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        parse_overrides(["train.lr=["])
    assert "train.lr=[" in str(err.value) and "not valid YAML" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("tree, overrides, suggestion", [
    (BASE, ["train.epoch=3"], "did you mean 'train.epochs'?"),
    (BASE, ["train.seeds=1"], "did you mean 'train.seed'?"),
    ({**BASE, "trian": {}}, [], "did you mean 'train'?"),
])
def test_unknown_key_suggests_the_near_miss(tree, overrides, suggestion):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree, overrides)
    assert suggestion in str(err.value)


def test_unknown_key_far_from_any_gets_no_guess():
    with pytest.raises(ConfigError) as err:
        config_from_dict(BASE, ["zzqq=1"])
    assert "did you mean" not in str(err.value)


def test_a_study_spec_given_as_a_run_config_says_so():
    with pytest.raises(ConfigError) as err:
        load_config(EXAMPLES / "quickstart.yaml")
    assert "is a study spec (it has base and grid)" in str(err.value) and "medtransfer study run" in str(err.value)
