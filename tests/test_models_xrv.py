"""model.init xrv:NAME: torchxrayvision's chest X-ray DenseNet-121 weights as a backbone init.

The real weights cannot be downloaded here, so files are placed the way torchxrayvision
writes them: a whole pickled model (``torch.save(model)``, what its ``DenseNet.__init__``
reads back with ``torch.load(...).state_dict()``), or a plain state dict of the same shape
built from torchvision's DenseNet-121 (1-channel conv0, 18-output classifier).
"""
import json
import sqlite3
import time

import numpy as np
import pytest
import torch
import torchvision
import yaml

from medtransfer.config import config_from_dict
from medtransfer.errors import ConfigError, WeightsUnavailable
from medtransfer.kinds import Init, InitKind
from medtransfer.models import create_model
from medtransfer.models import init as init_mod
from medtransfer.models.inputs import GREY_MEAN, GREY_STD
from medtransfer.models.xrv_init import fold_input_scaling
from medtransfer.xrv_weights import NIH, XRV_WEIGHTS, target_images, xrv_weights

ALL = "densenet121-res224-all"
ALL_FILE = XRV_WEIGHTS[ALL].file


@pytest.fixture
def xrv_dir(tmp_path, monkeypatch):
    """An empty torchxrayvision cache folder (via $MEDTRANSFER_XRV_DIR), not yet created."""
    folder = tmp_path / "xrv-cache"
    monkeypatch.setenv("MEDTRANSFER_XRV_DIR", str(folder))
    return folder


def xrv_shaped_densenet(seed: int = 0) -> torch.nn.Module:
    """torchvision's DenseNet-121 in torchxrayvision's shape: 1 input channel, 18 outputs, non-trivial BN stats."""
    torch.manual_seed(seed)
    model = torchvision.models.densenet121(num_classes=18)
    model.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
    return model


def xrv_input(z: torch.Tensor) -> torch.Tensor:
    """Our normalised input -> torchxrayvision's [-1024, 1024] scale of the same grey levels."""
    return (z * GREY_STD + GREY_MEAN) * 2048 - 1024


def quiet(_line):
    pass


# ---------------------------------------------------------------- parsing and config

def test_init_parse_round_trip_and_old_forms_unchanged():
    init = Init.parse(f"xrv:{ALL}")
    assert init == Init.xrv(ALL) and init.kind is InitKind.XRV and init.xrv_name == ALL
    assert str(init) == f"xrv:{ALL}" and Init.parse(str(init)) == init
    for text in ("scratch", "imagenet", "checkpoint:runs/a", "source:chest"):
        assert str(Init.parse(text)) == text
    with pytest.raises(ValueError, match="xrv:NAME"):
        Init.parse("xrv:")
    with pytest.raises(ValueError, match="names no torchxrayvision"):
        _ = Init.parse("imagenet").xrv_name


def _cfg(**model):
    return config_from_dict({"data": {"source": "nih14", "path": "nih14-mini"}, "task": {"kind": "multilabel"},
                             "model": model})


def test_config_accepts_xrv_on_densenet121_only():
    assert _cfg(arch="densenet121", init=f"xrv:{ALL}").model.init == Init.xrv(ALL)
    with pytest.raises(ConfigError, match=r"model\.arch.*densenet121.*'resnet18'"):
        _cfg(arch="resnet18", init=f"xrv:{ALL}")
    with pytest.raises(ConfigError, match=r"unknown torchxrayvision weights 'densenet121-res224-al'.*-all"):
        _cfg(arch="densenet121", init="xrv:densenet121-res224-al")


def test_create_model_refuses_another_arch_before_any_download(xrv_dir, monkeypatch):
    monkeypatch.setattr(init_mod, "download", lambda *a: pytest.fail("download attempted for a wrong arch"))
    with pytest.raises(ConfigError, match="model.arch"):
        create_model("resnet18", 2, init=f"xrv:{ALL}", log=quiet)


