"""Model factory: shapes, grey input, the three layer groups, the head, and bad input."""
import sys

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError, WeightsUnavailable
from medtransfer.models import Classifier, create_model, list_archs


def quiet(_line: str) -> None:
    pass


@pytest.mark.parametrize("arch,size,features", [
    ("resnet18", 64, 512), ("resnet50", 32, 2048), ("densenet121", 32, 1024)])
def test_forward_shape_with_one_channel_input(arch, size, features):
    model = create_model(arch, num_outputs=3, log=quiet)
    assert isinstance(model, Classifier) and model.arch == arch and model.num_features == features
    model.eval()
    with torch.no_grad():
        assert model.backbone(torch.randn(2, 1, size, size)).shape == (2, features)
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_first_conv_takes_one_channel_and_three_on_request():
    assert create_model("resnet18", 2, log=quiet).backbone.conv1.in_channels == 1
    assert create_model("densenet121", 2, log=quiet).backbone.features.conv0.in_channels == 1
    rgb = create_model("resnet18", 2, in_chans=3, log=quiet)
    assert rgb.backbone.conv1.in_channels == 3
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_list_archs_names_the_torchvision_family():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "densenet121", "densenet169"} <= set(list_archs())


def _assert_partition(model: Classifier):
    groups = model.layer_groups()
    assert len(groups) == 3
    seen = {}
    for g, modules in enumerate(groups):
        for module in modules:
            for p in module.parameters():
                assert id(p) not in seen, f"parameter in groups {seen[id(p)]} and {g}"
                seen[id(p)] = g
    assert set(seen) == {id(p) for p in model.parameters()}
    assert all(sum(p.numel() for m in modules for p in m.parameters()) > 0 for modules in groups)
    return groups


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "densenet121"])
def test_layer_groups_partition_all_parameters(arch):
    _assert_partition(create_model(arch, 4, log=quiet))


def test_resnet_groups_are_stem_and_early_blocks_then_late_blocks_then_head():
    model = create_model("resnet18", 2, log=quiet)
    early, late, head = model.layer_groups()
    b = model.backbone
    assert early == [b.conv1, b.bn1, b.layer1, b.layer2]
    assert late == [b.layer3, b.layer4]
    assert head == [model.head]


def test_densenet_groups_split_after_transition2():
    model = create_model("densenet121", 2, log=quiet)
    early, late, _ = model.layer_groups()
    f = model.backbone.features
    assert early == [f.conv0, f.norm0, f.denseblock1, f.transition1, f.denseblock2, f.transition2]
    assert late == [f.denseblock3, f.transition3, f.denseblock4, f.norm5]


def test_dropout_sits_in_the_head_before_the_linear_layer():
    model = create_model("resnet18", 5, dropout=0.3, log=quiet)
    assert isinstance(model.head, nn.Sequential) and len(model.head) == 2
    assert isinstance(model.head[0], nn.Dropout) and model.head[0].p == 0.3
    assert isinstance(model.head[1], nn.Linear) and model.head[1].in_features == 512
    assert model.head[1].out_features == 5
    assert {"head.1.weight", "head.1.bias"} <= set(model.state_dict())
    assert not any(isinstance(m, nn.Dropout) for m in model.backbone.modules())


def test_freezing_the_early_group_leaves_the_rest_trainable():
    model = create_model("resnet18", 2, log=quiet)
    early, late, head = model.layer_groups()
    for module in early:
        module.requires_grad_(False)
    assert not model.backbone.conv1.weight.requires_grad
    assert model.backbone.layer3[0].conv1.weight.requires_grad and model.head[1].weight.requires_grad


def test_unknown_arch_is_a_config_error_listing_valid_ones():
    with pytest.raises(ConfigError, match="vgg16") as err:
        create_model("vgg16", 2, log=quiet)
    assert "resnet18" in str(err.value) and "timm:NAME" in str(err.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(init="imagenette"), "model.init"),
    (dict(init="source:nih"), "checkpoint:PATH"),
    (dict(dropout=1.0), "dropout"),
    (dict(num_outputs=0), "num_outputs"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    args = dict(arch="resnet18", num_outputs=2, log=quiet) | kwargs
    with pytest.raises(ConfigError, match=match):
        create_model(**args)


# ---------------------------------------------------------------- timm family

timm = pytest.importorskip("timm")


def test_timm_resnet18_builds_with_one_channel(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_model("timm:resnet18", 3, dropout=0.1, log=quiet)
    assert model.backbone.conv1.in_channels == 1 and model.num_features == 512
    assert "backbone.conv1.weight" in model.state_dict()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    early, late, _ = _assert_partition(model)
    b = model.backbone
    assert early == [b.conv1, b.bn1, b.layer1, b.layer2] and late == [b.layer3, b.layer4]


def test_timm_vit_groups_cover_parameters_held_by_the_model_itself():
    model = create_model("timm:vit_tiny_patch16_224", 2, log=quiet)
    early, late, _ = _assert_partition(model)
    early_params = {id(p) for m in early for p in m.parameters()}
    assert id(model.backbone.cls_token) in early_params and id(model.backbone.pos_embed) in early_params
    assert model.backbone.blocks[0] in early and model.backbone.blocks[-1] in late
    for module in early:
        module.requires_grad_(False)
    assert not model.backbone.cls_token.requires_grad


def test_timm_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_net"):
        create_model("timm:no_such_net", 2, log=quiet)


def test_timm_missing_says_pip_install_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match="pip install timm"):
        create_model("timm:resnet18", 2, log=quiet)


def test_timm_imagenet_offline_and_uncached_fails_fast_naming_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(WeightsUnavailable, match="timm:resnet18"):
        create_model("timm:resnet18", 2, init="imagenet", log=quiet)
