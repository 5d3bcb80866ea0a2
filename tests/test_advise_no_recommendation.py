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