def test_table_knows_what_each_weights_file_saw():
    assert XRV_WEIGHTS[ALL].url.endswith("/" + ALL_FILE) and ALL_FILE.startswith("nih-pc-chex-mimic_ch")
    assert xrv_weights(ALL).saw(NIH) and xrv_weights("densenet121-res224-rsna").saw(NIH)   # RSNA = NIH images
    assert not xrv_weights("densenet121-res224-chex").saw(NIH)
    assert target_images("nih14") == NIH and target_images("medmnist", "chestmnist") == NIH
    assert target_images("medmnist", "pneumoniamnist") is None and target_images("csv") is None


# ---------------------------------------------------------------- the file is absent

def test_absent_file_offline_fails_fast_naming_file_folder_and_url(xrv_dir, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    monkeypatch.setattr(init_mod, "download", lambda *a: pytest.fail("download attempted while offline"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and "MEDTRANSFER_OFFLINE=1" in message
    assert ALL_FILE in message and str(xrv_dir) in message and XRV_WEIGHTS[ALL].url in message


def test_absent_file_without_the_offline_flag_still_fails_fast(xrv_dir, monkeypatch):
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)
    if init_mod.reachable(XRV_WEIGHTS[ALL].url, timeout=2) is None:
        pytest.skip("github.com is reachable here; the offline failure cannot be shown")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match=ALL_FILE):
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    assert time.monotonic() - start < 10
    assert not xrv_dir.exists() or not any(xrv_dir.iterdir())   # no partial file left behind


def test_default_folder_is_torchxrayvisions_own(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDTRANSFER_XRV_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert init_mod.xrv_cache_dir() == tmp_path / ".torchxrayvision" / "models_data"
    xrv = pytest.importorskip("torchxrayvision")
    assert init_mod.xrv_cache_dir() == type(init_mod.xrv_cache_dir())(xrv.utils.get_cache_dir())
    assert xrv.models.model_urls[ALL]["weights_url"] == XRV_WEIGHTS[ALL].url   # the copied table is current


# ---------------------------------------------------------------- a placed file loads

def _check_loaded(model, reference):
    """Every backbone tensor equals the placed one, except conv0 / norm0.running_mean (folded, checked apart)."""
    placed = reference.state_dict()
    folded = {"features.conv0.weight", "features.norm0.running_mean"}
    ours = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert set(ours) == {k for k in placed if k.startswith("features.")}
    for key, value in ours.items():
        if key not in folded:
            assert torch.equal(value, placed[key]), key
    torch.testing.assert_close(model.backbone.features.conv0.weight,
                               placed["features.conv0.weight"] * 2048 * GREY_STD)
    assert not torch.equal(model.backbone.features.norm0.running_mean, placed["features.norm0.running_mean"])


def test_placed_state_dict_loads_into_the_backbone(xrv_dir):
    reference = xrv_shaped_densenet()
    xrv_dir.mkdir(parents=True)
    torch.save(reference.state_dict(), xrv_dir / ALL_FILE)
    lines = []
    model = create_model("densenet121", 3, init=f"xrv:{ALL}", log=lines.append)
    _check_loaded(model, reference)
    n = len([k for k in model.state_dict() if k.startswith("backbone.")])
    assert any(f"loaded {n} of {n} backbone tensors" in line and "classifier.weight" in line for line in lines)
    assert model.head[1].out_features == 3


def test_placed_whole_pickled_xrv_model_loads(xrv_dir):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(1)
    saved = xrv.models.DenseNet(num_classes=18, in_channels=1)   # what xrv's release files hold
    xrv_dir.mkdir(parents=True)
    torch.save(saved, xrv_dir / ALL_FILE)
    model = create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    _check_loaded(model, saved)


def test_a_pickle_naming_other_code_is_refused(xrv_dir):
    xrv_dir.mkdir(parents=True)
    torch.save({"model": xrv_shaped_densenet(), "trainer": np.random.default_rng(0)}, xrv_dir / ALL_FILE)
    with pytest.raises(ConfigError, match="refused to unpickle numpy"):
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)


def test_a_file_of_another_shape_is_reported_with_its_url(xrv_dir):
    xrv_dir.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), xrv_dir / ALL_FILE)
    with pytest.raises(WeightsUnavailable, match=f"not torchxrayvision's densenet121 file.*{XRV_WEIGHTS[ALL].url}"):
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)


