"""Reading an LR range test: a robust suggestion, the classic alternatives, and when not to trust any.

The steepest-slope rule alone is fragile: on a noisy curve that is flat from 1e-5 to 1e-1 it
picks whichever early wiggle is steepest (a suggestion of 5e-7 that trains nothing). fastai's
"valley" rule is robust to that: find the longest stretch over which the smoothed loss keeps
decreasing (the longest decreasing subsequence, so short bumps do not break it) and suggest the
point halfway along it. The steepest point and the minimum / 10 are reported beside it, all
marked on the plot, so a user can see why the suggestion is where it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EDGE_FRACTION = 0.1    # a suggestion in the first or last tenth of the tested range sits at an edge
FLAT_DROP = 0.1        # a curve whose loss never falls 10% below its start is flat


@dataclass(frozen=True)
class LRSuggestion:
    suggested: float                  # the valley point: what lr-find recommends
    steepest: float                   # steepest descent of the smoothed loss (against log LR)
    minimum_tenth: float              # LR at the loss minimum, divided by 10
    valley: tuple[float, float]       # LR range of the longest decreasing stretch
    warnings: list[str] = field(default_factory=list)


def longest_decrease(losses: np.ndarray) -> tuple[int, int]:
    """(start, end) of the valley: the longest strictly decreasing subsequence, measured back from its end.

    The subsequence (O(n^2), n ~ 100) ends where the descent ends, and spans short bumps. Its
    start is taken as ``end - length + 1``, as fastai does, not as its first member: on a long,
    noisy, nearly flat stretch the subsequence can pick up one point every few steps back to the
    first LR tried, which would put the valley's middle in the flat part (PneumoniaMNIST, N = 800:
    5e-5 instead of 7e-4). Counting members keeps the valley where the loss descends densely.
    """
    n = len(losses)
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        for j in range(i):
            if losses[j] > losses[i] and length[j] + 1 > length[i]:
                length[i] = length[j] + 1
    end = int(np.argmax(length))
    return end - int(length[end]) + 1, end


def suggest(lrs, losses) -> LRSuggestion:
    """All three readings of a range test (smoothed losses, as ``lr_find`` returns them), with warnings."""
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    if len(lrs) < 3 or len(lrs) != len(losses):
        nan = float("nan")
        return LRSuggestion(nan, nan, nan, (nan, nan), ["the range test ran fewer than 3 steps: no suggestion"])
    start, end = longest_decrease(losses)
    valley_idx = start + (end - start) // 2
    i_min = int(np.nanargmin(losses))
    upto = max(i_min, 2)
    slope = np.gradient(losses[:upto + 1], np.log(lrs[:upto + 1]))
    steepest = float(lrs[int(np.nanargmin(slope))])
    warnings = []
    edge = max(1, int(round(EDGE_FRACTION * len(lrs))))
    if valley_idx < edge or valley_idx >= len(lrs) - edge:
        warnings.append(f"the suggestion {lrs[valley_idx]:.1e} sits at an edge of the tested range "
                        f"({lrs[0]:.0e} to {lrs[-1]:.0e}): widen the range or check the curve")
    if losses[i_min] > (1 - FLAT_DROP) * losses[0]:
        warnings.append(f"the loss curve is flat (it never falls {FLAT_DROP:.0%} below its start): "
                        "any LR in the flat part may do; try a few and compare validation AUROC")
    return LRSuggestion(suggested=float(lrs[valley_idx]), steepest=steepest,
                        minimum_tenth=float(lrs[i_min] / 10), valley=(float(lrs[start]), float(lrs[end])),
                        warnings=warnings)
