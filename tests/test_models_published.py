"""Published backbones (issue 25 item 1): timm hf-hub names, transformers (RAD-DINO's way) and open_clip
(BiomedCLIP's way), each loaded offline from a Hugging Face cache holding a tiny random model saved in that
library's own format, through the same ``create_model`` call the real weights go through.

The tiny models stand in for the real ones (DINOv2 ViT-S/14, RAD-DINO, BiomedCLIP: hundreds of MB that
are never committed): same files, same library calls, a few thousand parameters.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.config import config_from_dict
from medtransfer.errors import ConfigError, WeightsUnavailable
from medtransfer.kinds import PRETRAINED, Init, InitKind, Strategy
from medtransfer.models import create_model, load_weights, save_weights
from medtransfer.models.inputs import GREY_MEAN, GREY_STD
from medtransfer.models.published import reading_cache

timm = pytest.importorskip("timm")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMM_REPO, HF_REPO, CLIP_REPO, BERT_REPO = ("medtransfer-test/tiny-vit", "medtransfer-test/tiny-rad-dino",
                                            "medtransfer-test/tiny-biomedclip", "medtransfer-test/tiny-bert")


def quiet(_line):
    pass


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache at $HF_HOME/hub, downloads off (what a hospital workstation has)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MEDTRANSFER_OFFLINE", raising=False)   # so the message names HF_HUB_OFFLINE
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    return cache


def place(cache: Path, repo: str, folder: Path) -> None:
    """Put ``folder``'s files into the cache as huggingface_hub lays out a downloaded repository."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, root / "snapshots" / COMMIT, dirs_exist_ok=True)


# ---------------------------------------------------------------- tiny models in each library's format

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM_DATA = dict(input_size=(3, 32, 32), crop_pct=0.875, interpolation="bilinear", mean=IMAGENET_MEAN,
                 std=IMAGENET_STD)


def save_tiny_timm_vit(folder: Path) -> torch.nn.Module:
    """timm's save_for_hf: config.json (architecture, model_args, pretrained_cfg with the data config, as a
    DINOv2 repository's: ImageNet mean / std) + model.safetensors."""
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=4, num_heads=2)
    model = timm.create_model("test_vit", pretrained=False, **args)
    timm.models.save_for_hf(model, str(folder), model_args=args, safe_serialization=True, data_config=TIMM_DATA)
    return model


