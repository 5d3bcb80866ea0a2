"""One way to write a duration for people, shared by the CLI, the study ETA and both HTML pages."""
from __future__ import annotations

import math


def format_duration(seconds: float | None) -> str:
    """'5 s', '1 min 05 s', '1 h 02 min' (an unknown duration: '?')."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):   # None, pandas NA
        return "?"
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
