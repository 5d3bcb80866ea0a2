"""No silent leak: a CSV without data.patient_column that holds a column looking like patient ids is refused in
one line naming it; data.patient_column: none splits per image on purpose, and train.log and the report say so."""
import numpy as np
import pandas as pd
import pytest

from medtransfer.cli import main
from medtransfer.config import config_from_dict, hashed_view
from medtransfer.data import load_source, prepare_data
from medtransfer.data.sources.csv_patients import looks_like_patient_ids, name_says_patient
from medtransfer.errors import ConfigError

from synthetic import write_labelled_pngs


def _cfg(csv, **data):
    return config_from_dict({"data": {"source": "csv", "path": str(csv), "image_column": "path", **data},
                             "task": {"kind": "binary", "label_column": "finding"}})


def _rename_patient_column(csv, name):
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0].replace("patient", name)] + lines[1:]) + "\n")


def test_a_patient_id_column_without_data_patient_column_is_refused_naming_it(tmp_path):
    csv = write_labelled_pngs(tmp_path, n_images=12)
    _rename_patient_column(csv, "patient_id")
    cfg = _cfg(csv)
    with pytest.raises(ConfigError) as err:
        load_source(cfg.data, cfg.task, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{csv}: column 'patient_id' looks like patient ids but data.patient_column is not set, so "
                       "one patient's images could land in both train and test; set data.patient_column: patient_id "
                       "to split by it, or data.patient_column: none to split per image")