def save_tiny_dinov2(folder: Path) -> torch.nn.Module:
    """transformers' save_pretrained of a Dinov2Model and RAD-DINO's kind of image processor."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                       intermediate_size=32, image_size=28, patch_size=7)
    model = transformers.Dinov2Model(config)
    model.save_pretrained(folder)
    transformers.BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                   do_center_crop=True, image_mean=[0.5307] * 3, image_std=[0.2583] * 3,
                                   resample=3).save_pretrained(folder)
    return model


def save_tiny_biomedclip(cache: Path, tmp: Path) -> torch.nn.Module:
    """BiomedCLIP's layout: open_clip_config.json (a timm ViT image tower, a Hugging Face BERT text tower named
    by repository) + open_clip_pytorch_model.bin, and the BERT's config.json in its own repository."""
    open_clip = pytest.importorskip("open_clip")
    transformers = pytest.importorskip("transformers")
    bert = tmp / "bert"
    transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=32).save_pretrained(bert)
    place(cache, BERT_REPO, bert)
    clip = tmp / "clip"
    clip.mkdir()
    config = {"model_cfg": {"embed_dim": 8,
                            "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False,
                                           "timm_pool": "", "timm_proj": "linear", "image_size": 160},
                            "text_cfg": {"hf_model_name": BERT_REPO, "hf_tokenizer_name": BERT_REPO,
                                         "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                                         "context_length": 16}},
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    (clip / "open_clip_config.json").write_text(json.dumps(config))
    with reading_cache(cache):
        model = open_clip.create_model(f"local-dir:{clip}", load_weights=False, pretrained_text=False)
    torch.save(model.state_dict(), clip / "open_clip_pytorch_model.bin")
    place(cache, CLIP_REPO, clip)
    return model


@pytest.fixture
def tiny_timm(hf_cache, tmp_path):
    model = save_tiny_timm_vit(tmp_path / "timm")
    place(hf_cache, TIMM_REPO, tmp_path / "timm")
    return model


@pytest.fixture
def tiny_dinov2(hf_cache, tmp_path):
    model = save_tiny_dinov2(tmp_path / "dinov2")
    place(hf_cache, HF_REPO, tmp_path / "dinov2")
    return model


@pytest.fixture
def tiny_biomedclip(hf_cache, tmp_path):
    return save_tiny_biomedclip(hf_cache, tmp_path)


ARCHS = {"timm": f"timm:hf-hub:{TIMM_REPO}", "hf": f"hf:{HF_REPO}", "openclip": f"openclip:hf-hub:{CLIP_REPO}"}


def grey(n: int = 2, size: int = 24, seed: int = 0) -> torch.Tensor:
    """medtransfer's model input: one grey channel, (x/255 - GREY_MEAN) / GREY_STD."""
    x = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    return (x - GREY_MEAN) / GREY_STD


# ---------------------------------------------------------------- syntax

def test_pretrained_is_a_bare_init_word_and_fits_only_published_archs():
    assert Init.parse("pretrained") == PRETRAINED and str(PRETRAINED) == "pretrained"
    assert PRETRAINED.kind is InitKind.PRETRAINED
    base = {"data": {"source": "medmnist", "name": "pneumoniamnist"}, "task": {"kind": "binary"}}
    for arch in ARCHS.values():
        assert config_from_dict({**base, "model": {"arch": arch, "init": "pretrained"}}).model.init == PRETRAINED
        with pytest.raises(ConfigError, match="model.init pretrained, not imagenet"):
            config_from_dict({**base, "model": {"arch": arch, "init": "imagenet"}})
    for arch in ("resnet18", "timm:resnet18"):
        with pytest.raises(ConfigError, match="published backbone's own weights"):
            config_from_dict({**base, "model": {"arch": arch, "init": "pretrained"}})
    with pytest.raises(ConfigError, match="published backbone's own weights"):
        create_model("resnet18", 2, init="pretrained", log=quiet)


# ---------------------------------------------------------------- the one-line offline error

@pytest.mark.parametrize("family, files", [
    ("timm", ["config.json", "model.safetensors"]),
    ("hf", ["config.json", "preprocessor_config.json", "model.safetensors"]),
    ("openclip", ["open_clip_config.json", "open_clip_pytorch_model.bin"]),
])
def test_absent_repository_offline_is_one_line_naming_repo_files_and_cache(hf_cache, family, files):
    arch = ARCHS[family]
    repo = arch.split(":")[-1]
    with pytest.raises(WeightsUnavailable) as caught:
        create_model(arch, 2, init="pretrained", log=quiet)
    message = str(caught.value)
    assert "\n" not in message
    assert repo in message and str(hf_cache) in message and "HF_HUB_OFFLINE" in message
    for name in files:
        assert name in message
    assert f"hf download {repo}" in message


def test_cli_exits_2_with_the_line_and_no_traceback(hf_cache, tmp_path, capsys):
    from medtransfer.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"data": {"source": "medmnist", "name": "pneumoniamnist"},
                                  "task": {"kind": "binary"}, "image_size": 28,
                                  "model": {"arch": ARCHS["hf"], "init": "pretrained"},
                                  "train": {"epochs": 1, "min_steps": 0, "n_train": 20, "threads": 1}}))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert HF_REPO in err and "preprocessor_config.json" in err and "Traceback" not in err


# ---------------------------------------------------------------- loading the tiny models offline

