"""Grad-CAM shortcut warning (issue 24, item 1): the share of each map's mass outside the image centre, and one
warning line when most maps put most of their mass there.

The model here is built by hand so the answer is known: its one feature map is the image itself (a 1x1
convolution with weight 1) and its logit that map's mean, so Grad-CAM's map is the image's brighter-than-average
pixels. A bright marker in a corner must then read as (nearly) all mass outside the centre, a bright blob in the
middle as none.
"""
import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from medtransfer import inference
from medtransfer.cli import main
from medtransfer.config import config_from_dict
from medtransfer.models.cam import CENTRE_SIDE, centre_box, outside_centre_share, shortcut_warning

SIZE = 64


class ImageIsTheEvidence(nn.Module):
    """A classifier whose evidence is exactly the bright pixels: backbone = identity 1x1 conv, logit = its mean."""
    in_chans = 1

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        self.backbone = nn.Sequential(conv)

    def forward(self, x):
        return self.backbone(x).mean(dim=(2, 3))


def picture(where: str) -> np.ndarray:
    img = np.zeros((SIZE, SIZE), dtype=np.uint8)
    if where == "corner":
        img[1:7, 1:7] = 255                      # a side marker in the top-left corner (inside the border band)
    elif where == "edge":
        img[SIZE - 5:SIZE - 1, 20:44] = 255      # burnt-in text along the bottom edge
    else:
        img[24:40, 24:40] = 255                  # a finding in the middle
    return img


def test_the_share_of_mass_outside_the_centre_is_known_for_made_maps():
    rows, cols = centre_box(64, 64)
    assert (rows, cols) == (slice(8, 56), slice(8, 56))                       # the middle 75% of each side
    uniform = np.ones((1, 64, 64))
    assert outside_centre_share(uniform)[0] == pytest.approx(1 - CENTRE_SIDE ** 2)   # 0.4375: no flag when spread evenly
    corner, centre, zero = np.zeros((64, 64)), np.zeros((64, 64)), np.zeros((64, 64))
    corner[:6, :6] = 1.0
    centre[20:44, 20:44] = 0.5
    shares = outside_centre_share(np.stack([corner, centre, zero]))
    assert shares[0] == 1.0 and shares[1] == 0.0 and np.isnan(shares[2])


def test_the_warning_needs_most_maps_mostly_outside():
    assert shortcut_warning(np.array([0.9, 0.8, 0.2])) == ("Grad-CAM mass lies mostly outside the image centre in "
                                                            "2 of 3 images: suspect a shortcut (markers, borders, text)")
    assert shortcut_warning(np.array([0.9, 0.2])) is None                     # half is not most
    assert shortcut_warning(np.array([0.5, 0.5, 0.5])) is None                # exactly half the mass is not most
    assert shortcut_warning(np.array([0.9, np.nan, np.nan])) is not None      # maps without evidence are not counted
    assert shortcut_warning(np.array([np.nan])) is None


@pytest.fixture
def hand_built_run(monkeypatch, tmp_path):
    """predict on a run whose model is ``ImageIsTheEvidence``; images written as PNGs, named by where they are bright."""
    pytest.importorskip("pytorch_grad_cam")
    cfg = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"},
                            "image_size": SIZE})
    monkeypatch.setattr(inference, "load_run", lambda run_dir, device="auto": (cfg, ImageIsTheEvidence(), ["finding"],
                                                                              torch.device("cpu")))

    def write(names):
        paths = []
        for i, where in enumerate(names):
            paths.append(tmp_path / f"{i}_{where}.png")
            Image.fromarray(picture(where)).save(paths[-1])
        return paths
    return write


def run_predict(paths, cam, capsys):
    code = main(["predict", "--run", "unused", *map(str, paths), "--cam", str(cam), "--threshold", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return pd.read_csv(io.StringIO(captured.out)), captured.err


def test_predict_records_the_share_and_warns_when_most_maps_look_at_the_border(hand_built_run, tmp_path, capsys):
    paths = hand_built_run(["corner", "edge", "corner", "centre"])
    frame, err = run_predict(paths, tmp_path / "cam", capsys)
    share = frame.set_index(frame["image"].str.rsplit("/", n=1).str[-1])["cam_mass_outside_centre"]
    assert share["0_corner.png"] > 0.95 and share["1_edge.png"] > 0.95 and share["3_centre.png"] < 0.05
    warnings = [line for line in err.splitlines() if "Grad-CAM mass" in line]
    assert warnings == ["predict: warning: Grad-CAM mass lies mostly outside the image centre in 3 of 4 images: "
                        "suspect a shortcut (markers, borders, text)"]


def test_no_warning_when_most_maps_look_at_the_centre(hand_built_run, tmp_path, capsys):
    paths = hand_built_run(["centre", "corner", "centre"])
    frame, err = run_predict(paths, tmp_path / "cam", capsys)
    assert (frame["cam_mass_outside_centre"] > 0.5).sum() == 1
    assert "Grad-CAM mass" not in err


def test_without_cam_there_is_no_share_column(hand_built_run, tmp_path, capsys):
    paths = hand_built_run(["corner"])
    code = main(["predict", "--run", "unused", *map(str, paths), "--threshold", "0.5"])
    captured = capsys.readouterr()
    assert code == 0 and "cam_mass_outside_centre" not in captured.out and "Grad-CAM mass" not in captured.err
