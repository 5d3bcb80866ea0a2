"""Strip anything that could identify a patient from data-derived text before it reaches a report.

Error messages stored with failed runs may quote the image that broke a run
(``.../00000001_000.png``) or a patient ID; a report only ever shows aggregates,
so such tokens are replaced. Weight file names (``resnet18-f37072fd.pth``) are kept:
they tell the user which file to place.

Only text that came from the data or the user's configs is redacted (``page.esc``: names, labels, recipes,
failure reasons, notes quoting a source). The tool's own sentences are not (``page.prose``): they quote no
data, and the patterns below would blank the word after "patient" in them ("the same patient resamples").
"""
from __future__ import annotations

import re

REDACTED = "[redacted]"

_IMAGE_EXT = r"(?:png|jpe?g|dcm|dicom|tiff?|bmp|gif|nii(?:\.gz)?|mha|nrrd)"
_PATTERNS = [
    # a path or bare file name of an image: keep nothing of it
    re.compile(rf"[^\s'\"()\[\],;:]*\.{_IMAGE_EXT}\b", re.IGNORECASE),
    # "patient 123", "patient_id=P00123", "Patient ID: 30805"
    re.compile(r"(\bpatient(?:[ _-]?ids?)?\b\W{0,3})[\w.-]+", re.IGNORECASE),
    # medmnist-style ids ("train/17") and long numbers (NIH image / knee patient ids)
    re.compile(r"\b(?:train|val|test)/\d+\b"),
    re.compile(r"\d{6,}"),
]


def redact(text) -> str:
    """``text`` as one line with image names, patient IDs and long numbers replaced."""
    if text is None:
        return ""
    out = " ".join(str(text).split())
    out = _PATTERNS[0].sub(REDACTED, out)
    out = _PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, out)
    for pattern in _PATTERNS[2:]:
        out = pattern.sub(REDACTED, out)
    return out


def short_reason(text, limit: int = 240) -> str:
    """The first line of an error message (last line of a traceback), redacted and cut to ``limit`` characters."""
    if text is None or str(text).strip() == "":
        return "(no reason recorded)"
    lines = [line for line in str(text).splitlines() if line.strip()]
    # a stored traceback says what went wrong on its last line
    line = redact(lines[-1] if lines[0].startswith("Traceback") else lines[0])
    return line if len(line) <= limit else line[: limit - 1] + "…"