def _backbone_state(model) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone.encoder."): v for k, v in model.state_dict().items()
            if k.startswith("backbone.encoder.")}


def test_timm_hub_model_loads_its_weights_and_its_data_config(tiny_timm):
    lines = []
    model = create_model(ARCHS["timm"], 3, init="pretrained", log=lines.append)
    ours, saved = _backbone_state(model), tiny_timm.state_dict()
    assert set(ours) == {k for k in saved if not k.startswith("head.")}
    for key, value in ours.items():
        torch.testing.assert_close(value, saved[key])
    # the repository's data config: 32 px at crop_pct 0.875 -> resize to 36, centre-crop 32; ImageNet mean / std
    adapt = model.backbone.adapt
    assert (adapt.resize, adapt.size, adapt.mode) == (36, 32, "bilinear") and model.input_size == 32
    torch.testing.assert_close(adapt.scale.flatten(), GREY_STD / torch.tensor(IMAGENET_STD))
    assert model(grey()).shape == (2, 3)
    assert any("init pretrained from" in line and "timm's data config" in line for line in lines)


def test_adapter_feeds_the_authors_input(tiny_timm):
    """The network sees the grey image replicated to RGB, resized, cropped and normalised per channel."""
    model = create_model(ARCHS["timm"], 1, init="pretrained", log=quiet).eval()
    z = grey(size=36)                                # already at the resize size: only the crop and the colours
    x = (z * GREY_STD + GREY_MEAN)[..., 2:34, 2:34]  # x / 255, centre 32 of 36
    want = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.backbone.adapt(z), want)
    tiny_timm.eval()
    with torch.no_grad():   # timm's pooled features, as create_model(num_classes=0) gives them
        want_features = tiny_timm.forward_head(tiny_timm.forward_features(want), pre_logits=True)
        torch.testing.assert_close(model.backbone(z), want_features)


def test_adapter_matches_timms_own_eval_transform_on_an_image(tiny_timm):
    """From a 64 px grey image, what timm's eval transform of the repository's data config makes of it (PIL
    resize and crop, RGB, normalise) and what the adapter makes of medtransfer's input agree."""
    from PIL import Image

    ramp = np.linspace(0, 255, 64)
    pixels = np.clip(np.add.outer(ramp, ramp) / 2 + 20 * np.sin(np.arange(64) / 5)[None], 0, 255).astype(np.uint8)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(TIMM_DATA), is_training=False)
    want = transform(Image.fromarray(pixels).convert("RGB")).unsqueeze(0)
    model = create_model(ARCHS["timm"], 1, init="pretrained", log=quiet)
    z = (torch.from_numpy(pixels).float()[None, None] / 255 - GREY_MEAN) / GREY_STD
    got = model.backbone.adapt(z)
    assert got.shape == want.shape == (1, 3, 32, 32)
    assert (got - want).abs().mean() < 0.01 and (got - want).abs().max() < 0.05   # PIL's filter vs torch's
def test_transformers_model_loads_with_its_processor_config(tiny_dinov2):
    model = create_model(ARCHS["hf"], 2, init="pretrained", log=quiet).eval()
    ours = _backbone_state(model)
    for key, value in tiny_dinov2.state_dict().items():
        torch.testing.assert_close(ours[f"model.{key}"], value)
    adapt = model.backbone.adapt
    assert (adapt.resize, adapt.size) == (28, 28)
    torch.testing.assert_close(adapt.shift.flatten(), torch.full((3,), (GREY_MEAN - 0.5307) / 0.2583))
    z = grey(size=28)
    pixels = ((z * GREY_STD + GREY_MEAN - 0.5307) / 0.2583).expand(-1, 3, -1, -1)
    with torch.no_grad():   # the pooled output RAD-DINO's model card reads: the CLS token after the final norm
        want = tiny_dinov2.eval()(pixel_values=pixels).pooler_output
        torch.testing.assert_close(model.backbone(z), want, rtol=1e-4, atol=1e-5)


