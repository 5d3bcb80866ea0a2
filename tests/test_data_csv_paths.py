"""A CSV's image paths, relative or absolute, resolve inside the data root unless data.allow_outside_root says
otherwise, and then train.log's notes and the report say so."""
import json

import pytest

from medtransfer.cli import main
from medtransfer.config import DEMO_DATA, config_from_dict
from medtransfer.data import load_source
from medtransfer.data.sources.csv import images_root
from medtransfer.errors import DataError
from medtransfer.report.store import read_study

from synthetic import write_labelled_pngs
from test_report_study import PMNIST, _row, make_study


def _cfg(csv, **data):
    return config_from_dict({"data": {"source": "csv", "path": str(csv), "image_column": "path",
                                      "patient_column": "patient", **data},
                             "task": {"kind": "binary", "label_column": "finding"}})


@pytest.fixture
def root(tmp_path):
    """A data root holding labels.csv and img/0.png .. img/5.png."""
    folder = tmp_path / "root"
    folder.mkdir()
    write_labelled_pngs(folder, n_images=6)
    return folder


def _point(csv, image, to):
    csv.write_text(csv.read_text().replace(f"{image},", f"{to},"))


def test_absolute_paths_outside_the_root_are_refused_in_one_line(root, tmp_path):
    elsewhere = tmp_path / "elsewhere.png"
    (root / "img" / "0.png").rename(elsewhere)
    csv = root / "labels.csv"
    _point(csv, "img/0.png", elsewhere)
    _point(csv, "img/1.png", "/etc/passwd")
    cfg = _cfg("labels.csv")
    with pytest.raises(DataError) as err:
        load_source(cfg.data, cfg.task, root)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{csv}: column 'path' (data.image_column) names 2 of 6 images outside the data root "
                       f"{root.resolve()}, first '{elsewhere}'; move them under it or set "
                       "data.allow_outside_root: true")


