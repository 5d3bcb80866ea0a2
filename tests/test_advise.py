"""advise: candidates, ranking with unusable features, a search blind to the test split, bad inputs, end to end.

LogME itself (informative features score above noise; equal to the plain fixed-point reference to
1e-6) is tested in test_evaluate_transferability.py; here it is only used.
"""
import dataclasses
import html
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.advise.candidates import list_candidates, parse_sources, source_candidate
from medtransfer.advise.features import CandidateFeatures
from medtransfer.advise.rank import rank_candidates
from medtransfer.advise.command import advise
from medtransfer.advise.workflow import check_training_set
from medtransfer.advise.plan import CostModel, SearchSpace, plan_search
from medtransfer.advise.search import curve_sizes, parse_budget, run_halving, search_data_of
from medtransfer.config import TrainConfig, config_from_dict, dump_config, load_config, load_yaml
from medtransfer.errors import DataError, MedtransferError
from medtransfer.kinds import IMAGENET, SCRATCH, Init
from medtransfer.models import Backbone, register_family
from medtransfer.errors import WeightsUnavailable
from medtransfer.runs.cnn import train_run
from medtransfer.runs.data_split import prepare_run_data
from synthetic import write_labelled_pngs

TINY_ARCH = "advise-test-cnn"
CONFIG = ("data: {source: csv, path: labels.csv, image_column: path, patient_column: patient}\n"
          "task: {kind: binary, label_column: finding}\n"
          "image_size: 24\n"
          f"model: {{arch: {TINY_ARCH}, init: scratch}}\n"
          "train: {epochs: 2, min_steps: 0, steps: 12, batch_size: 8, lr: 0.01, threads: 1}\n")
SMALL_SPACE = SearchSpace(strategies=("frozen", "full"), lr_policies=("constant",))
PROBE_SPACE = SearchSpace(strategies=("probe", "frozen", "full"), lr_policies=("constant",))
FREE = CostModel(step_seconds=0.0)