def test_open_clip_tower_loads_and_embeds_as_encode_image(tiny_biomedclip):
    model = create_model(ARCHS["openclip"], 2, init="pretrained", log=quiet).eval()
    assert model.num_features == 8 and model.input_size == 160
    ours = _backbone_state(model)
    visual = {k.removeprefix("visual."): v for k, v in tiny_biomedclip.state_dict().items() if k.startswith("visual.")}
    assert set(ours) == set(visual)
    for key, value in visual.items():
        torch.testing.assert_close(ours[key], value)
    z = grey(size=160)
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    pixels = (z * GREY_STD + GREY_MEAN - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(z), tiny_biomedclip.eval().encode_image(pixels),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["timm", "hf", "openclip"])
def test_layer_groups_split_the_blocks_in_half(request, family):
    request.getfixturevalue({"timm": "tiny_timm", "hf": "tiny_dinov2", "openclip": "tiny_biomedclip"}[family])
    model = create_model(ARCHS[family], 2, init="pretrained", log=quiet)
    early, late, head = model.layer_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    early_names = [names[id(p)] for m in early for p in m.parameters()]
    late_names = [names[id(p)] for m in late for p in m.parameters()]
    blocks = {"timm": ("blocks.", 4), "hf": ("encoder.layer.", 4), "openclip": ("trunk.blocks.", 6)}[family]
    prefix, count = blocks
    def block_of(name):
        rest = name.split(prefix, 1)[1]
        return int(rest.split(".")[0])
    assert {block_of(n) for n in early_names if prefix in n} == set(range(count // 2))
    assert {block_of(n) for n in late_names if prefix in n} == set(range(count // 2, count))
    assert any("patch" in n for n in early_names) and not any("patch" in n for n in late_names)
    assert not any(n.startswith("head.") for n in early_names + late_names)


def test_scratch_builds_the_architecture_from_the_config_alone(hf_cache, tmp_path):
    """predict and checkpoint: inits rebuild the arch without its weights: the config files are enough."""
    model = save_tiny_timm_vit(tmp_path / "timm")
    (tmp_path / "timm" / "model.safetensors").unlink()
    place(hf_cache, TIMM_REPO, tmp_path / "timm")
    built = create_model(ARCHS["timm"], 2, init="scratch", log=quiet)
    assert set(_backbone_state(built)) == {k for k in model.state_dict() if not k.startswith("head.")}
    with pytest.raises(WeightsUnavailable, match="model.safetensors"):
        create_model(ARCHS["timm"], 2, init="pretrained", log=quiet)


def test_a_damaged_weights_file_is_one_line(hf_cache, tmp_path):
    save_tiny_timm_vit(tmp_path / "timm")
    (tmp_path / "timm" / "model.safetensors").write_bytes(b"not a safetensors file")
    place(hf_cache, TIMM_REPO, tmp_path / "timm")
    with pytest.raises(WeightsUnavailable) as caught:
        create_model(ARCHS["timm"], 2, init="pretrained", log=quiet)
    assert "cannot be loaded" in str(caught.value) and "\n" not in str(caught.value)
    assert "models--medtransfer-test--tiny-vit" in str(caught.value)


def test_a_trained_run_reloads_into_the_scratch_architecture(tiny_dinov2, tmp_path):
    model = create_model(ARCHS["hf"], 2, init="pretrained", log=quiet)
    torch.nn.init.normal_(model.head[1].weight)
    save_weights(model, tmp_path / "model.safetensors")
    again = load_weights(create_model(ARCHS["hf"], 2, init="scratch", log=quiet), tmp_path / "model.safetensors")
    z = grey(size=28)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(z), model.eval()(z))


def test_grad_cam_is_refused_for_a_vision_transformer(tiny_timm):
    """Its only convolution is the patch embedding: a map of it would show the input, not the evidence."""
    from medtransfer.models.cam import cam_target_layer

    model = create_model(ARCHS["timm"], 2, init="pretrained", log=quiet)
    with pytest.raises(ConfigError, match="vision transformer"):
        cam_target_layer(model, 28)


# ---------------------------------------------------------------- training through medtransfer's train

@pytest.mark.parametrize("family, strategy", [("timm", "full"), ("hf", "frozen"), ("openclip", "gradual")])
def test_train_run_on_demo_data(request, tmp_path, family, strategy):
    request.getfixturevalue({"timm": "tiny_timm", "hf": "tiny_dinov2", "openclip": "tiny_biomedclip"}[family])
    from medtransfer.runs.cnn import train_run

    cfg = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                            "task": {"kind": "binary"}, "image_size": 28,
                            "model": {"arch": ARCHS[family], "init": "pretrained"},
                            "train": {"epochs": 2, "min_steps": 0, "steps": 4, "n_train": 40, "batch_size": 10,
                                      "strategy": strategy, "threads": 1, "selection": "holdout"}})
    before = create_model(ARCHS[family], 1, init="pretrained", log=quiet).state_dict()
    metrics = train_run(cfg, tmp_path / "run", data_root=tmp_path / "no-data", echo=False, progress=False)
    assert 0.0 <= metrics.auroc("test") <= 1.0 and metrics.n_train_images == 40
    trained = load_weights(create_model(ARCHS[family], 1, init="scratch", log=quiet), tmp_path / "run" / "model.safetensors")
    after = trained.state_dict()
    moved = [k for k in before if k.startswith("backbone.") and not torch.equal(before[k], after[k])]
    if strategy == "frozen":
        assert not moved            # a frozen backbone is bit-identical after training
    else:
        assert moved
    log = (tmp_path / "run" / "train.log").read_text()
    assert "init pretrained from" in log


# ---------------------------------------------------------------- in a study

def test_study_trains_a_placed_backbone_and_skips_an_absent_one_naming_its_files(tiny_dinov2, tmp_path):
    import sqlite3

    import yaml

    from medtransfer.report import write_report
    from medtransfer.study import StudyOptions, run_study

    absent = "timm:hf-hub:medtransfer-test/not-placed"
    spec = {"name": "published offline",
            "base": {"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                     "task": {"kind": "binary"}, "image_size": 28, "model": {"arch": ARCHS["hf"], "init": "pretrained"},
                     "train": {"epochs": 1, "min_steps": 0, "steps": 2, "n_train": 20, "batch_size": 10,
                               "strategy": "frozen", "threads": 1, "selection": "holdout"}},
            "grid": {"model.arch": [ARCHS["hf"], absent]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "S"
    summary = run_study(path, out, StudyOptions(data_root=tmp_path / "no-data", probe=False))
    write_report(out)
    assert summary.counts.get("done") == 1 and summary.counts.get("skipped") == 1 and not summary.counts.get("failed")
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = dict(db.execute("SELECT arch, status || ' ' || coalesce(reason, '') FROM runs").fetchall())
    assert rows[ARCHS["hf"]].startswith("done")
    assert "medtransfer-test/not-placed" in rows[absent] and "config.json" in rows[absent]
    page = (out / "report.html").read_text()
    assert ARCHS["hf"] in page and "medtransfer-test/not-placed" in page


# ---------------------------------------------------------------- examples/foundation-chest.yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "foundation-chest.yaml"


@pytest.mark.skipif("probe" not in {s.value for s in Strategy},
                    reason="examples/foundation-chest.yaml needs train.strategy: probe (issue 25 item 2)")
def test_foundation_example_expands_to_its_recipes():
    from medtransfer.study.grid import expand
    from medtransfer.study.spec import load_spec

    plan = expand(load_spec(EXAMPLE))
    quickstart = expand(load_spec(EXAMPLE.parent / "quickstart.yaml"))
    cnn = [r for r in plan.runs if not r.is_baseline]
    assert len(cnn) == 117 and len(plan.runs) - len(cnn) == 9
    assert {s.run_id for s in plan.sources} == {s.run_id for s in quickstart.sources}   # the same pretrained sources
    published = [r for r in cnn if r.config.model.arch != "resnet18"]
    assert len(published) == 2 * 3 * 3 * 3
    assert all(r.config.model.init == PRETRAINED and r.config.train.discriminative == 0.01 for r in published)
    assert {str(r.config.train.strategy) for r in published} == {"probe", "frozen", "full"}
    assert not any(r.config.model.init.kind is InitKind.SCRATCH and str(r.config.train.strategy) != "full" for r in cnn)


def test_dry_run_names_the_files_a_pretrained_run_would_miss(tiny_dinov2, tmp_path):
    import yaml

    from medtransfer.study import StudyOptions, run_study

    absent = "openclip:hf-hub:medtransfer-test/not-placed"
    spec = {"base": {"data": {"source": "medmnist", "name": "pneumoniamnist", "split": "given"},
                     "task": {"kind": "binary"}, "image_size": 28, "model": {"arch": ARCHS["hf"], "init": "pretrained"},
                     "train": {"strategy": "frozen", "n_train": 20}},
            "grid": {"model.arch": [ARCHS["hf"], absent], "train.seed": [0, 1]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    text = run_study(path, None, StudyOptions(data_root=tmp_path / "no-data", dry_run=True, probe=False)).text
    warnings = [line for line in text.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "2 run(s)" in warnings[0]
    assert "medtransfer-test/not-placed" in warnings[0] and "open_clip_config.json" in warnings[0]
    assert "text model" in warnings[0]   # which one, open_clip_config.json says once it is there


def test_open_clip_needs_the_text_models_config_its_config_names(tiny_biomedclip, hf_cache):
    from medtransfer.models.registry import published_weights_missing

    assert published_weights_missing(ARCHS["openclip"]) is None
    shutil.rmtree(hf_cache / ("models--" + BERT_REPO.replace("/", "--")))
    line = published_weights_missing(ARCHS["openclip"])
    assert f"config.json of {BERT_REPO}" in line and CLIP_REPO not in line.split(" there ")[0].split("put ")[1]
    with pytest.raises(WeightsUnavailable, match=f"config.json of {BERT_REPO}"):
        create_model(ARCHS["openclip"], 2, init="pretrained", log=quiet)


# ---------------------------------------------------------------- RAD-DINO saw NIH ChestX-ray14 images

def test_rad_dino_on_nih_images_warns_and_the_report_marks_it():
    """RAD-DINO's pretraining (its paper and model card) included NIH ChestX-ray14: a run on NIH images says its
    test AUROC is optimistic, a run elsewhere names the collections, and the report marks the recipe and notes it."""
    import pandas as pd

    from medtransfer.kinds import RunRole
    from medtransfer.report.tables import PRETRAINED_MARK, marked_recipe, pretraining_notes
    from medtransfer.runs.cnn import pretraining_overlap

    rad_dino = {"arch": "hf:microsoft/rad-dino", "init": "pretrained"}
    nih = config_from_dict({"data": {"source": "nih14", "path": "nih14-mini"}, "task": {"kind": "multilabel"},
                            "model": rad_dino})
    lines = []
    assert pretraining_overlap(nih, lines.append) == {
        "pretraining_overlap": "hf:microsoft/rad-dino saw NIH ChestX-ray14"}
    assert lines[0].startswith("WARNING") and "optimistic" in lines[0]
    pneumonia = config_from_dict({"data": {"source": "medmnist", "name": "pneumoniamnist"},
                                  "task": {"kind": "binary"}, "model": rad_dino})
    lines.clear()
    assert pretraining_overlap(pneumonia, lines.append) == {}
    assert lines == ["note: hf:microsoft/rad-dino was pretrained on MIMIC-CXR, CheXpert, NIH ChestX-ray14, PadChest, "
                     "BRAX: test images from these collections may have been seen in pretraining"]
    biomedclip = {"arch": "openclip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                  "init": "pretrained"}
    assert pretraining_overlap(config_from_dict({**nih.model_dump(mode="json"), "model": biomedclip}), quiet) == {}

    runs = pd.DataFrame({"role": [RunRole.GRID] * 3, "init": ["pretrained", "pretrained", "scratch"],
                         "arch": ["hf:microsoft/rad-dino", "timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m",
                                  "resnet18"],
                         "task": ["nih14:multilabel"] * 3, "target_images": ["NIH ChestX-ray14"] * 3})
    notes = pretraining_notes(runs)
    assert len(notes) == 1 and notes[0].startswith(f"{PRETRAINED_MARK} hf:microsoft/rad-dino was pretrained on")
    assert "tests on images these weights were trained on" in notes[0]
    row = {"init": "pretrained", "arch": "hf:microsoft/rad-dino", "method": "cnn", "recipe": "pretrained / probe"}
    dinov2 = {**row, "arch": "timm:hf-hub:timm/vit_small_patch14_dinov2.lvd142m"}
    assert marked_recipe(pd.Series(row)).endswith(PRETRAINED_MARK)
    assert not marked_recipe(pd.Series(dinov2)).endswith(PRETRAINED_MARK)


# ---------------------------------------------------------------- in advise: "or just a probe on a foundation model?"

def test_advise_compares_a_placed_backbone_and_names_the_files_of_an_absent_one(tiny_timm, tmp_path):
    """``--backbone``: a published backbone is a candidate with its own weights; it is ranked on frozen features
    and searched, its probe first; an absent one is listed as unusable with the files and folder it needs."""
    from medtransfer import api
    from medtransfer.advise.candidates import parse_backbones
    from medtransfer.errors import MedtransferError

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {source: medmnist, name: pneumoniamnist, split: given}\ntask: {kind: binary}\n"
                   "image_size: 28\nmodel: {arch: resnet18, init: scratch}\n"
                   "train: {epochs: 2, min_steps: 0, steps: 6, n_train: 40, batch_size: 10, threads: 1, "
                   "selection: holdout}\n")
    absent = "hf:medtransfer-test/not-placed"
    path = api.advise(cfg, tmp_path / "advice", data_root=tmp_path / "no-data", budget="10m", echo=False,
                      backbones=f"{ARCHS['timm']},{absent}")
    advice = json.loads(path.read_text())
    by_name = {c["name"]: c for c in advice["candidates"]}
    assert by_name[ARCHS["timm"]]["available"] and by_name[ARCHS["timm"]]["init"] == "pretrained"
    assert not by_name[absent]["available"] and "config.json" in by_name[absent]["reason"]
    assert ranked_first_probe(advice, ARCHS["timm"])
    with pytest.raises(MedtransferError, match=r"--backbone 'resnet18': not a published backbone"):
        parse_backbones(["resnet18"])
    with pytest.raises(MedtransferError, match="given twice"):
        parse_backbones([f"{ARCHS['hf']},{ARCHS['hf']}"])


def ranked_first_probe(advice: dict, arch: str) -> bool:
    """The backbone was scored on frozen features, and its probe arm was the first trial of the search."""
    scores = {s["name"]: s for s in advice["ranking"]["scores"]}
    first = advice["search"]["rungs"][0]["trials"]
    own = [t for t in first if t["init_name"] == arch]
    probes_first = [t["strategy"] for t in first][:sum(t["strategy"] == "probe" for t in first)]
    return (scores[arch]["rank"] is not None and set(probes_first) == {"probe"}
            and any(t["strategy"] == "probe" and t["val_auroc"] is not None for t in own)
            and {t["strategy"] for t in own} > {"probe"})   # and its fine-tuned arms were searched too