def test_the_cli_exits_2_with_one_line_naming_the_column(tmp_path, capsys):
    csv = write_labelled_pngs(tmp_path, n_images=12)
    _rename_patient_column(csv, "patient_id")
    (tmp_path / "run.yaml").write_text(f"data: {{source: csv, path: {csv}, image_column: path}}\n"
                                       "task: {kind: binary, label_column: finding}\nimage_size: 16\n")
    assert main(["data", "info", str(tmp_path / "run.yaml"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("medtransfer: error: ") and "'patient_id'" in err and "data.patient_column: none" in err


def test_patient_column_none_splits_per_image_and_says_so(tmp_path):
    csv = write_labelled_pngs(tmp_path, n_images=20)
    for value in ("none", "None", "NONE"):
        assert _cfg(csv, patient_column=value).data.patient_column == "none"
    cfg = _cfg(csv, patient_column="none", split_fractions=(0.5, 0.0, 0.5))
    src = load_source(cfg.data, cfg.task, tmp_path)
    assert not src.has_patient_ids and list(src.patient_ids) == src.image_ids
    prepared = prepare_data(cfg.data, cfg.task, 12, tmp_path, "all", 0, progress=False)
    assert "data.patient_column: none: each image is its own patient (explicit), so the splits are per image" \
        in prepared.notes
    assert not any(n.startswith("no patient IDs") for n in prepared.notes)
    assert not cfg.data.gives_patient_ids and cfg.data.patient_id_column is None


def test_patient_column_none_keeps_the_run_id_of_an_unset_one(tmp_path):
    """`none` trains what an unset patient_column trained before the opt-out existed: the same run id, so adding
    it to a finished study does not orphan its runs."""
    csv = tmp_path / "labels.csv"
    assert hashed_view(_cfg(csv, patient_column="none")) == hashed_view(_cfg(csv))
    assert hashed_view(_cfg(csv, patient_column="pid")) != hashed_view(_cfg(csv))
    assert _cfg(csv, patient_column="none").model_dump()["data"]["patient_column"] == "none"   # config.yaml keeps it


def test_a_column_the_config_names_is_never_refused(tmp_path):
    csv = write_labelled_pngs(tmp_path, n_images=12)
    _rename_patient_column(csv, "case_id")
    cfg = config_from_dict({"data": {"source": "csv", "path": str(csv), "image_column": "path"},
                            "task": {"kind": "multiclass", "label_column": "case_id"}})
    assert len(load_source(cfg.data, cfg.task, tmp_path)) == 12
    cfg = _cfg(csv, patient_column="case_id")
    assert load_source(cfg.data, cfg.task, tmp_path).has_patient_ids


@pytest.mark.parametrize("name", ["patient", "patient_id", "PatientID", "Patient ID", "patientid", "subject",
                                  "SubjectCode", "case_no", "CaseNumber", "MRN", "study_uid", "StudyInstanceUID",
                                  "participant", "pid", "cases"])
def test_names_that_say_patient(name):
    assert name_says_patient(name)


@pytest.mark.parametrize("name", ["image", "label", "view", "side", "subjective_score", "showcase", "lowercase",
                                  "rapid", "studying", "Follow-up #", "age", "width",
                                  "Patient Age", "Patient Gender", "patient_sex", "case_control"])
def test_names_that_do_not(name):
    assert not name_says_patient(name)


def _paths(n):
    return [f"images/{i:05d}.png" for i in range(n)]


@pytest.mark.parametrize("values", [
    [f"P{i // 2:03d}" for i in range(100)],                  # codes, two images each
    [f"sub-{i // 3:02d}" for i in range(60)],
    [f"1.2.840.1136.{i // 4}" for i in range(80)],           # DICOM UIDs
])
def test_values_that_look_like_grouping_ids_are_caught_under_any_name(values):
    assert looks_like_patient_ids("grp", pd.Series(values), _paths(len(values)))


def test_integer_ids_count_only_where_the_image_path_holds_them():
    ids = [str(9000000 + i // 2) for i in range(100)]
    paths = [f"images/{v}{'LR'[i % 2]}.png" for i, v in enumerate(ids)]
    assert looks_like_patient_ids("grp", pd.Series(ids), paths)
    assert not looks_like_patient_ids("grp", pd.Series(ids), _paths(100))


@pytest.mark.parametrize("values", [
    ["PA", "AP"] * 50,                                       # a view: two values
    [str(20 + i % 60) for i in range(100)],                  # ages
    [str(2000 + 7 * (i % 40)) for i in range(100)],          # widths in pixels
    [f"{0.1 + (i % 30) / 100:.3f}" for i in range(100)],     # a float measurement
    [f"2019-01-{1 + i % 28:02d}" for i in range(100)],       # dates
    [f"site{1 + i % 5:02d}" for i in range(100)],            # a few sites over many rows
    [f"img{i}.png" for i in range(50)] * 2,                  # file paths (a mask column)
    ["No Finding", "Effusion|Infiltration", "Mass"] * 30,    # free text
    [f"P{i:03d}" for i in range(100)],                       # all distinct: nothing repeats, nothing to leak
    ["J18.9"] * 40 + [f"J{i}.0" for i in range(60)],         # one code on 40% of the rows: a category
])
def test_values_that_are_not_grouping_ids(values):
    assert not looks_like_patient_ids("grp", pd.Series(values), _paths(len(values)))


def test_the_shipped_knee_csv_is_refused_without_its_patient_column_and_accepted_with_it(tmp_path):
    from medtransfer.config import DEMO_DATA
    from medtransfer.data.sources.csv_patients import refuse_hidden_patient_ids
    df = pd.read_csv(DEMO_DATA / "knee-oa-64" / "labels.csv", dtype=str, keep_default_na=False)
    with pytest.raises(ConfigError, match=r"column 'patient_id' looks like patient ids"):
        refuse_hidden_patient_ids(df, ["image", "label"], df["image"].tolist(), DEMO_DATA / "knee-oa-64" / "labels.csv")
    renamed = df.rename(columns={"patient_id": "knee"})              # caught by its values too
    with pytest.raises(ConfigError, match=r"column 'knee' looks"):
        refuse_hidden_patient_ids(renamed, ["image", "label", "split"], df["image"].tolist(), DEMO_DATA / "x.csv")
    refuse_hidden_patient_ids(df, ["image", "label", "split", "patient_id"], df["image"].tolist(), DEMO_DATA / "x.csv")


def test_the_nih_entry_csv_flags_only_its_patient_column(shared_data):
    df = pd.read_csv(shared_data / "nih14-mini" / "Data_Entry_2017.csv", dtype=str, keep_default_na=False)
    images = df["Image Index"].tolist()
    flagged = [c for c in df.columns if c not in ("Image Index", "Finding Labels")
               and looks_like_patient_ids(c, df[c], images)]
    assert flagged == ["Patient ID"]
    for n in (30, 100, 300):   # nor on a small part of it
        part = df.iloc[:n]
        assert [c for c in df.columns if c not in ("Image Index", "Finding Labels", "Patient ID")
                and looks_like_patient_ids(c, part[c], images[:n])] == []
    assert np.unique(df["Patient ID"]).size == 264


def test_the_report_marks_runs_that_split_per_image(tmp_path):
    import json

    from medtransfer.report import write_report
    from medtransfer.report.store import read_study
    from test_report_study import PMNIST, _row, make_study

    def runs(per_image):
        rows = []
        for seed in (0, 1):
            row = _row(task=PMNIST, arch="resnet18", init="scratch", strategy="full", lr_policy="one_cycle",
                       recipe="scratch / full / one_cycle", n_train=50, seed=seed, n_train_images=50,
                       test_auroc=0.7, val_auroc=0.7)
            config = json.loads(row["config_json"])
            config["data"] = {"source": "csv", "path": "labels.csv", "patient_column": "none" if per_image else None}
            row["config_json"] = json.dumps(config)
            rows.append(row)
        return rows

    study = make_study(tmp_path / "S", rows=runs(True))
    note = ("2 of 2 runs set data.patient_column: none, splitting per image on purpose: their splits, N and test "
            "intervals count each image as its own patient")    # "patient" last: the page's redaction keeps it
    assert note in read_study(study).notes
    assert note in write_report(study).read_text()      # on the report page, with the study's other notes
    assert not any("patient_column" in n for n in read_study(make_study(tmp_path / "T", rows=runs(False))).notes)