def test_the_cli_exits_2_with_the_one_line(root, capsys):
    _point(root / "labels.csv", "img/3.png", "/etc/passwd")
    (root / "run.yaml").write_text(
        f"data: {{source: csv, path: {root / 'labels.csv'}, image_column: path, patient_column: patient}}\n"
        "task: {kind: binary, label_column: finding}\nimage_size: 16\n")
    assert main(["data", "info", str(root / "run.yaml"), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(root / "labels.csv") in err and "1 of 6 images" in err and "'/etc/passwd'" in err


def test_absolute_paths_inside_the_root_are_used(root):
    inside = root / "img" / "0.png"
    _point(root / "labels.csv", "img/0.png", inside)
    cfg = _cfg("labels.csv")
    src = load_source(cfg.data, cfg.task, root)
    assert src.paths[0] == inside and len(src) == 6
    assert not any("outside" in note for note in src.notes)


def test_a_symlink_inside_the_root_to_a_file_outside_is_refused(root, tmp_path):
    (root / "img" / "0.png").rename(tmp_path / "real.png")
    (root / "img" / "0.png").symlink_to(tmp_path / "real.png")
    _point(root / "labels.csv", "img/0.png", root / "img" / "0.png")
    cfg = _cfg("labels.csv")
    with pytest.raises(DataError, match=r"names 1 of 6 images that lie under the data root .* but through a "
                                         r"symbolic link lead outside it \(first '.*img/0\.png' -> .*real\.png\)"):
        load_source(cfg.data, cfg.task, root)


def test_a_symlinked_images_folder_is_named_as_a_link(root, tmp_path):
    """A new user's images folder linked in from elsewhere: the error says it is the link, not the CSV's paths."""
    (root / "img").rename(tmp_path / "real-images")
    (root / "img").symlink_to(tmp_path / "real-images", target_is_directory=True)
    cfg = _cfg("labels.csv")
    with pytest.raises(DataError, match=r"names 6 of 6 images that lie under the data root .* symbolic link .*"
                                         r"point the data root at the link's target"):
        load_source(cfg.data, cfg.task, root)


def test_the_opt_out_reads_them_and_says_so_in_the_notes(root, tmp_path):
    elsewhere = tmp_path / "elsewhere.png"
    (root / "img" / "0.png").rename(elsewhere)
    _point(root / "labels.csv", "img/0.png", elsewhere)
    cfg = _cfg("labels.csv", allow_outside_root=True)
    src = load_source(cfg.data, cfg.task, root)
    assert src.paths[0] == elsewhere and len(src) == 6
    assert (f"labels.csv: 1 of 6 images lie outside the data root {root.resolve()}, allowed by "
            "data.allow_outside_root: true") in src.notes


def test_a_csv_outside_the_data_root_keeps_to_its_own_folder(root, tmp_path):
    other_root = tmp_path / "data-root"
    other_root.mkdir()
    cfg = _cfg(root / "labels.csv")
    assert len(load_source(cfg.data, cfg.task, other_root)) == 6
    _point(root / "labels.csv", "img/2.png", other_root / "2.png")
    with pytest.raises(DataError, match=f"outside the data root {root.resolve()}, first '{other_root / '2.png'}'"):
        load_source(cfg.data, cfg.task, other_root)


def test_a_demo_bundle_csv_keeps_to_its_dataset_folder(tmp_path):
    """Not the whole bundle, and not a data root that happens to hold the package (here /)."""
    knee = DEMO_DATA / "knee-oa-64"
    assert images_root(knee / "labels.csv", tmp_path) == knee.resolve()
    assert images_root(knee / "labels.csv", tmp_path.anchor) == knee.resolve()
    assert images_root(knee / "sub" / "labels.csv", tmp_path) == knee.resolve()
    cfg = config_from_dict({"data": {"source": "csv", "path": "knee-oa-64/labels.csv", "image_column": "image",
                                     "patient_column": "patient_id"},
                            "task": {"kind": "multiclass", "label_column": "label"}})
    assert len(load_source(cfg.data, cfg.task, tmp_path)) == 1200


# ---------------------------------------------------------------- the report states the opt-out

def _runs(allow_outside_root: bool):
    rows = []
    for seed in (0, 1):
        row = _row(task=PMNIST, arch="resnet18", init="scratch", strategy="full", lr_policy="one_cycle",
                   recipe="scratch / full / one_cycle", n_train=50, seed=seed, n_train_images=50,
                   test_auroc=0.7, val_auroc=0.7)
        config = json.loads(row["config_json"])
        config["data"] = {"source": "csv", "path": "labels.csv", "allow_outside_root": allow_outside_root and seed == 0}
        row["config_json"] = json.dumps(config)
        rows.append(row)
    return rows


def test_the_report_notes_runs_that_allowed_images_outside_the_root(tmp_path):
    notes = read_study(make_study(tmp_path / "S", rows=_runs(True))).notes
    assert ("1 of 2 runs set data.allow_outside_root: true, so their images could lie outside the data root "
            "(each run's train.log counts them)") in notes
    assert not any("allow_outside_root" in note for note in read_study(make_study(tmp_path / "T",
                                                                                  rows=_runs(False))).notes)


# ---------------------------------------------------------------- data.image_root

@pytest.fixture
def bare(tmp_path):
    """A data root holding labels.csv beside images/, the CSV listing bare file names (0.png, ...)."""
    folder = tmp_path / "root"
    folder.mkdir()
    csv = write_labelled_pngs(folder, n_images=6)
    (folder / "img").rename(folder / "images")
    csv.write_text(csv.read_text().replace("img/", ""))
    return folder


def test_bare_names_beside_images_are_refused_naming_the_folder_and_the_fix(bare):
    cfg = _cfg("labels.csv")
    with pytest.raises(DataError) as err:
        load_source(cfg.data, cfg.task, bare)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{bare / 'labels.csv'}: 6 of 6 image files in column 'path' (data.image_column) are missing, "
                       f"first '0.png' (looked for {bare / '0.png'}); relative paths start at the CSV's folder "
                       f"{bare}; they are in {bare / 'images'}: set data.image_root: images")


def test_data_image_root_finds_them_relative_to_the_csv_or_absolute(bare):
    for image_root in ("images", str(bare / "images")):
        cfg = _cfg("labels.csv", image_root=image_root)
        src = load_source(cfg.data, cfg.task, bare)
        assert src.paths[0] == bare / "images" / "0.png" and src.files_root == bare / "images"
        assert src.dataset_key == f"csv:{(bare / 'labels.csv').resolve()} images:{(bare / 'images').resolve()}"
    assert load_source(*_both(_cfg("labels.csv", image_root="images")), bare).image_ids[0] == "0.png"


def _both(cfg):
    return cfg.data, cfg.task


def test_a_wrong_image_root_names_what_was_tried(bare):
    (bare / "other").mkdir()
    with pytest.raises(DataError, match=r"data.image_root 'nowhere' is not a folder \(looked for .*/root/nowhere\)$"):
        load_source(*_both(_cfg("labels.csv", image_root="nowhere")), bare)
    with pytest.raises(DataError, match=r"relative paths start at data.image_root .*/root/other; they are in "
                                        r".*/root/images: set data.image_root: images$"):
        load_source(*_both(_cfg("labels.csv", image_root="other")), bare)


def test_missing_files_found_nowhere_get_no_suggestion(bare):
    (bare / "images" / "3.png").unlink()
    with pytest.raises(DataError) as err:
        load_source(*_both(_cfg("labels.csv", image_root="images")), bare)
    assert str(err.value).endswith(f"relative paths start at data.image_root {bare / 'images'}")
    assert "1 of 6" in str(err.value) and "'3.png'" in str(err.value)


def test_an_image_root_outside_the_data_root_is_refused_unless_allowed(bare, tmp_path):
    (bare / "images").rename(tmp_path / "elsewhere")
    cfg = _cfg("labels.csv", image_root=str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"names 6 of 6 images outside the data root .*allow_outside_root: true$"):
        load_source(cfg.data, cfg.task, bare)
    allowed = _cfg("labels.csv", image_root=str(tmp_path / "elsewhere"), allow_outside_root=True)
    assert len(load_source(allowed.data, allowed.task, bare)) == 6
    with pytest.raises(DataError, match=r"names 6 of 6 images outside the data root"):   # relative, leaving it
        load_source(*_both(_cfg("labels.csv", image_root="../elsewhere")), bare)


def test_the_image_root_changes_the_cache_key_only_where_it_changes_the_files(bare):
    from medtransfer.data.cache import cache_key
    (bare / "copy").mkdir()
    for f in (bare / "images").iterdir():
        (bare / "copy" / f.name).write_bytes(f.read_bytes())
    a = load_source(*_both(_cfg("labels.csv", image_root="images")), bare)
    b = load_source(*_both(_cfg("labels.csv", image_root="copy")), bare)
    assert cache_key(a, 16) != cache_key(b, 16)
    csv = bare / "labels.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [f"images/{line}" for line in lines[1:]]) + "\n")
    plain = load_source(*_both(_cfg("labels.csv")), bare)
    dot = load_source(*_both(_cfg("labels.csv", image_root=".")), bare)
    assert plain.dataset_key == dot.dataset_key == f"csv:{csv.resolve()}"   # the CSV's folder: the old key


def test_the_cli_names_the_image_root_fix_in_one_line(bare, capsys):
    (bare / "run.yaml").write_text(f"data: {{source: csv, path: {bare / 'labels.csv'}, image_column: path, "
                                   "patient_column: patient}\ntask: {kind: binary, label_column: finding}\n"
                                   "image_size: 16\n")
    assert main(["data", "info", str(bare / "run.yaml"), "--data-root", str(bare)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medtransfer: error: ")
    assert err.endswith("set data.image_root: images")
