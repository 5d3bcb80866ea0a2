"""Every path that reads a weights file answers a damaged one in one line naming the file and the cure.

Weights files travel between sites, caches and half-finished downloads, so each reader
(a checkpoint init, a run's own weights, the torchvision / timm / torchxrayvision caches)
is fed the same damaged files: truncated (zip and legacy format), random bytes, empty,
a plain Python pickle, a zip that is no checkpoint, a safetensors header that is not JSON,
and an HTML error page saved as the weights.
"""
import io
import pickle
import random
import zipfile

import pytest
import torch
import torchvision

from medtransfer.errors import ConfigError, WeightsUnavailable
from medtransfer.models import create_model, load_weights, save_weights
from medtransfer.models.torchvision_family import imagenet_url
from medtransfer.xrv_weights import XRV_WEIGHTS

ALL = "densenet121-res224-all"
RESNET18_FILE = "resnet18-f37072fd.pth"


def quiet(_line):
    pass


def _saved(obj, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    return buffer.getvalue()


def _malformed(kind: str) -> bytes:
    state = {"conv.weight": torch.randn(8, 3, 3, 3), "conv.bias": torch.zeros(8)}
    garbage_header = b'{"conv.weight": not json'
    return {
        "truncated": _saved(state)[:-200],
        "truncated legacy format": _saved(state, legacy=True)[:-200],
        "truncated legacy model": _saved(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), legacy=True)[:-100],
        "random bytes": random.Random(0).randbytes(4096),
        "empty": b"",
        "python pickle": pickle.dumps({"conv.weight": [[0.5]]}),
        "zip, no checkpoint": _zip_of_text(),
        "safetensors header garbage": len(garbage_header).to_bytes(8, "little") + garbage_header + bytes(64),
        "html error page": b"<html><body><h1>403 Forbidden</h1></body></html>\n",
    }[kind]


KINDS = ["truncated", "truncated legacy format", "truncated legacy model", "random bytes", "empty", "python pickle",
         "zip, no checkpoint", "safetensors header garbage", "html error page"]


def _one_line_naming(err, path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


# ---------------------------------------------------------------- files the user names

@pytest.mark.parametrize("kind", [k for k in KINDS if k != "truncated legacy model"])   # a model: "re-save it"
def test_checkpoint_init_from_a_damaged_file_is_one_line(tmp_path, kind):
    path = tmp_path / "weights.pth"
    path.write_bytes(_malformed(kind))
    with pytest.raises(ConfigError) as err:
        create_model("resnet18", 2, init=f"checkpoint:{path}", log=quiet)
    assert "replace it with a good copy" in _one_line_naming(err, path)


def test_a_truncated_run_weights_file_is_one_line(tmp_path):
    model = create_model("resnet18", 2, log=quiet)
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ConfigError) as err:
        load_weights(create_model("resnet18", 2, log=quiet), path)
    assert "not a readable safetensors file" in _one_line_naming(err, path)


# ---------------------------------------------------------------- the torchvision cache

@pytest.mark.parametrize("kind", KINDS)
def test_damaged_torchvision_cache_file_says_to_fetch_it_again(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tmp_path / "torch" / "hub" / "checkpoints" / RESNET18_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(_malformed(kind))
    with pytest.raises(WeightsUnavailable) as err:
        create_model("resnet18", 2, init="imagenet", log=quiet)
    message = _one_line_naming(err, path)
    assert f"delete it and put the file from {imagenet_url('resnet18')} there" in message
    assert message.count(str(path)) == 1


# ---------------------------------------------------------------- the torchxrayvision cache

@pytest.fixture
def xrv_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_XRV_DIR", str(tmp_path / "xrv"))
    path = tmp_path / "xrv" / XRV_WEIGHTS[ALL].file
    path.parent.mkdir()
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_xrv_file_says_to_fetch_it_again(xrv_file, kind):
    xrv_file.write_bytes(_malformed(kind))
    with pytest.raises(WeightsUnavailable) as err:
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    message = _one_line_naming(err, xrv_file)
    assert f"delete it and put the file from {XRV_WEIGHTS[ALL].url} there" in message


def _xrv_shaped_densenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=18)
    model.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def test_xrv_model_saved_in_the_legacy_format_loads(xrv_file):
    """torchxrayvision's release files are whole models pickled by torch < 1.6, a format weights_only cannot read."""
    saved = _xrv_shaped_densenet()
    xrv_file.write_bytes(_saved(saved, legacy=True))
    model = create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    assert torch.equal(model.backbone.features.denseblock4.denselayer16.conv2.weight,
                       saved.features.denseblock4.denselayer16.conv2.weight)


def test_real_xrv_class_saved_in_the_legacy_format_loads(xrv_file):
    xrv = pytest.importorskip("torchxrayvision")
    torch.manual_seed(1)
    saved = xrv.models.DenseNet(num_classes=18, in_channels=1)
    xrv_file.write_bytes(_saved(saved, legacy=True))
    model = create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    assert torch.equal(model.backbone.features.norm5.running_var, saved.features.norm5.running_var)


class RunsCode:
    """Pickles as a call to print: what a tampered file would do with os.system."""

    def __reduce__(self):
        return print, ("unpickling ran code",)


def test_legacy_format_pickle_naming_other_code_is_refused_in_one_line(xrv_file, capsys):
    xrv_file.write_bytes(_saved({"model": _xrv_shaped_densenet(), "payload": RunsCode()}, legacy=True))
    with pytest.raises(ConfigError) as err:
        create_model("densenet121", 2, init=f"xrv:{ALL}", log=quiet)
    assert "refused to unpickle builtins.print" in _one_line_naming(err, xrv_file)
    assert "unpickling ran code" not in capsys.readouterr().out


# ---------------------------------------------------------------- the timm cache

@pytest.mark.parametrize("kind", ["truncated", "random bytes", "empty", "safetensors header garbage"])
@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_damaged_timm_cache_file_says_to_fetch_it_again(tmp_path, monkeypatch, kind, name):
    pytest.importorskip("timm")
    from medtransfer.models import timm_family

    path = tmp_path / name
    path.write_bytes(_malformed(kind))
    monkeypatch.setattr(timm_family, "_cached_weights", lambda cfg: path)   # as if found in the Hugging Face cache
    with pytest.raises(WeightsUnavailable) as err:
        create_model("timm:resnet18", 2, init="imagenet", log=quiet)
    assert "delete the file and run once online" in _one_line_naming(err, path)
