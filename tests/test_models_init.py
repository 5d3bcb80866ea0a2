"""Where weights come from: the ImageNet cache (offline-safe), checkpoints, our safetensors files."""
import re
import socket
import threading
import time

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from medtransfer.errors import ConfigError, WeightsUnavailable
from medtransfer.models import create_model, load_checkpoint_into, load_weights, save_weights
from medtransfer.models import init as init_mod
from medtransfer.models.torchvision_family import imagenet_url

RESNET18_FILE = "resnet18-f37072fd.pth"


class NotATensor:
    """Saved inside a torch file to check that loading refuses to unpickle objects."""


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty $TORCH_HOME; returns its hub/checkpoints folder (not yet created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def backbone_keys(model):
    return [k for k in model.state_dict() if k.startswith("backbone.")]


# ---------------------------------------------------------------- imagenet

def test_imagenet_urls_are_the_v1_files():
    assert imagenet_url("resnet18").endswith("/" + RESNET18_FILE)
    assert imagenet_url("densenet121").endswith("/densenet121-a639ec97.pth")
    assert imagenet_url("resnet50").endswith("/resnet50-0676ba61.pth")


def test_imagenet_missing_fails_fast_naming_file_folder_and_url(torch_home, monkeypatch):
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)  # the download itself must fail fast
    if init_mod.reachable(imagenet_url("resnet18"), timeout=2) is None:
        pytest.skip("download.pytorch.org is reachable here; the offline failure cannot be shown")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        create_model("resnet18", 2, init="imagenet", log=lambda _: None)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert RESNET18_FILE in message and str(torch_home) in message and imagenet_url("resnet18") in message
    assert not torch_home.exists() or not any(torch_home.iterdir())  # no partial file left behind


def test_download_gives_up_when_dns_hangs(torch_home, monkeypatch):
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)
    monkeypatch.setattr(init_mod, "CONNECT_TIMEOUT_S", 0.5)
    release = threading.Event()

    def hung_dns(*_args, **_kwargs):
        release.wait(30)
        raise OSError("simulated DNS hang")

    monkeypatch.setattr(socket, "create_connection", hung_dns)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match=re.escape(RESNET18_FILE)):
        create_model("resnet18", 2, init="imagenet", log=lambda _: None)
    assert time.monotonic() - start < 3
    release.set()   # let the abandoned daemon thread finish quietly


def test_offline_flag_skips_the_download(torch_home, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    monkeypatch.setattr(init_mod, "download", lambda *a: pytest.fail("download attempted while offline"))
    with pytest.raises(WeightsUnavailable, match="MEDTRANSFER_OFFLINE=1"):
        create_model("resnet18", 2, init="imagenet", log=lambda _: None)


def test_cached_imagenet_file_loads_and_first_conv_is_the_rgb_sum(torch_home):
    torch.manual_seed(0)
    rgb = torchvision.models.resnet18()
    torch_home.mkdir(parents=True)
    torch.save(rgb.state_dict(), torch_home / RESNET18_FILE)
    lines = []
    model = create_model("resnet18", 2, init="imagenet", log=lines.append)
    assert torch.equal(model.backbone.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, rgb.bn1.running_var)
    assert any(RESNET18_FILE in line for line in lines)
    # a grey image through the summed kernel == the same image copied to R, G, B
    rgb.fc = torch.nn.Identity()
    rgb.eval(), model.eval()
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(grey), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_cached_densenet_file_with_legacy_keys_loads(torch_home):
    reference = torchvision.models.densenet121()
    # the 2017 file: old layer names and no BatchNorm num_batches_tracked
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
              for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch_home.mkdir(parents=True)
    torch.save(legacy, torch_home / "densenet121-a639ec97.pth")
    model = create_model("densenet121", 2, init="imagenet", log=lambda _: None)
    assert torch.equal(model.backbone.features.denseblock1.denselayer1.norm1.weight,
                       reference.features.denseblock1.denselayer1.norm1.weight)
    assert torch.equal(model.backbone.features.conv0.weight,
                       reference.features.conv0.weight.sum(dim=1, keepdim=True))


def test_wrong_file_in_the_cache_is_reported(torch_home):
    torch_home.mkdir(parents=True)
    torch.save({"something.else": torch.zeros(3)}, torch_home / RESNET18_FILE)
    with pytest.raises(WeightsUnavailable, match=RESNET18_FILE):
        create_model("resnet18", 2, init="imagenet", log=lambda _: None)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_loads_backbone_and_skips_a_head_of_another_size(tmp_path):
    source = create_model("resnet18", 5, log=lambda _: None)
    with torch.no_grad():
        source.backbone.layer3[0].conv1.weight.add_(1.0)  # differ from any fresh init
    save_weights(source, tmp_path / "source.safetensors")
    target = create_model("resnet18", 2, log=lambda _: None)
    lines = []
    loaded, skipped = load_checkpoint_into(target, tmp_path / "source.safetensors", lines.append)
    n = len(backbone_keys(target))
    assert (loaded, skipped) == (n, 2)
    assert f"loaded {n} of {n} backbone tensors, skipped 2 (head.1." in lines[0]
    for key, value in target.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(value, source.state_dict()[key]), key
    assert any(k.endswith("num_batches_tracked") for k in backbone_keys(target))


def test_checkpoint_init_through_create_model_keeps_a_matching_head(tmp_path):
    source = create_model("resnet18", 2, log=lambda _: None)
    save_weights(source, tmp_path / "w.safetensors")
    lines = []
    model = create_model("resnet18", 2, init=f"checkpoint:{tmp_path / 'w.safetensors'}", log=lines.append)
    assert torch.equal(model.head[1].weight, source.head[1].weight)
    assert "and the head, skipped 0" in lines[-1]


def test_plain_torchvision_state_dict_is_accepted(tmp_path):
    rgb = torchvision.models.resnet18()
    torch.save(rgb.state_dict(), tmp_path / "tv.pth")
    model = create_model("resnet18", 2, log=lambda _: None)
    loaded, skipped = load_checkpoint_into(model, tmp_path / "tv.pth", lambda _: None)
    assert (loaded, skipped) == (len(backbone_keys(model)), 2)  # fc.weight, fc.bias
    assert torch.equal(model.backbone.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))


