"""A run says first what its reader must know (issue 24, item 1): a test interval reaching 0.5, a tiny test split."""
import numpy as np

from medtransfer.kinds import TaskKind
from medtransfer.runs.scoring import reader_warnings


def test_an_interval_reaching_chance_and_a_small_test_class_are_both_said():
    labels = np.array([[1]] * 12 + [[0]] * 200)
    clusters = np.array([f"p{i}" for i in range(212)])
    got = reader_warnings(0.46, labels, TaskKind.BINARY, clusters)
    assert len(got) == 2 and "not shown better than chance" in got[0] and "only 12 patients" in got[1]


def test_a_large_test_split_above_chance_gets_no_warning():
    labels = np.array([[1]] * 100 + [[0]] * 100)
    clusters = np.array([f"p{i // 2}" for i in range(200)])      # 2 images per patient: 50 patients a class
    assert reader_warnings(0.81, labels, TaskKind.BINARY, clusters) == []
    assert "only 25 patients" in reader_warnings(0.81, labels, TaskKind.BINARY, np.array([f"p{i // 4}" for i in range(200)]))[0]


def test_multilabel_counts_each_finding_and_ignores_absent_ones():
    labels = np.zeros((100, 3))
    labels[:40, 0] = 1
    labels[:5, 1] = 1                                              # a rare finding: 5 patients
    clusters = np.array([f"p{i}" for i in range(100)])
    (warning,) = reader_warnings(0.7, labels, TaskKind.MULTILABEL, clusters)
    assert "only 5 patients" in warning