@register_family([TINY_ARCH])
def tiny_cnn(name, *, in_chans, pretrained, log):
    """A two-conv backbone: the advise code paths at a hundredth of resnet18's cost per step."""
    if pretrained:
        raise WeightsUnavailable(f"{name} has no ImageNet weights")
    module = nn.Sequential(nn.Conv2d(in_chans, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(module, 16, early=["0", "1"], late=["3", "4"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """100 synthetic 24-px PNGs (a weak brightness signal, so recipes differ) and a 20-step source run on them."""
    root = tmp_path_factory.mktemp("advise")
    write_labelled_pngs(root, n_images=100, signal=3)
    (root / "cfg.yaml").write_text(CONFIG)
    torch.set_num_threads(1)
    train_run(load_config(root / "cfg.yaml", ["train.steps=20"]), root / "source", root, echo=False, progress=False)
    return root


# ---------------------------------------------------------------------------------------------- inputs
def test_budget_and_sources_parse_and_refuse_in_one_line():
    assert parse_budget("10m") == 600 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45
    for bad in ("ten minutes", "0m", "-3m"):
        with pytest.raises(MedtransferError, match="--budget"):
            parse_budget(bad)
    assert parse_sources(["chest=runs/a,knee=runs/b", "hand=c"]) == {
        "chest": Path("runs/a"), "knee": Path("runs/b"), "hand": Path("c")}
    for bad in (["chest"], ["chest=a,chest=b"], ["scratch=a"]):
        with pytest.raises(MedtransferError, match="--sources"):
            parse_sources(bad)


def test_candidates_list_missing_imagenet_with_its_file_and_note_another_arch(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))   # an empty weights cache
    cfg = load_config(workspace / "cfg.yaml", ["model.arch=resnet18"])
    other = tmp_path / "dense"
    other.mkdir()
    (other / "config.yaml").write_text(CONFIG.replace(TINY_ARCH, "densenet121").replace("24", "64"))
    (other / "metrics.json").write_text("{}")
    (other / "model.safetensors").write_bytes(b"")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(CONFIG)
    cands = {c.name: c for c in list_candidates(cfg, {"src": workspace / "source", "dense": other,
                                                      "half": unfinished})}
    assert cands["scratch"].available and cands["scratch"].init == SCRATCH
    assert not cands["imagenet"].available and "put resnet18-" in cands["imagenet"].reason
    assert str(tmp_path / "torch") in cands["imagenet"].reason
    assert cands["src"].available and cands["src"].init == Init.checkpoint((workspace / "source").resolve())
    assert cands["src"].arch == TINY_ARCH and f"{TINY_ARCH} (--set model.arch" in cands["src"].note
    assert cands["dense"].available and cands["dense"].arch == "densenet121"
    assert "densenet121" in cands["dense"].note and "own backbone" in cands["dense"].note
    assert "64 px" in cands["dense"].note
    assert not cands["half"].available and "did not finish" in cands["half"].reason
    with pytest.raises(MedtransferError, match="no such folder"):
        source_candidate("x", tmp_path / "absent", cfg, "--sources")


def test_fewer_than_20_training_images_is_an_error_naming_the_count(workspace, tmp_path):
    with pytest.raises(DataError, match=r"the training subset has 12 images \(train.n_train=12\).*at least 20"):
        advise(workspace / "cfg.yaml", tmp_path / "out", workspace, {}, None, 60, ["train.n_train=12"], echo=False)
    assert not (tmp_path / "out" / "advice.json").exists()


def test_a_label_without_a_positive_in_training_is_an_error_naming_the_count():
    labels = np.zeros((30, 1), dtype=np.float32)
    with pytest.raises(DataError, match=r"label 'finding' has no positive among the 30 training images \(0 of 30\)"):
        check_training_set(labels, "binary", ["finding"], "all")
    with pytest.raises(DataError, match=r"class 'b'|label 'b' has no positive"):
        check_training_set(np.array([0, 2] * 15), "multiclass", ["a", "b", "c"], 30)
    check_training_set(np.eye(2, dtype=np.float32)[[0, 1] * 15][:, 1:], "binary", ["finding"], 30)


# ---------------------------------------------------------------------------------------------- ranking
def test_unusable_features_are_reported_while_the_others_are_ranked():
    rng = np.random.default_rng(0)
    n = 120
    informative = rng.normal(size=(n, 16))
    labels = (informative[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.float32)[:, None]
    nan = rng.normal(size=(n, 16))
    nan[5, 2] = np.nan
    features = {"good": CandidateFeatures("good", informative, 0.1), "noise": CandidateFeatures("noise", rng.normal(size=(n, 16)), 0.1),
                "flat": CandidateFeatures("flat", np.ones((n, 16)), 0.1), "nan": CandidateFeatures("nan", nan, 0.1),
                "broken": CandidateFeatures("broken", None, 0.1, error="checkpoint does not fit resnet18")}
    scores = rank_candidates(features, labels, "binary", 1, np.arange(n) // 2)
    by = {s.name: s for s in scores}
    assert [s.name for s in scores[:2]] == ["good", "noise"] and by["good"].rank == 1 and by["noise"].rank == 2
    assert by["good"].logme > by["noise"].logme and by["good"].probe_auroc > 0.85 and by["good"].knn_auroc > 0.8
    assert by["good"].sfda > by["noise"].sfda + 0.05 and by["good"].to_json()["sfda"] == by["good"].sfda
    assert by["flat"].sfda is None and by["broken"].sfda is None
    # the ranking key is the score the benchmark found best (issue 25, item 4), named in advice.json
    from medtransfer.advise.rank import RANKED_BY, RankScore
    assert scores[0].score(RANKED_BY) >= scores[1].score(RANKED_BY)
    assert scores[0].to_json()["ranked_by"] == RANKED_BY.value
    for key in RankScore:
        ordered = rank_candidates(features, labels, "binary", 1, np.arange(n) // 2, by=key)
        values = [s.score(key) for s in ordered if s.rank is not None]
        assert values == sorted(values, reverse=True)
    assert by["flat"].rank is None and "constant" in by["flat"].unusable
    assert by["nan"].rank is None and "NaN" in by["nan"].unusable
    # the page's table has a column per score, SFDA's beside the others (3 decimals, a dash where there is none)
    from medtransfer.advise.page import _ranking
    page = _ranking([], scores, "method")
    assert "<th>k-NN AUROC</th><th>SFDA</th><th>note</th>" in page
    assert f'<td class="num">{by["good"].sfda:.3f}</td><td>' in page
    assert page.count('<td class="num">—</td><td>unusable') == 3    # flat, nan, broken: no SFDA either
    assert by["broken"].rank is None and "does not fit" in by["broken"].unusable


def test_sfda_with_no_more_images_than_features_is_not_shown():
    """With no more images than features any features separate the classes: SFDA is near 1.0 whatever the
    backbone (exactly 1.0 on ResNet-18's 512 features below 512 images), so it is left out, with the reason."""
    rng = np.random.default_rng(1)
    labels = (np.arange(40) % 2).astype(np.float32)[:, None]
    wide = CandidateFeatures("wide", rng.normal(size=(40, 64)), 0.1)      # 40 images, 64 features
    (score,) = rank_candidates({"wide": wide}, labels, "binary", 1, np.arange(40))
    assert score.sfda is None and "SFDA not shown" in score.probe_note and "(40)" in score.probe_note
    assert score.logme is not None and score.knn_auroc is not None and score.rank == 1


# ---------------------------------------------------------------------------------------------- search
def test_the_plan_shrinks_to_the_budget_keeping_the_references():
    inits = [("src", Init.checkpoint("a"), "resnet18"), ("scratch", SCRATCH, "resnet18"),
             ("other", Init.checkpoint("b"), "resnet18"), ("imagenet", IMAGENET, "resnet18")]
    cost = CostModel(step_seconds=0.1, fixed_seconds=0.5)
    space = SearchSpace()
    train = TrainConfig(epochs=3)
    roomy = plan_search(inits, space, 100, curve_sizes(200), cost, 1e6, train)
    assert {a.init_name for a in roomy.arms} == {"src", "scratch", "other", "imagenet"} and roomy.sizes == (50, 100)
    assert not any(a.init_name == "scratch" and a.strategy == "frozen" for a in roomy.arms)
    assert roomy.rung_steps[-1] == 51 and list(roomy.rung_steps) == sorted(roomy.rung_steps)   # 3 rounds of 17
    tight = plan_search(inits, space, 100, curve_sizes(200), cost, roomy.estimated_seconds * 0.8, train)
    assert {a.init_name for a in tight.arms} == {"src", "scratch", "imagenet"}   # the lower-ranked source goes first
    assert tight.estimated_seconds <= roomy.estimated_seconds * 0.8 and "other" in tight.notes[0]
    tiny = plan_search(inits, space, 100, curve_sizes(200), cost, 1.0, train)
    assert not tiny.fits and tiny.sizes == ()     # no plan fits: the caller refuses the budget with this one
    assert {a.init_name for a in tiny.arms} == {"src", "scratch", "imagenet"}


def _search(data, idx, cfg, source):
    inits = [("src", Init.checkpoint(source), TINY_ARCH), ("scratch", SCRATCH, TINY_ARCH)]
    plan = plan_search(inits, SearchSpace(), 12, (), FREE, 1e6, cfg.train)
    search_data = search_data_of(data, idx["train"], idx["val"], data.splits["train"], (17,), 0, "binary")
    assert len(search_data.train) + len(search_data.val) == len(idx["train"]) + len(idx["val"])
    return run_halving(search_data, plan, cfg, torch.device("cpu"), log=lambda _line: None)


def test_successive_halving_never_reads_test_labels(workspace):
    cfg = load_config(workspace / "cfg.yaml")
    data, idx = prepare_run_data(cfg, workspace, lambda _line: None, progress=False)
    clean = _search(data, idx, cfg, workspace / "source")
    labels = np.array(data.labels, dtype=np.float32)
    images = np.array(data.images)
    labels[idx["test"]] = np.nan           # any AUROC or loss on these would raise or turn NaN
    images[idx["test"]] = 255
    poisoned = _search(dataclasses.replace(data, labels=labels, images=images), idx, cfg, workspace / "source")
    assert [len(r) for r in clean.rungs] == [11, 6, 3, 2]   # 6 source arms + a probe + 4 scratch arms, halved
    assert poisoned.pick == clean.pick
    assert [(t.arm, t.val_auroc, t.kept) for t in poisoned.trials] == [(t.arm, t.val_auroc, t.kept) for t in clean.trials]
    assert all(np.isfinite(t.val_auroc) for t in poisoned.trials)


def test_a_cross_validated_search_uses_the_final_runs_folds_and_never_reads_test_labels(workspace):
    from medtransfer.advise.search import cross_validated_data
    from medtransfer.runs.cv import plan_selection

    cfg = load_config(workspace / "cfg.yaml")
    data, idx = prepare_run_data(cfg, workspace, lambda _line: None, progress=False)

    def searched(d):
        selection = plan_selection(cfg, d, idx)       # what train_run plans for the final run, with this config
        assert selection.kind == "cv"                 # 10 validation images: auto cross-validates
        base = search_data_of(d, idx["train"], idx["val"], d.splits["train"], (), 0, "binary")
        cv_data = cross_validated_data(base, d, selection)
        inits = [("src", Init.checkpoint(workspace / "source"), TINY_ARCH), ("scratch", SCRATCH, TINY_ARCH)]
        plan = plan_search(inits, PROBE_SPACE, 12, (), FREE, 1e6, cfg.train)
        return selection, cv_data, run_halving(cv_data, plan, cfg, torch.device("cpu"), log=lambda _line: None)

    selection, cv_data, clean = searched(data)
    assert len(cv_data.train) == len(selection.pool) == len(idx["train"]) + len(idx["val"])
    assert [te.tolist() for _, te in cv_data.folds] == [te.tolist() for _, te in selection.folds]
    labels, images = np.array(data.labels, dtype=np.float32), np.array(data.images)
    labels[idx["test"]], images[idx["test"]] = np.nan, 255
    _, _, poisoned = searched(dataclasses.replace(data, labels=labels, images=images))
    assert [(t.arm, t.val_auroc, t.fold_auroc) for t in poisoned.trials] == \
        [(t.arm, t.val_auroc, t.fold_auroc) for t in clean.trials]
    for t in clean.trials:   # a trial's score is its mean fold AUROC; its scores are out-of-fold, one per pool image
        assert len(t.fold_auroc) == len(selection.folds) and t.val_auroc == pytest.approx(np.nanmean(t.fold_auroc))
        assert len(t.val_scores) == len(selection.pool)
    assert clean.selection == "cv" and clean.choice is not None and clean.pick == clean.choice.pick.arm
    assert any(t.arm.strategy == "probe" for t in clean.trials)   # the probe is scored on the same folds


def test_a_probe_arm_trains_once_and_later_rungs_carry_its_trial(workspace, monkeypatch):
    from medtransfer.advise import search

    cfg = load_config(workspace / "cfg.yaml")
    data, idx = prepare_run_data(cfg, workspace, lambda _line: None, progress=False)
    calls = []
    real = search.train_arm
    monkeypatch.setattr(search, "train_arm", lambda d, arm, *a, **k: calls.append(arm) or real(d, arm, *a, **k))
    inits = [("src", Init.checkpoint(workspace / "source"), TINY_ARCH)]
    plan = plan_search(inits, PROBE_SPACE, 12, (), FREE, 1e6, cfg.train)   # 3 arms: rungs of 3, 2
    search_data = search_data_of(data, idx["train"], idx["val"], data.splits["train"], (), 0, "binary")
    lines = []
    result = run_halving(search_data, plan, cfg, torch.device("cpu"), log=lines.append)
    probe = next(t for t in result.rungs[0] if t.arm.strategy == "probe")
    assert np.isfinite(probe.val_auroc) and len(probe.val_scores) == len(search_data.val)
    assert sum(arm.strategy == "probe" for arm in calls) == 1
    later = [t for rung in result.rungs[1:] for t in rung if t.arm.strategy == "probe"]
    for t in later:     # carried: the same score, no seconds, at the later rung's steps
        assert t.val_auroc == probe.val_auroc and t.seconds == 0.0 and t.steps == plan.rung_steps[t.rung - 1]
    assert later and any("carried from rung 1" in line for line in lines)   # it scores 0.88 here: kept to rung 2


def test_the_learning_curve_through_three_sizes_gives_no_2x_or_4x_prediction():
    from scipy.stats import norm

    from medtransfer.advise.page import _curve
    from medtransfer.advise.workflow import learning_curve
    from medtransfer.advise.plan import Arm
    from medtransfer.advise.search import SearchData, SplitArrays, Trial
    from medtransfer.evaluate.metrics import macro_auroc

    rng = np.random.default_rng(0)
    y = (np.arange(400) % 2).astype(np.float32)[:, None]
    z = rng.normal(size=(400, 1))
    val = SplitArrays(np.zeros((400, 4, 4), np.uint8), y, np.arange(400))
    data = SearchData(SplitArrays(val.images, y, val.clusters), val, "binary", ["finding"])
    arm = Arm("scratch", SCRATCH, TINY_ARCH, "full", "constant")
    # AUROC 0.90 - 5 / N at N = 25, 50, 100: a power law, measured on the same validation images
    scores = {n: y * np.sqrt(2) * norm.ppf(0.9 - 5 / n) + z for n in (25, 50, 100)}
    trials = [Trial(arm, 0, 10, n, macro_auroc(y, scores[n], "binary"), 0.0, scores[n]) for n in (25, 50)]
    curve = learning_curve(data, trials, 100, scores[100], macro_auroc(y, scores[100], "binary"), 0.8)
    # issue 23: a 3-parameter curve through 3 sizes passes through them and predicts nothing beyond them
    assert [s["n_train"] for s in curve["sizes"]] == [25, 50, 100] and curve["fit"]["exact_fit"]
    assert not curve["fit"]["ok"] and "as many parameters as points" in curve["fit"]["reason"]
    assert curve["predictions"] == []
    assert "No learning-curve prediction: as many parameters as points" in _curve({"learning_curve": curve})


def test_a_probe_runs_its_backbone_once_per_split_for_the_whole_search(workspace, monkeypatch):
    """The probe's features do not change with its rung or its learning-curve size: the first trial computes them
    and the later ones read them (one pass over the training images and one over validation)."""
    import medtransfer.train.features as features_module
    from medtransfer.advise.search import run_sizes

    cfg = load_config(workspace / "cfg.yaml")
    data, idx = prepare_run_data(cfg, workspace, lambda _line: None, progress=False)
    passes = []
    real = features_module.backbone_features
    monkeypatch.setattr(features_module, "backbone_features", lambda m, images, d, **k: passes.append(len(images))
                        or real(m, images, d, **k))
    inits = [("src", Init.checkpoint(workspace / "source"), TINY_ARCH)]
    plan = plan_search(inits, SearchSpace(strategies=("probe",), lr_policies=("constant",)), 12, (), FREE, 1e6,
                       cfg.train)
    search_data = search_data_of(data, idx["train"], idx["val"], data.splits["train"], (17, 35), 0, "binary")
    result = run_halving(search_data, plan, cfg, torch.device("cpu"), log=lambda _line: None)
    trials, skipped = run_sizes(search_data, result.pick, 12, cfg, torch.device("cpu"), log=lambda _line: None)
    assert len(trials) == 2 and skipped == [] and all(np.isfinite(t.val_auroc) for t in trials)
    assert sorted(passes) == sorted([len(search_data.train), len(search_data.val)])


# ---------------------------------------------------------------------------------------------- end to end
def test_a_probe_pick_trains_the_learning_curve_sizes_the_plan_cut(workspace, tmp_path, monkeypatch):
    """The plan drops learning-curve sizes to fit the budget, pricing them as fine-tuning runs; when the pick is a
    probe each size is a feature pass, so they are trained after all, and the advice says so."""
    from medtransfer.advise import workflow

    real_plan, real_halving = workflow.plan_search, workflow.run_halving
    monkeypatch.setattr(workflow, "plan_search", lambda *a, **k: dataclasses.replace(real_plan(*a, **k), sizes=()))

    def probe_picked(*a, **k):   # whatever the trials score, name the probe (its trial is a real one)
        result = real_halving(*a, **k)
        probe = next(t for t in result.rungs[0] if t.arm.strategy == "probe")
        return dataclasses.replace(result, pick=probe.arm, pick_trial=probe)

    monkeypatch.setattr(workflow, "run_halving", probe_picked)
    path = advise(workspace / "cfg.yaml", tmp_path / "advice", workspace, {"src": workspace / "source"}, None, 600,
                  [], space=PROBE_SPACE, echo=False)
    advice = json.loads(path.read_text())
    assert advice["recommendation"]["strategy"] == "probe"
    sizes = [s["n_train"] for s in advice["learning_curve"]["sizes"]]
    assert len(sizes) == 3 and sizes[-1] == 80        # N/4, N/2 and the N-pool point
    assert "trained after all: the pick is a probe" in (tmp_path / "advice" / "advise.log").read_text()


def test_a_space_of_probes_only_is_refused_in_one_line_before_any_fit(workspace, tmp_path):
    """A probe takes no optimiser step, so it cannot price the search's steps: refused, naming what to add."""
    with pytest.raises(MedtransferError, match=r"search space \(probe\) gives no usable candidate an arm that trains a layer .*add full or gradual"):
        advise(workspace / "cfg.yaml", tmp_path / "advice", workspace, {"src": workspace / "source"}, None, 120, [],
               space=SearchSpace(strategies=("probe",), lr_policies=("constant",)), echo=False)


def test_advise_end_to_end_writes_the_advice_and_a_model_predict_uses(workspace, tmp_path, monkeypatch):
    from medtransfer.inference import predict_files

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "advice"
    path = advise(workspace / "cfg.yaml", out, workspace, {"src": workspace / "source"}, None, 120, [],
                  space=SMALL_SPACE, echo=False)
    advice = json.loads(path.read_text())
    assert path == out / "advice.json" and (out / "advice.html").is_file() and (out / "advise.log").is_file()
    ranking = {s["name"]: s for s in advice["ranking"]["scores"]}
    assert set(ranking) == {"scratch", "src"} and all(s["logme"] is not None for s in ranking.values())
    assert "no ImageNet weights" in [c for c in advice["candidates"] if c["name"] == "imagenet"][0]["reason"]
    assert advice["search"]["test_split_used"] is False and advice["search"]["rungs"]
    rec = advice["recommendation"]
    assert rec["init_name"] in ("scratch", "src") and rec["steps"] == 12
    assert 0 <= rec["test_auroc"] <= 1 and rec["test_auroc_ci"]["low"] <= rec["test_auroc"] <= rec["test_auroc_ci"]["high"]
    assert {g["versus"] for g in advice["gains"]} == {"scratch", "imagenet"}
    # issue 23: 10 validation images are too few to rank on, so the search cross-validates the N-pool (70 training
    # + 10 validation images) on the folds the final run uses, and names its pick by the one-SE rule
    search = advice["search"]
    assert search["selection"] == "cv" and search["folds"] == 5 and "fewer than 50" in search["selection_reason"]
    assert all(len(t["fold_auroc"]) == 5 for r in search["rungs"] for t in r["trials"] if t["val_auroc"] is not None)
    choice = search["pick_choice"]
    assert choice["pick"] == rec["recipe"] and choice["rule"] == search["choice"]
    assert choice["within_noise"][0] == choice["best"] and choice["noise_line"].endswith("within noise of the best")
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert best["selected_by"]["kind"] == "cv" and best["selected_by"]["pool_images"] == 80
    assert [s["n_train"] for s in advice["learning_curve"]["sizes"]] == [17, 35, 80]   # N: the pool the folds drew from
    assert "out-of-fold" in advice["learning_curve"]["scale"]

    # the command reproduces the kept run's config exactly, but for the test estimate: the final run tested on its
    # split (no budget holds an outer cross-validation), the command keeps the user's (auto), which adds one
    words = shlex.split(rec["command"])
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert words[:3] == ["medtransfer", "train", str(workspace / "cfg.yaml")]
    command_cfg, kept_cfg = load_config(words[2], sets), config_from_dict(load_yaml(out / "best" / "config.yaml"))
    assert (command_cfg.train.test_estimate, kept_cfg.train.test_estimate) == ("auto", "split")
    kept_cfg.train.test_estimate = "auto"
    assert dump_config(command_cfg) == dump_config(kept_cfg)

    page = (out / "advice.html").read_text()
    assert "[redacted]" not in page and "<script" not in page
    # recommended only when the final run beats chance and the pixel baseline fitted beside it (issue 24); on these
    # images (a weak brightness signal a 16 x 16 pixel regression reads well) a 12-step CNN may not
    beaten = all(b["beats"] for b in rec["baselines"]) and rec["test_auroc_ci"]["low"] > 0.5
    assert rec["baselines"][0]["baseline"] == "pixels + LR" and rec["recommended"] is beaten
    assert ("<h2>Recommendation</h2>" in page) is beaten and ("No recommendation at this N" in page) is not beaten
    assert beaten or "not shown better" in rec["why_not"] or "contains 0.5" in rec["why_not"]
    assert html.escape(rec["command"] if beaten else rec["predict"]) in page   # no recommendation: kept to inspect
    assert "extrapolation" in page or "No learning-curve prediction" in page
    # headers say what their column holds (issue 24): no "it (val)", and no CI promised for measured sizes
    assert "<th>its validation AUROC</th>" in page and "<th>the pick's validation AUROC</th>" in page
    assert "it (val)" not in page and "validation AUROC (95% CI)" not in page
    assert "<th>validation AUROC</th><th>95% CI (predictions only)</th>" in page

    images = sorted((workspace / "img").glob("*.png"))[:5]
    result = predict_files(out / "best", images, device="cpu")
    assert len(result.frame) == 5 and result.frame["score_finding"].between(0, 1).all()
    with pytest.raises(MedtransferError, match="holds finished advice"):
        advise(workspace / "cfg.yaml", out, workspace, {}, None, 60, [], echo=False)


# ---------------------------------------------------------------------------------------------- the CLI
def _cli_has_advise() -> bool:
    from medtransfer.cli import build_parser

    return "advise" in build_parser()._subparsers._group_actions[0].choices


needs_cli = pytest.mark.skipif(not _cli_has_advise(), reason="`medtransfer advise` is not wired into cli.py yet")


@needs_cli
def test_cli_bad_inputs_are_one_line_errors_with_exit_2(workspace, tmp_path, capsys):
    from medtransfer.cli import main

    code = main(["advise", str(workspace / "cfg.yaml"), "--out", str(tmp_path / "a"), "--data-root", str(workspace),
                 "--set", "train.n_train=12", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has 12 images" in err
    for extra, wanted in ((["--budget", "soon"], "--budget"), (["--sources", "chest"], "--sources"),
                          (["--sources", f"x={tmp_path / 'nowhere'}"], "no such folder")):
        code = main(["advise", str(workspace / "cfg.yaml"), "--out", str(tmp_path / "b"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and wanted in err


@needs_cli
def test_cli_refuses_a_budget_too_small_for_any_plan_with_one_that_would_do(workspace, tmp_path, capsys,
                                                                            monkeypatch):
    """A fake probe (50 s a step): no plan fits 2 minutes, so advise trains nothing and names a budget that fits."""
    import medtransfer.advise.workflow as workflow_module
    from medtransfer.advise.plan import LOAD_MARGIN

    planned = []
    real_plan_search = workflow_module.plan_search

    def spy(*args, **kwargs):
        planned.append(real_plan_search(*args, **kwargs))
        return planned[-1]

    monkeypatch.setattr(workflow_module, "probe_cost", lambda *a, **k: CostModel(50.0, 100.0, 10.0))
    monkeypatch.setattr(workflow_module, "plan_search", spy)
    out = tmp_path / "refused"
    from medtransfer.cli import main

    code = main(["advise", str(workspace / "cfg.yaml"), "--out", str(out), "--data-root", str(workspace),
                 "--budget", "2m", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--budget 120s is too small" in err
    suggested = parse_budget(err.split("use --budget ")[1].split()[0])
    assert suggested * (1 - 0.05) >= LOAD_MARGIN * planned[-1].estimated_seconds     # it would hold the plan
    assert not (out / "best").exists() and not (out / "advice.json").exists()         # nothing was trained


@needs_cli
def test_cli_advise_prints_the_pick_and_writes_the_folder(workspace, tmp_path, capsys):
    from medtransfer.cli import main

    out = tmp_path / "advice"
    code = main(["advise", str(workspace / "cfg.yaml"), "--out", str(out), "--data-root", str(workspace),
                 "--sources", f"src={workspace / 'source'}", "--budget", "2m", "--quiet",
                 "--set", "train.steps=4"])
    printed = capsys.readouterr().out
    recommended = json.loads((out / "advice.json").read_text())["recommendation"]["recommended"]
    said = "advised" if recommended else "no recommendation at this N"        # the pixel baseline may win (issue 24)
    assert code == 0 and said in printed and "test AUROC" in printed and "macro" not in printed   # binary
    assert (out / "advice.json").is_file() and (out / "advice.html").is_file() and (out / "best" / "model.safetensors").is_file()


def test_rung_budgets_are_whole_validation_rounds_so_the_reported_steps_are_the_trained_steps():
    from medtransfer.advise.plan import rung_steps_for
    from medtransfer.budget import plan_budget

    final = plan_budget(200, 32, epochs=8, min_steps=200).total_steps          # 200
    steps = rung_steps_for(4, final, rounds=8)
    assert all(s % 8 == 0 and s <= final for s in steps)
    assert list(steps) == sorted(steps) and steps[-1] == 104                   # ceil(100 / 8) rounds
    for s in steps:                                                            # what a rung trains is what it says
        assert plan_budget(200, 32, epochs=8, steps=s).total_steps == s
    assert rung_steps_for(3, 40) == (5, 10, 20)                                # one round per fit: as before


def test_a_backbone_that_fails_in_its_forward_pass_is_unusable_with_the_reason(monkeypatch):
    import medtransfer.advise.features as features_module
    from medtransfer.advise.candidates import Candidate
    from medtransfer.advise.features import candidate_features

    real = features_module.penultimate_features

    def forward(model, images, batch_size=64, device=None):
        if getattr(model, "arch", "") == "resnet34":   # e.g. a fixed-size transformer source at 32 px
            raise RuntimeError("Input height (32) doesn't match model (224).\nmore torch detail")
        return real(model, images, batch_size, device)

    monkeypatch.setattr(features_module, "penultimate_features", forward)
    images = np.random.default_rng(0).integers(0, 255, (24, 32, 32)).astype(np.uint8)
    got = candidate_features([Candidate("scratch", SCRATCH, "resnet18", "built-in"),
                              Candidate("odd", SCRATCH, "resnet34", "--sources")], images, 1, seed=0,
                             log=lambda _line: None)
    assert got["scratch"].features.shape[0] == 24
    assert got["odd"].features is None and got["odd"].error == "RuntimeError: Input height (32) doesn't match model (224)."