def test_wrapped_and_data_parallel_state_dicts_are_accepted(tmp_path):
    source = create_model("resnet18", 2, log=lambda _: None)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    model = create_model("resnet18", 2, log=lambda _: None)
    loaded, skipped = load_checkpoint_into(model, tmp_path / "ckpt.pt", lambda _: None)
    assert skipped == 0 and loaded == len(source.state_dict())


def test_timm_state_dict_loads_into_a_grey_timm_model(tmp_path):
    timm = pytest.importorskip("timm")
    rgb = timm.create_model("resnet18", num_classes=1000)
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    model = create_model("timm:resnet18", 2, init=f"checkpoint:{tmp_path / 'timm.safetensors'}",
                         log=lambda _: None)
    assert torch.equal(model.backbone.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra": NotATensor()}, tmp_path / "evil.pth")
    model = create_model("resnet18", 2, log=lambda _: None)
    with pytest.raises(ConfigError, match="refused to unpickle") as err:
        load_checkpoint_into(model, tmp_path / "evil.pth", lambda _: None)
    assert "evil.pth" in str(err.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(WeightsUnavailable, match="nope.safetensors"):
        create_model("resnet18", 2, init=f"checkpoint:{tmp_path / 'nope.safetensors'}", log=lambda _: None)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    save_file({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, str(tmp_path / "dn.safetensors"))
    model = create_model("resnet18", 2, log=lambda _: None)
    with pytest.raises(ConfigError, match="none of its 1 tensors fit resnet18"):
        load_checkpoint_into(model, tmp_path / "dn.safetensors", lambda _: None)


# ---------------------------------------------------------------- our safetensors files

def test_save_and_load_weights_round_trip(tmp_path):
    model = create_model("resnet18", 3, log=lambda _: None).eval()
    save_weights(model, tmp_path / "run" / "weights.safetensors")
    again = load_weights(create_model("resnet18", 3, log=lambda _: None), tmp_path / "run" / "weights.safetensors")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again.eval()(x))


def test_load_weights_into_another_shape_is_a_config_error(tmp_path):
    save_weights(create_model("resnet18", 3, log=lambda _: None), tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="w.safetensors"):
        load_weights(create_model("resnet18", 2, log=lambda _: None), tmp_path / "w.safetensors")


def test_save_weights_handles_shared_and_non_contiguous_tensors(tmp_path):
    shared = torch.arange(6.0).reshape(2, 3)
    save_weights({"a": shared, "b": shared, "t": shared.T}, tmp_path / "s.bin")  # no .safetensors suffix
    back = init_mod.read_state_dict(tmp_path / "s.bin")
    assert torch.equal(back["a"], shared) and torch.equal(back["b"], shared) and torch.equal(back["t"], shared.T)
