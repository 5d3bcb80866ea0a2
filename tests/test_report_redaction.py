"""Redaction applies to data-derived text only (issue 24, item 6): a report keeps the tool's own sentences
whole ("the same test-patient resamples and seeds") while a patient id quoted by a failed run's reason is
still blanked."""
import pytest

from medtransfer.report import write_report
from medtransfer.report.page import esc, prose
from medtransfer.report.versus_page import INTERVAL_OF
from test_report_crossover import _binary_runs
from test_report_study import _row, make_study

PATIENT = "P00123"
FAILED = f"DataError: cannot decode the image of patient {PATIENT}: truncated file"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A study with CNN and radiomics runs (so the CNN-vs-radiomics section and its definitions are written)
    and one failed run whose reason quotes a patient id."""
    study = tmp_path_factory.mktemp("redaction")
    rows = _binary_runs(study, seeds=[0, 1], inits=("scratch",))
    failed = dict(rows[0], seed=7)
    failed.pop("run_id"), failed.pop("config_json"), failed.pop("metrics_json"), failed.pop("run_dir")
    rows.append(_row(**{**failed, "status": "failed", "reason": FAILED, "test_auroc": None}))
    make_study(study, rows=rows, per_class=[])
    return write_report(study).read_text()


def test_the_tools_own_sentences_survive_intact(page):
    assert INTERVAL_OF["paired bootstrap"] in page            # "the same test-patient resamples and seeds ..."
    assert "DeLong p: DeLong (one image per patient)." in page
    assert "patient resamples" in page


def test_a_patient_id_from_the_data_is_still_redacted(page):
    assert PATIENT not in page
    assert "cannot decode the image of patient [redacted]" in page


def test_esc_redacts_and_prose_only_escapes():
    sentence = "the same patient resamples & seeds"
    assert prose(sentence) == "the same patient resamples &amp; seeds"
    assert esc(f"patient {PATIENT} <b>") == "patient [redacted] &lt;b&gt;"
