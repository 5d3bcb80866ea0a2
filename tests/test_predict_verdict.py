"""predict says when the run it scores with is no recommendation (issue 24 item 1, found by a new-user trial):
its scores are still given, but never without the run's own verdict."""
import json

from medtransfer.inference import run_verdict_warning


def _run(tmp_path, verdict):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "metrics.json").write_text(json.dumps({"verdict": verdict} if verdict is not None else {}))
    return tmp_path


def test_a_run_whose_verdict_is_not_usable_is_flagged_with_its_reason(tmp_path):
    lines = ["verdict: better than chance: test AUROC 0.770, 95% CI 0.671 to 0.858, lies above 0.5",
             "verdict: NOT shown better than the pixels + LR baseline on the same split (difference +0.056)"]
    got = run_verdict_warning(_run(tmp_path / "a", {"usable": False, "lines": lines}))
    assert got.startswith("this run's model is no recommendation (NOT shown better than the pixels + LR baseline")
    chance = run_verdict_warning(_run(tmp_path / "b", {"usable": False, "lines": [
        "verdict: no better than chance: test AUROC 0.55, its 95% CI 0.42 to 0.68 contains 0.5"]}))
    assert "no better than chance" in chance


def test_a_usable_run_or_one_without_a_verdict_is_not_flagged(tmp_path):
    assert run_verdict_warning(_run(tmp_path / "a", {"usable": True, "lines": []})) is None
    assert run_verdict_warning(_run(tmp_path / "b", None)) is None          # a run from before verdicts
    assert run_verdict_warning(tmp_path / "missing") is None