def test_folding_reproduces_xrv_activations_on_our_inputs():
    """conv0 -> norm0 on our normalised input == the placed weights on xrv's [-1024, 1024] input (inside the padding)."""
    reference = xrv_shaped_densenet().eval()
    stem_xrv = torch.nn.Sequential(reference.features.conv0, reference.features.norm0)
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    ours = xrv_shaped_densenet(seed=5)
    ours.load_state_dict({**reference.state_dict(), **fold_input_scaling(state)})
    stem_ours = torch.nn.Sequential(ours.features.conv0, ours.features.norm0).eval()
    grey = torch.randint(0, 256, (2, 1, 64, 64)).float()
    z = (grey / 255 - GREY_MEAN) / GREY_STD
    with torch.no_grad():
        want, got = stem_xrv(xrv_input(z)), stem_ours(z)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))   # conv0's zero padding differs at the border
    torch.testing.assert_close(got[inner], want[inner], rtol=1e-3, atol=1e-3)
    assert (got[inner] - want[inner]).abs().max() < 1e-2 * want[inner].abs().max()


# ---------------------------------------------------------------- a study records the run as skipped

def test_study_with_xrv_init_offline_records_skipped_with_the_file_to_place(tmp_path, xrv_dir, monkeypatch):
    from medtransfer.report import write_report
    from medtransfer.study import StudyOptions, run_study

    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    spec = {"name": "xrv offline",
            "base": {"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                     "task": {"kind": "binary"}, "image_size": 28,
                     "model": {"arch": "densenet121", "init": f"xrv:{ALL}"},
                     "train": {"epochs": 1, "min_steps": 0, "n_train": 20, "threads": 1}},
            "grid": {"train.seed": [0]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "S"
    start = time.monotonic()
    summary = run_study(path, out, StudyOptions(data_root=tmp_path / "no-data", probe=False))
    write_report(out)   # what `medtransfer study run` does after run_study
    assert summary.counts.get("skipped") == 1 and not summary.counts.get("failed")
    with sqlite3.connect(out / "results.sqlite") as db:
        (status, reason, init), = db.execute("SELECT status, reason, init FROM runs").fetchall()
    assert (status, init) == ("skipped", f"xrv:{ALL}")
    assert ALL_FILE in reason and str(xrv_dir) in reason
    assert time.monotonic() - start < 60
    assert ALL_FILE in (out / "report.html").read_text()


# ---------------------------------------------------------------- the run and the report say it may leak

def test_run_on_nih_images_warns_and_is_marked(xrv_dir, tmp_path):
    from medtransfer.runs.cnn import pretraining_overlap

    lines = []
    nih = _cfg(arch="densenet121", init=f"xrv:{ALL}")
    assert pretraining_overlap(nih, lines.append) == {"pretraining_overlap": f"xrv:{ALL} saw {NIH}"}
    assert any(line.startswith("WARNING") and NIH in line for line in lines)
    lines.clear()
    other = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"},
                              "image_size": 28, "model": {"arch": "densenet121", "init": f"xrv:{ALL}"}})
    assert pretraining_overlap(other, lines.append) == {}
    assert any("224 px" in line for line in lines) and any(NIH in line for line in lines)
    assert not any(line.startswith("WARNING") for line in lines)
    assert pretraining_overlap(_cfg(arch="densenet121", init="scratch"), lines.append) == {}
