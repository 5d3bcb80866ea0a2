"""A CSV's missing labels are missing (never a class), and its image paths stay inside the data root."""
import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.config import config_from_dict
from medtransfer.data import load_source
from medtransfer.errors import ConfigError, DataError

from synthetic import write_labelled_pngs


def _cfg(csv, **data):
    return config_from_dict({"data": {"source": "csv", "path": str(csv), "image_column": "path",
                                      "patient_column": "patient", **data},
                             "task": {"kind": "binary", "label_column": "finding"}})


def _with_labels(csv, labels):
    lines = csv.read_text().splitlines()
    rows = [line.rsplit(",", 2) for line in lines[1:]]
    csv.write_text("\n".join([lines[0]] + [f"{p},{lab},{pid}" for (p, _, pid), lab in zip(rows, labels)]) + "\n")


def test_zero_and_nan_labels_exit_2_naming_the_rows(tmp_path, capsys):
    csv = write_labelled_pngs(tmp_path, n_images=12)
    _with_labels(csv, ["0", "nan"] * 6)
    (tmp_path / "run.yaml").write_text(
        f"data: {{source: csv, path: {csv}, image_column: path, patient_column: patient}}\n"
        "task: {kind: binary, label_column: finding}\nimage_size: 16\n")
    assert main(["data", "info", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'finding'" in err and "6 row(s)" in err and "line(s) 3, 5, 7" in err and "drop_missing_labels" in err


@pytest.mark.parametrize("token", ["NA", "None", "n/a", "NaN", ""])
def test_every_missing_token_is_refused(tmp_path, token):
    csv = write_labelled_pngs(tmp_path, n_images=8)
    _with_labels(csv, ["0", "1", token, "1", "0", "1", "0", "1"])
    cfg = _cfg(csv)
    with pytest.raises(DataError, match="line\\(s\\) 4"):
        load_source(cfg.data, cfg.task, tmp_path)


def test_drop_missing_labels_drops_and_counts(tmp_path):
    csv = write_labelled_pngs(tmp_path, n_images=10)
    _with_labels(csv, ["0", "1", "nan", "1", "0", "NA", "0", "1", "0", "1"])
    cfg = _cfg(csv, drop_missing_labels=True)
    src = load_source(cfg.data, cfg.task, tmp_path)
    assert len(src) == 8 and set(np.unique(src.labels)) == {0.0, 1.0}
    assert src.label_names == ["finding"]
    assert any("dropped 2 of 10 rows" in n for n in src.notes)


def test_relative_path_escaping_the_data_root_is_named(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    csv = write_labelled_pngs(root, n_images=6)
    outside = tmp_path / "secret.png"
    (root / "img" / "0.png").rename(outside)
    csv.write_text(csv.read_text().replace("img/0.png", "../secret.png"))
    cfg = _cfg("labels.csv")
    with pytest.raises(DataError, match=r"names 1 of 6 images outside the data root .*, first '\.\./secret\.png'"):
        load_source(cfg.data, cfg.task, root)
    allowed = _cfg("labels.csv", allow_outside_root=True)
    assert len(load_source(allowed.data, allowed.task, root)) == 6
    csv.write_text(csv.read_text().replace("../secret.png", str(outside)))   # absolute: refused the same way
    with pytest.raises(DataError, match=f"first '{outside}'"):
        load_source(cfg.data, cfg.task, root)


def test_two_named_values_need_task_positive_and_the_error_lists_them(tmp_path):
    csv = write_labelled_pngs(tmp_path, n_images=8)
    _with_labels(csv, ["normal", "pneumonia", "normal", "normal"] * 2)
    cfg = _cfg(csv)
    with pytest.raises(ConfigError) as err:
        load_source(cfg.data, cfg.task, tmp_path)
    message = str(err.value)
    assert "'normal' (6 rows)" in message and "'pneumonia' (2 rows)" in message and "task.positive" in message
    chosen = config_from_dict({**cfg.model_dump(mode="json"), "task": {"kind": "binary", "label_column": "finding",
                                                                        "positive": "normal"}})
    src = load_source(chosen.data, chosen.task, tmp_path)
    assert src.labels[:, 0].tolist() == [1, 0, 1, 1] * 2 and src.label_names == ["finding=normal"]
