"""lr-find's reading: the valley rule ignores early noise, and edge / flat curves are warned about."""
import numpy as np

from medtransfer.train.lr_suggest import longest_decrease, suggest


def test_longest_decrease_spans_bumps():
    losses = np.array([5, 4, 4.5, 3, 2, 2.2, 1, 3, 9])
    start, end = longest_decrease(losses)
    assert (start, end) == (2, 6)       # 5 members (5, 4, 3, 2, 1) ending at index 6
    assert longest_decrease(np.array([1, 1, 1, 0.5, 0.2])) == (2, 4)   # a plateau is not part of the valley


def test_valley_ignores_a_steep_early_wiggle_that_fools_steepest():
    lrs = np.logspace(-7, 1, 100)
    losses = 0.7 - 0.4 / (1 + np.exp(-(np.log10(lrs) + 3)))    # falls around 1e-3, flat below and above
    losses[9:12] = [0.80, 0.62, 0.70]                           # a sharp early dip: steepest points there
    losses[-12:] = np.linspace(0.31, 3.0, 12)                   # divergence
    s = suggest(lrs, losses)
    assert 1e-5 < s.suggested < 1e-1
    assert s.steepest < 1e-5                                    # what the old rule would have suggested
    assert s.valley[0] < s.suggested < s.valley[1]
    assert not s.warnings


def test_flat_and_edge_curves_are_warned():
    lrs = np.logspace(-7, 1, 50)
    flat = suggest(lrs, 0.5 + 0.001 * np.sin(np.arange(50)))
    assert any("flat" in w for w in flat.warnings)
    late = suggest(lrs, np.concatenate([np.full(45, 1.0), np.linspace(0.9, 0.5, 5)]))
    assert any("edge" in w for w in late.warnings)


def test_real_pneumoniamnist_curve_suggests_inside_the_known_good_range():
    """A recorded range test (PneumoniaMNIST, N = 800) whose loss is flat and noisy from 1e-7 to 1e-4."""
    import json
    from pathlib import Path

    curve = json.loads((Path(__file__).parent / "data" / "lr_find_pneumoniamnist_n800.json").read_text())
    s = suggest(curve["lrs"], curve["losses"])
    assert 1e-4 <= s.suggested <= 5e-2, s.suggested
    assert s.steepest < 1e-5            # the steepest rule is fooled by the early wiggles here
