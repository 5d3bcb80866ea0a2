"""The seed paper's DenseNet121-vs-radiomics claim, checked from a study's measured crossovers: supported when the
studied N brackets sit near 1,600 (comparable) and 10,000 (better), contradicted when DenseNet121 wins from N <= 800,
and 'not tested' without a DenseNet121 multi-label panel, with the study's own crossovers in plain words."""
from medtransfer.report.claims import Verdict, radiomics_claim


def _m(arch, kind, comparable, better, init="scratch", where="task / arch"):
    return {"arch": arch, "task_kind": kind, "comparable_from_N": comparable, "outperforms_from_N": better,
            "init": init, "where": where}


def test_the_claim_is_judged_on_densenet121_multilabel_panels_only():
    near = radiomics_claim([_m("densenet121", "multilabel", 1600, 12000)])
    assert near.verdict == Verdict.SUPPORTED and "comparable from N = 1600, better from N = 12000" in near.evidence
    early = radiomics_claim([_m("densenet121", "multilabel", 200, 400)])
    assert early.verdict == Verdict.CONTRADICTED
    never = radiomics_claim([_m("densenet121", "multilabel", None, None)])
    assert never.verdict == Verdict.WITHIN_NOISE and "comparable at no N studied, better at no N studied" in never.evidence
    other = radiomics_claim([_m("resnet18", "binary", 800, None, where="pneumoniamnist:binary / resnet18")])
    assert other.verdict == Verdict.NOT_TESTED
    assert "pneumoniamnist:binary / resnet18: scratch comparable from N = 800, better at no N studied" in other.evidence
    assert "none studied" not in other.evidence
