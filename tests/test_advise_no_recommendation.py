"""advise says "no recommendation at this N" when its pick is not shown better than chance (issue 24, item 1)."""
import json
from pathlib import Path

from medtransfer.advise.advice import Recommendation
from medtransfer.advise.command import advice_summary
from medtransfer.advise.page import _recommendation
from medtransfer.advise.plan import Arm
from medtransfer.kinds import SCRATCH, Strategy


def recommendation(low, high, auroc):
    arm = Arm("scratch", SCRATCH, "resnet18", Strategy.FULL, "constant")
    return Recommendation(pick=arm, steps=40, search_val_auroc=0.7, search_steps=20, val_auroc=0.7, test_auroc=auroc,
                          test_auroc_ci=None if low is None else {"low": low, "high": high},
                          test_operating_point=None, run=Path("out/best"), config=Path("out/best/config.yaml"),
                          command="medtransfer train ...", note=None)


def test_a_pick_whose_interval_reaches_chance_is_no_recommendation(tmp_path):
    rec = recommendation(0.42, 0.74, 0.586)
    assert not rec.recommended and "contains 0.5" in rec.why_not
    assert rec.to_json()["recommended"] is False
    page = _recommendation(rec)
    assert page.index("No recommendation at this N") < page.index("not recommended") and "Recommendation</h2>" not in page
    path = tmp_path / "advice.json"
    path.write_text(json.dumps({"task_kind": "binary", "recommendation": rec.to_json()}))
    line = advice_summary(path)
    assert "no recommendation at this N" in line and "scratch / full / constant" in line and "not recommended" in line


def test_a_pick_above_chance_is_recommended_and_no_interval_is_not():
    assert recommendation(0.81, 0.9, 0.86).recommended
    assert "no interval" in recommendation(None, None, None).why_not


def test_a_pick_that_does_not_beat_the_pixel_baseline_is_no_recommendation(tmp_path):
    """Issue 24, item 5: above chance is not enough; the final run's pixel baseline must be beaten too."""
    from dataclasses import replace

    from medtransfer.evaluate.per_run import BaselineComparison, RunVerdict

    lost = BaselineComparison("pixels + LR", 0.90, 0.86, 0.93, -0.04, -0.08, 0.01, "16x16")
    suspect = "validation AUROC 0.950 (95% CI 0.900 to 0.990) and test AUROC 0.860 (0.810 to 0.900) disagree"
    rec = replace(recommendation(0.81, 0.9, 0.86), verdict=RunVerdict(0.86, 0.81, 0.9, (lost,), (suspect,)))
    assert not rec.recommended and "contains 0.5" not in rec.why_not
    assert "not shown better than the pixels + LR baseline" in rec.why_not and rec.why_not.endswith(f"suspect: {suspect}")
    assert rec.to_json()["baselines"][0]["beats"] is False and rec.to_json()["suspect"] == [suspect]
    page = _recommendation(rec)
    box = page.index("No recommendation at this N")
    assert box < page.index("not shown better than the pixels + LR baseline") < page.index("Against pixels + LR")
    assert "<b>not shown better</b>" in page and "Suspect" in page
    path = tmp_path / "advice.json"
    path.write_text(json.dumps({"task_kind": "binary", "recommendation": rec.to_json()}))
    assert "no recommendation at this N" in advice_summary(path) and "pixels + LR" in advice_summary(path)
    won = replace(lost, difference=0.05, diff_low=0.01, diff_high=0.09)
    kept = replace(rec, verdict=RunVerdict(0.86, 0.81, 0.9, (won,), (suspect,)))
    assert kept.recommended and "Against pixels + LR" in _recommendation(kept)   # a caution alone does not block
