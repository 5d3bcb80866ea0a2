"""predict on a batch: unreadable images are listed with their reason while the rest are scored and written
(exit 2 after writing), and an image upsampled more than 4x is flagged on stderr and in the CSV."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.cli import main
from medtransfer.inference import NoReadableImages, SmallImage, Unreadable, predict_files
from test_predict import run_cli, trained  # noqa: F401  (the tiny trained run and the CLI helper, shared)

ONE_PIXEL_WARNING = "1x1 px, upsampled 24x to the model's 24 px input (more than 4x): its score may be unreliable"


@pytest.fixture
def batch(trained, tmp_path):
    """(corrupt .png of random bytes, a readable 24-px image, a 1x1 image)."""
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image" + np.random.default_rng(0).bytes(2000))
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(tiny)
    return corrupt, trained / "img" / "1.png", tiny


def test_a_corrupt_file_is_listed_and_the_rest_are_scored_and_written(trained, batch, capsys, tmp_path):
    corrupt, good, tiny = batch
    out = tmp_path / "pred.csv"
    code, stdout, err = run_cli(["predict", "--run", trained / "run", corrupt, good, tiny, "--out", out], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert f"predict: skipped {corrupt}: cannot identify image file" in lines
    assert lines[-1] == ("medtransfer: error: 1 of 3 images could not be read; "
                         f"predictions for the other 2 are in {out}")
    assert stdout.strip() == f"wrote 2 rows to {out}"
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame["image"].tolist() == [str(good), str(tiny)]
    assert frame["score_finding"].between(0, 1).all() and frame["predicted_finding"].isin([0, 1]).all()
    assert frame["warning"].tolist() == ["", ONE_PIXEL_WARNING]


def test_the_one_pixel_image_is_warned_once_on_stderr(trained, batch, capsys, tmp_path):
    _, good, tiny = batch
    code, _, err = run_cli(["predict", "--run", trained / "run", good, tiny, "--out", tmp_path / "p.csv"], capsys)
    assert code == 0, err
    # the image warnings (the run's own verdict may add its line: a tiny synthetic run ties the pixel baseline)
    warnings = [line for line in err.splitlines() if "warning" in line and "no recommendation" not in line]
    assert warnings == [f"predict: warning: {tiny}: {ONE_PIXEL_WARNING}"]


def test_the_readable_rows_go_to_stdout_when_there_is_no_out(trained, batch, capsys):
    corrupt, good, _ = batch
    code, stdout, err = run_cli(["predict", "--run", trained / "run", good, corrupt], capsys)
    assert code == 2
    assert pd.read_csv(io.StringIO(stdout))["image"].tolist() == [str(good)]
    assert "warning" not in pd.read_csv(io.StringIO(stdout)).columns   # a clean image adds no column
    assert err.strip().splitlines()[-1] == ("medtransfer: error: 1 of 2 images could not be read; "
                                            "predictions for the other 1 are in the CSV on stdout")


def test_no_readable_image_is_one_line_and_writes_nothing(trained, batch, capsys, tmp_path):
    corrupt, _, _ = batch
    missing = tmp_path / "missing.png"
    out = tmp_path / "pred.csv"
    code, stdout, err = run_cli(["predict", "--run", trained / "run", corrupt, "--out", out], capsys)
    assert code == 2 and not out.exists() and stdout == ""
    assert err.strip().splitlines() == [f"medtransfer: error: cannot read {corrupt}: cannot identify image file; "
                                        "nothing was written"]
    code, _, err = run_cli(["predict", "--run", trained / "run", corrupt, missing, "--out", out], capsys)
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == [f"medtransfer: error: none of the 2 images could be read ({corrupt}: "
                                        "cannot identify image file; 1 more); nothing was written"]


def test_the_python_api_returns_failures_and_warnings_without_printing(trained, batch, capsys, tmp_path):
    corrupt, good, tiny = batch
    missing = tmp_path / "missing.png"
    five = tmp_path / "five.png"   # 24 / 5 = 4.8x: flagged
    six = tmp_path / "six.png"     # 24 / 6 = 4x exactly: not flagged
    Image.fromarray(np.full((5, 9), 90, np.uint8)).save(five)
    Image.fromarray(np.full((6, 6), 90, np.uint8)).save(six)
    result = predict_files(trained / "run", [corrupt, good, missing, tiny, five, six])
    assert capsys.readouterr().err == ""
    assert result.failures == [Unreadable(corrupt, "cannot identify image file"),
                               Unreadable(missing, "file not found")]
    assert result.warnings == [SmallImage(tiny, 1, 1, 24), SmallImage(five, 9, 5, 24)]
    assert result.warnings[1].upsampling == pytest.approx(4.8)
    assert result.n_images == 6 and result.frame["image"].tolist() == [str(good), str(tiny), str(five), str(six)]
    with pytest.raises(NoReadableImages) as caught:
        predict_files(trained / "run", [corrupt, missing])
    assert [f.path for f in caught.value.failures] == [corrupt, missing]


def test_cam_skips_the_unreadable_image(trained, batch, capsys, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    corrupt, good, tiny = batch
    cam = tmp_path / "cam"
    code, stdout, err = run_cli(["predict", "--run", trained / "run", corrupt, good, tiny, "--cam", cam], capsys)
    assert code == 2 and "wrote 2 Grad-CAM overlays" in err
    assert sorted(p.name for p in cam.glob("*.png")) == ["1_cam_finding.png", "tiny_cam_finding.png"]
    assert [p.rsplit("/", 1)[-1] for p in pd.read_csv(io.StringIO(stdout))["cam"]] == ["1_cam_finding.png",
                                                                                       "tiny_cam_finding.png"]
