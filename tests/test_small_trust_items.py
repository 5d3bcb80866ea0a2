"""Issue 21 item 7, the small items: each bad input is one line naming what the user wrote.

(a) a YAML parse error names the file and the 1-based line, on one line (PyYAML's own text is four);
(b) a ``--set`` error names the key as typed, before the override can break some other key;
(c) ``study status`` / ``report`` refuse an emptied, truncated or table-less store without touching it;
(d) numeric config keys have upper bounds, so a typo is an error naming the key, not a 1e21-hour estimate.
"""
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.config import (DataConfig, MAX_EPOCHS, RadiomicsConfig, TrainConfig, config_from_dict, load_config,
                                parse_overrides)
from medtransfer.errors import ConfigError, MedtransferError
from medtransfer.study.spec import load_spec
from medtransfer.study.status import study_status
from medtransfer.study.store import REBUILD_HINT

import test_study_runner as fakes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE = {"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"}}
TAG = "could not determine a constructor for the tag '!!python/object:os.system'"


def cli_error(args, capsys) -> str:
    """The CLI's stderr for a refused command: exit 2 and exactly one line."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medtransfer: error: "), err
    return err.removeprefix("medtransfer: error: ").rstrip("\n")


def raised(fn, *args) -> str:
    with pytest.raises(MedtransferError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- (a) YAML errors: one line, file and line --------------------------------------------------------------

def test_an_unsafe_tag_in_a_run_config_is_one_line_with_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data: {source: medmnist, name: pneumoniamnist}\ntask: {kind: binary}\n"
                      "train: !!python/object:os.system {}\n")
    assert raised(load_config, config) == f"{config}: line 3: not valid YAML ({TAG})"
    assert cli_error(["train", config, "--out", tmp_path / "out"], capsys) == f"{config}: line 3: not valid YAML ({TAG})"
    assert not (tmp_path / "out").exists()


def test_an_unsafe_or_unknown_tag_in_a_study_spec_is_one_line_with_the_file_and_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nbase:\n  data: !!python/object:os.system {}\n")
    assert cli_error(["study", "run", spec, "--dry-run"], capsys) == f"{spec}: line 3: not valid YAML ({TAG})"
    spec.write_text("name: x\nbase: {}\ngrid:\n\n  train.seed: !custom [0, 1]\n")
    assert raised(load_spec, spec) == (f"{spec}: line 5: not valid YAML "
                                       "(could not determine a constructor for the tag '!custom')")


def test_other_yaml_errors_name_their_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: medmnist\ntask: {kind: binary}\n")
    assert raised(load_config, bad) == f"{bad}: line 2: not valid YAML (expected ',' or '}}', but got ':')"
    bad.write_text("name: x\nbase: {}\nnote: a\x00b\n")    # a ReaderError: a position, no mark
    assert raised(load_spec, bad) == (f"{bad}: line 3: not valid YAML "
                                      "(unacceptable character #x0000: special characters are not allowed)")
    bad.write_bytes(b"\xff\xfe\x00binary")
    assert raised(load_config, bad) == f"{bad}: not a text file (not UTF-8): expected a YAML config or study spec"


def test_a_set_value_that_is_not_yaml_is_one_line_without_a_line_number():
    assert raised(parse_overrides, ["train.lr=["]) == \
        "--set train.lr=[: not valid YAML (expected the node content, but found '<stream end>')"
    assert raised(parse_overrides, ["train.lr=!!python/object:os.system 1"]) == \
        f"--set train.lr=!!python/object:os.system 1: not valid YAML ({TAG})"
    assert raised(parse_overrides, ["train.lr=[1,\n2"]) == \
        "--set 'train.lr=[1,\\n2': not valid YAML (expected ',' or ']', but got '<stream end>')"


# --- (b) --set errors name the key as typed ----------------------------------------------------------------

def _section(key: str, model) -> str:
    return f"'{key}' is a section, not a value (its keys: {', '.join(model.model_fields)}); set one of them as {key}.KEY=VALUE"


def test_set_of_a_section_to_a_value_names_that_section(tmp_path, capsys):
    example = EXAMPLES / "pneumoniamnist.yaml"
    assert cli_error(["train", example, "--set", "train=5", "--out", tmp_path / "x"], capsys) == \
        "--set train=5: " + _section("train", TrainConfig)
    # the study used to blame a grid axis ('train.strategy') that tripped over the replaced section
    assert cli_error(["study", "run", EXAMPLES / "quickstart.yaml", "--set", "train=5", "--dry-run"], capsys) == \
        "--set train=5: " + _section("train", TrainConfig)
    assert cli_error(["study", "run", EXAMPLES / "quickstart.yaml", "--set", "data=3", "--dry-run"], capsys) == \
        "--set data=3: " + _section("data", DataConfig)
    assert raised(config_from_dict, BASE, ["radiomics=[]"]) == "--set radiomics=[]: " + _section("radiomics", RadiomicsConfig)


def test_set_below_a_value_or_of_an_unknown_key_names_the_key_as_typed(tmp_path, capsys):
    assert cli_error(["train", EXAMPLES / "pneumoniamnist.yaml", "--set", "model.arch.x=1", "--out", tmp_path / "x"],
                     capsys) == "--set model.arch.x=1: unknown config key 'model.arch.x' ('model.arch' is a value, not a section)"
    assert cli_error(["study", "run", EXAMPLES / "quickstart.yaml", "--set", "model.arch.x=1", "--dry-run"], capsys) == \
        "--set model.arch.x=1: unknown config key 'model.arch.x' ('model.arch' is a value, not a section)"
    assert raised(config_from_dict, BASE, ["train.epoch=3"]) == \
        "--set train.epoch=3: unknown config key 'train.epoch' (did you mean 'train.epochs'?)"
    assert raised(parse_overrides, ["train.gradual_epochs.0=1"]) == \
        "--set train.gradual_epochs.0=1: unknown config key 'train.gradual_epochs.0' ('train.gradual_epochs' is a value, not a section)"


def test_set_keeps_what_was_valid():
    """Whole sections given as mappings and keys inside free-form mappings still work."""
    cfg = config_from_dict(BASE, ["task={kind: multiclass}", "radiomics.image_types.LoG={sigma: [1.0]}"])
    assert cfg.task.kind == "multiclass" and cfg.radiomics.image_types == {"LoG": {"sigma": [1.0]}}


def test_study_set_on_a_grid_axis_or_inside_a_section_axis_names_the_set(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "grid": {"task": [{"kind": "binary"}], "train.seed": [0, 1]}}))
    assert raised(load_spec, spec, ["train.seed=3"]) == \
        f"{spec}: --set train.seed=3: 'train.seed' is a grid axis; change its list in the study instead"
    assert raised(load_spec, spec, ["task.positive=Pneumonia"]) == \
        (f"{spec}: --set task.positive=Pneumonia: the grid axis 'task' replaces that whole section in every run; "
         "change its list in the study instead")


# --- (c) status / report never read an emptied store as "all pending" --------------------------------------

def _study(tmp_path) -> Path:
    tree = json.loads(json.dumps(fakes.SPEC))
    tree.update(sources={}, grid={"train.n_train": [50, 200], "train.seed": [0, 1]})
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tree))
    out = tmp_path / "S"
    fakes.run(spec, out)
    for extra in ("-wal", "-shm"):
        Path(f"{out / 'results.sqlite'}{extra}").unlink(missing_ok=True)
    return out


def test_status_and_report_refuse_an_empty_store_and_leave_it_empty(tmp_path, capsys):
    out = _study(tmp_path)
    store = out / "results.sqlite"
    store.write_bytes(b"")
    expected = f"{store} is empty (0 bytes): it holds no results; {REBUILD_HINT}"
    assert "move it away" in expected and "`medtransfer study run` with the same spec" in expected
    assert cli_error(["study", "status", out], capsys) == expected
    assert cli_error(["report", out], capsys) == expected
    assert store.stat().st_size == 0                                    # no schema written into it
    assert not Path(f"{store}-wal").exists() and not (out / "report.html").exists()


def test_status_and_report_refuse_a_store_without_a_runs_table(tmp_path, capsys):
    out = _study(tmp_path)
    store = out / "results.sqlite"
    store.unlink()
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    before = store.read_bytes()
    expected = f"{store} has no 'runs' table, so it is not a study's results store; {REBUILD_HINT}"
    assert cli_error(["study", "status", out], capsys) == expected
    assert cli_error(["report", out], capsys) == expected
    assert store.read_bytes() == before


def test_status_and_report_refuse_a_truncated_store_and_leave_it_as_it_is(tmp_path, capsys):
    out = _study(tmp_path)
    store = out / "results.sqlite"
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size // 2)
    before = store.read_bytes()
    expected = f"{store} is not a readable SQLite database (database disk image is malformed); {REBUILD_HINT}"
    assert cli_error(["study", "status", out], capsys) == expected
    assert cli_error(["report", out], capsys) == expected
    assert store.read_bytes() == before


def test_status_reads_a_good_store_without_changing_a_byte(tmp_path):
    out = _study(tmp_path)
    store = out / "results.sqlite"
    before = store.read_bytes()
    assert "4 runs: 4 done" in study_status(out)
    assert store.read_bytes() == before
    shutil.move(store, tmp_path / "moved.sqlite")                       # the hint's remedy rebuilds it
    calls = []
    fakes.run(tmp_path / "s.yaml", out, fn=lambda *a, **k: calls.append(1) or fakes.fake_run(*a, **k))
    assert calls == [] and "4 runs: 4 done" in study_status(out)


# --- (d) upper bounds: a typo is one line naming the key ----------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", "99999999999999999999999", "Input should be less than or equal to 10000"),
    ("train.steps", "10000001", "Input should be less than or equal to 10000000"),
    ("train.min_steps", "1.0e+30", "Unable to parse input string as an integer, exceeded maximum size"),
    ("train.min_steps", "20000000", "Input should be less than or equal to 10000000"),
    ("train.batch_size", "65537", "Input should be less than or equal to 65536"),
    ("train.patience", "10001", "Input should be less than or equal to 10000"),
    ("train.step_every", "10001", "Input should be less than or equal to 10000"),
    ("train.cycle_epochs", "10001", "Input should be less than or equal to 10000"),
    ("train.threads", "1025", "Input should be less than or equal to 1024"),
    ("train.seed", "4294967296", "Input should be less than or equal to 4294967295"),
    ("train.seed", "-1", "Input should be greater than or equal to 0"),
    ("train.lr", ".inf", "Input should be a finite number"),
    ("train.weight_decay", ".inf", "Input should be a finite number"),
    ("image_size", "5000", "Input should be less than or equal to 4096"),
    ("data.split_seed", "4294967296", "Input should be less than or equal to 4294967295"),
    ("data.workers", "100000", "Input should be less than or equal to 1024"),
    ("radiomics.max_size", "100000", "Input should be less than or equal to 8192"),
    ("radiomics.image_size", "100000", "Input should be less than or equal to 8192"),
    ("radiomics.workers", "100000", "Input should be less than or equal to 1024"),
    ("radiomics.normalize_scale", ".inf", "Input should be a finite number"),
    ("train.n_train", "10000001", "train.n_train must be a positive integer up to 10,000,000 or 'all', got 10000001"),
    ("train.gradual_epochs", "[1, 1, 99999]",
     "train.gradual_epochs must be three epoch counts from 0 to 10,000 (head, +last group, all), got [1, 1, 99999]"),
])
def test_a_number_past_its_bound_is_one_line_naming_the_key(key, value, message):
    where = "train" if key == "train.gradual_epochs" else key   # a model-level check is reported on its section
    assert raised(config_from_dict, BASE, [f"{key}={value}"]) == f"config: '{where}': {message}"


def test_the_bounds_themselves_are_accepted():
    cfg = config_from_dict(BASE, [f"train.epochs={MAX_EPOCHS}", "train.steps=10000000", "train.batch_size=65536",
                                  "train.seed=4294967295", "train.lr=1e30", "image_size=4096", "train.n_train=10000000"])
    assert cfg.train.epochs == MAX_EPOCHS and cfg.image_size == 4096 and cfg.train.n_train == 10_000_000


def test_a_huge_epoch_count_stops_the_dry_run_naming_the_key(capsys):
    assert cli_error(["study", "run", EXAMPLES / "quickstart.yaml", "--set", "train.epochs=99999999999999999999999",
                      "--dry-run"], capsys) == \
        f"{EXAMPLES / 'quickstart.yaml'}: base: 'train.epochs': Input should be less than or equal to 10000"


@pytest.mark.parametrize("key, value, message", [
    ("pack", 1000, "Input should be less than or equal to 64"),
    ("gpus_per_run", 1e9, "Input should be less than or equal to 64"),
    ("cpus_per_run", float("inf"), "Input should be less than or equal to 1024"),
])
def test_study_resources_have_upper_bounds(tmp_path, key, value, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "resources": {key: value}}))
    assert raised(load_spec, spec) == f"{spec}: 'resources.{key}': {message}"


def test_an_unknown_report_key_lists_the_report_keys(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": BASE, "report": {"target": [0.9]}}))
    assert raised(load_spec, spec) == f"{spec}: unknown study key 'report.target' (did you mean 'report.targets'?) (known: targets, equivalence_margin)"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_within_the_bounds(example):
    from medtransfer.study.grid import expand

    if "grid:" in example.read_text():
        assert expand(load_spec(example), origin=str(example)).all_runs
    else:
        assert load_config(example).train.epochs <= MAX_EPOCHS
