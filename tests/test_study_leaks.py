"""Leaks caught by content (issue 23 item 9): a source or checkpoint sharing the target's patients or images is
refused before any run, by patient id where the ids are comparable and by the pixels of every image."""
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from medtransfer.cli import main
from medtransfer.config import DataConfig, TaskConfig, config_from_dict, dump_config
from medtransfer.data import load_source
from medtransfer.data.leaks import PIXEL_RMS_MAX, THUMB_SIZE, pixel_matches, thumbnails
from medtransfer.errors import SharedDataError
from medtransfer.study import StudyOptions, run_study

from synthetic import write_labelled_pngs
from test_study_runner import fake_run

TASK = {"kind": "binary", "label_column": "finding"}


def _spec(tmp_path, target_data, source_data, target_task=TASK, source_task=TASK, **source_extra):
    tree = {"name": "leaks",
            "base": {"data": target_data, "task": target_task, "image_size": 16,
                     "model": {"arch": "resnet18", "init": "scratch"}, "train": {"epochs": 1, "min_steps": 0}},
            "sources": {"chest": {"site": "same", "data": source_data, "task": source_task,
                                  "model": {"init": "scratch"}, **source_extra}},
            "grid": {"model.init": ["scratch", "source:chest"], "train.n_train": [4], "train.seed": [0]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _options(tmp_path, **kw):
    return StudyOptions(data_root=tmp_path, run_fn=fake_run, probe=False, check_data=True, **kw)


def _source_with_a_renamed_copy(tmp_path):
    """target/: 40 synthetic PNGs (patients p0..p19); source/: 20 other PNGs plus target/img/7.png renamed,
    with patients in a column of another name (so only the pixels can tell)."""
    (tmp_path / "target").mkdir()
    write_labelled_pngs(tmp_path / "target")
    src = tmp_path / "source"
    (src / "img").mkdir(parents=True)
    rng = np.random.default_rng(42)
    rows = ["file,finding,subject"]
    for i in range(20):
        Image.fromarray(rng.integers(0, 220, (32, 32)).astype(np.uint8)).save(src / "img" / f"s{i}.png")
        rows.append(f"img/s{i}.png,{i % 2},s{i}")
    shutil.copy(tmp_path / "target" / "img" / "7.png", src / "img" / "renamed.png")
    rows.append("img/renamed.png,1,s99")
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    target = {"source": "csv", "path": "target/labels.csv", "image_column": "path", "patient_column": "patient"}
    source = {"source": "csv", "path": "source/labels.csv", "image_column": "file", "patient_column": "subject"}
    return target, source


def test_fullres_source_against_mini_target_is_refused_naming_patients_and_images(tmp_path, shared_data):
    spec = _spec(tmp_path, {"source": "nih14", "path": str(shared_data / "nih14-mini"), "split": "random"},
                 {"source": "nih14", "path": str(shared_data / "nih14-fullres")},
                 target_task={"kind": "binary", "positive": "Effusion"}, source_task={"kind": "multilabel"})
    with pytest.raises(SharedDataError) as err:
        run_study(spec, tmp_path / "S", _options(tmp_path))
    message = str(err.value)
    assert message.startswith("source chest (nih14-fullres) shares 3 patient(s) (nih14 Patient ID) and 3 image(s) "
                              "(by pixels) with the target nih14-mini:binary:Effusion: patients 1, 2, 13; images "
                              "00000001_000.png = 00000001_000.png, 00000002_000.png = 00000002_000.png, "
                              "00000013_003.png = 00000013_003.png;"), message
    assert "sources.chest.allow_overlap: true" in message and "\n" not in message
    assert not (tmp_path / "S").exists()


def test_fullres_and_mini_thumbnails_match_and_no_two_mini_images_do(tmp_path, shared_data):
    """The measured basis of PIXEL_RMS_MAX: each 1024 px original is within it of its 64 px copy; no two distinct
    nih14-mini images are (their closest pair differs by 4.6 gray levels RMS)."""
    def thumbs(folder):
        data = DataConfig(source="nih14", path=str(shared_data / folder))
        src = load_source(data, TaskConfig(kind="multilabel"), tmp_path)
        return src, thumbnails(src, data, tmp_path)

    full, full_t = thumbs("nih14-fullres")
    mini, mini_t = thumbs("nih14-mini")
    assert full_t.shape == (3, THUMB_SIZE, THUMB_SIZE)
    pairs = {(full.image_ids[i], mini.image_ids[j]) for i, j in pixel_matches(full_t, mini_t)}
    assert pairs == {(name, name) for name in full.image_ids}
    within = [(i, j) for i, j in pixel_matches(mini_t, mini_t) if i != j]
    assert within == []                      # no thumbnail collision between distinct nih14-mini images
    assert PIXEL_RMS_MAX == 2.0


def test_a_renamed_copy_of_a_target_image_in_a_csv_source_is_caught_by_its_pixels(tmp_path):
    target, source = _source_with_a_renamed_copy(tmp_path)
    spec = _spec(tmp_path, target, {**source, "image_column": "file"},
                 source_task={"kind": "binary", "label_column": "finding"})
    with pytest.raises(SharedDataError) as err:
        run_study(spec, tmp_path / "S", _options(tmp_path))
    message = str(err.value)
    assert ("source chest (source) shares 0 patient(s) (no shared patient id space) and 1 image(s) (by pixels) "
            "with the target target:binary: images img/renamed.png = img/7.png;") in message, message


def test_allow_overlap_lets_the_renamed_copy_pass(tmp_path):
    target, source = _source_with_a_renamed_copy(tmp_path)
    spec = _spec(tmp_path, target, source, allow_overlap=True)
    summary = run_study(spec, tmp_path / "S", _options(tmp_path))
    assert summary.counts["done"] == 3


def test_the_dry_run_refuses_too_and_says_when_it_could_not_check(tmp_path):
    target, source = _source_with_a_renamed_copy(tmp_path)
    with pytest.raises(SharedDataError, match="img/renamed.png = img/7.png"):
        run_study(_spec(tmp_path, target, source), None, _options(tmp_path, dry_run=True))
    clean = _spec(tmp_path, target, {**source, "path": "elsewhere/labels.csv"})
    text = str(run_study(clean, None, _options(tmp_path, dry_run=True)))
    assert "warning: sources not checked for shared patients / images: data not readable here" in text
    (tmp_path / "source" / "img" / "renamed.png").unlink()
    (tmp_path / "source" / "labels.csv").write_text(
        "\n".join((tmp_path / "source" / "labels.csv").read_text().splitlines()[:-1]) + "\n")
    text = str(run_study(_spec(tmp_path, target, source), None, _options(tmp_path, dry_run=True)))
    assert "sources checked: no shared patients or images with their targets" in text


def _checkpoint_run(tmp_path, data):
    """A run folder as `pretrain` leaves it: config.yaml saying what the weights were trained on."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    cfg = config_from_dict({"data": data, "task": TASK, "image_size": 16})
    (folder / "config.yaml").write_text(dump_config(cfg))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_train_from_a_checkpoint_run_trained_on_the_test_images_is_refused(tmp_path, capsys):
    target, _ = _source_with_a_renamed_copy(tmp_path)
    folder = _checkpoint_run(tmp_path, target)        # pretrained on the target's own images, test ones included
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": target, "task": TASK, "image_size": 16,
                                      "model": {"arch": "resnet18", "init": f"checkpoint:{folder}"}}))
    code = main(["train", str(config), "--out", str(tmp_path / "run"), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"model.init checkpoint: the run {folder} was trained on target, which shares 20 patient(s) " \
           "(csv column 'patient') and 40 image(s) (by pixels) with this run's data (target)" in err, err
    assert not (tmp_path / "run").exists()            # refused before the run folder was made


def test_a_bare_weights_file_is_noted_as_unchecked(tmp_path):
    from medtransfer.runs.checkpoint_leaks import checkpoint_leak_notes

    target, source = _source_with_a_renamed_copy(tmp_path)
    (tmp_path / "weights.safetensors").write_bytes(b"")
    bare = tmp_path / "weights.safetensors"
    cfg = config_from_dict({"data": target, "task": TASK, "model": {"init": f"checkpoint:{bare}"}})
    notes = checkpoint_leak_notes(cfg, tmp_path)
    assert notes and notes[0].startswith("leak check: not possible: checkpoint") and "no config.yaml" in notes[0]
    other = _checkpoint_run(tmp_path, {**source, "path": "source/labels.csv"})
    (tmp_path / "source" / "img" / "renamed.png").unlink()
    (tmp_path / "source" / "labels.csv").write_text(
        "\n".join((tmp_path / "source" / "labels.csv").read_text().splitlines()[:-1]) + "\n")
    cfg = config_from_dict({"data": target, "task": TASK, "model": {"init": f"checkpoint:{other}"}})
    assert "shares no patient and no image" in checkpoint_leak_notes(cfg, tmp_path)[0]
