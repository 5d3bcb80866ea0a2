"""No silent leak: a CSV without ``data.patient_column`` must not hold a column that looks like a patient id.

Without a patient column every image is split as its own patient. When the CSV does carry patient (or
study, case, subject) ids, one patient's follow-up images then land in train and test alike, and the test
AUROC measures memory of that patient, not the model: the most common way a small-data result is too
good. So a column that looks like such an id is refused, naming it, until the config says which it is:
``data.patient_column: <col>`` to split by it, or ``data.patient_column: none`` to split per image on purpose.

A column is flagged when (image, label and split columns apart, and only with two or more distinct values):

- its NAME has a word ``patient``, ``subject``, ``case``, ``mrn``, ``study``, ``participant`` or ``pid``
  (alone or with a suffix such as ``id``, ``no``, ``number``: ``patient_id``, ``PatientID``, ``caseNo``,
  ``StudyInstanceUID``), case-insensitive, and no word that makes it something a patient has (``Patient Age``,
  ``patient_sex``, ``case_control``); or
- its VALUES look like grouping ids: they repeat (fewer distinct values than rows) yet are many (at least
  3 and at least 10% of the rows, none on more than a quarter of them), and 90% of them are codes: text without spaces holding a digit that is
  neither a number nor a date or a file path (``P0012``, ``sub-01``, ``1.2.840.1136``), or integers that
  appear in their own row's image path (``9002116`` in ``images/9002116L.png``).

The value rule is kept narrow on purpose: a few categories (``view`` PA/AP, a scanner ``site01``..``site05``
over many rows), measurements (ages, widths, floats), dates and free text never trip it, so a refusal
is worth reading.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ...errors import ConfigError

# What spreadsheets and pandas write for "no value": never a class, never silently a positive (the csv
# source's labels), and never an id here.
MISSING_TOKENS = {"", "nan", "-nan", "na", "n/a", "#n/a", "<na>", "none", "null", "nat"}
ID_WORDS = ("patient", "subject", "case", "mrn", "study", "participant", "pid")
ID_SUFFIXES = ("", "s", "id", "ids", "no", "nr", "num", "number", "code", "key", "uid")
ID_EXTRA = set(ID_SUFFIXES) | {"instance", "identifier", "name", "hash", "anon", "anonymised", "anonymized"}
MIN_DISTINCT = 3            # the value rule: at least this many distinct values ...
MIN_DISTINCT_SHARE = 0.10   # ... and at least this share of the rows
ID_LIKE_SHARE = 0.90        # of the (non-empty) values that must look like ids
MAX_GROUP_SHARE = 0.25      # the most frequent value may hold at most this share of the rows
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_DATE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")
_FILE = re.compile(r"\.(png|jpe?g|dcm|dicom|tiff?|bmp|nii(\.gz)?|nrrd|npy|gif)$", re.IGNORECASE)
_INTEGER = re.compile(r"^[+-]?\d+$")


def refuse_hidden_patient_ids(df: pd.DataFrame, known: list[str], image_paths: list[str], csv: Path) -> None:
    """Stop, in one line naming the column(s), when a CSV without ``data.patient_column`` has a column that
    looks like a patient id (see the module doc); ``known`` are the columns the config already names."""
    flagged = [str(c) for c in df.columns if str(c) not in known and looks_like_patient_ids(str(c), df[c], image_paths)]
    if not flagged:
        return
    named = ", ".join(repr(c) for c in flagged)
    raise ConfigError(f"{csv}: column{'s' if len(flagged) > 1 else ''} {named} look{'' if len(flagged) > 1 else 's'} "
                      f"like patient ids but data.patient_column is not set, so one patient's images could land in "
                      f"both train and test; set data.patient_column: {flagged[0]} to split by it, or "
                      f"data.patient_column: none to split per image")


def looks_like_patient_ids(name: str, column: pd.Series, image_paths: list[str]) -> bool:
    """Whether one column looks like patient (or other grouping) ids, by its name or its values."""
    values = column.astype(str).str.strip()
    present = (~values.str.lower().isin(MISSING_TOKENS)).to_numpy()
    kept = values[present]
    counts = kept.value_counts()
    if len(counts) < 2:
        return False     # a constant column groups nothing
    if name_says_patient(name):
        return True
    if not (max(MIN_DISTINCT, math.ceil(MIN_DISTINCT_SHARE * len(values))) <= len(counts) < len(kept)):
        return False
    if counts.iloc[0] > MAX_GROUP_SHARE * len(kept):
        return False     # one value on a large share of the rows: a category (a site, a code), not a person
    return _id_like_share(kept.tolist(), [p for p, keep in zip(image_paths, present) if keep]) >= ID_LIKE_SHARE


def name_says_patient(name: str) -> bool:
    """``patient_id``, ``PatientID``, ``Subject``, ``case_no``, ``MRN``, ``StudyInstanceUID``: a word of the name is
    one of ``ID_WORDS`` (alone or with a suffix of ``ID_SUFFIXES``) and every other word says "id" (``ID_EXTRA``),
    so ``Patient Age``, ``patient_sex`` or ``case_control`` (what a patient has, not who) are not ids by name."""
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()) if w]
    stems = [w for w in words if any(w == stem + suffix for stem in ID_WORDS for suffix in ID_SUFFIXES)]
    return bool(stems) and all(w in stems or w in ID_EXTRA for w in words)


def _id_like_share(values: list[str], paths: list[str]) -> float:
    """The share of ``values`` that look like ids: codes (text with a digit, no spaces, not a number, date or
    file) or integers found in their own row's image path, not flanked by other digits."""
    hits = 0
    for value, path in zip(values, paths):
        if _INTEGER.match(value):
            hits += bool(re.search(rf"(?<!\d){re.escape(value.lstrip('+'))}(?!\d)", path))
        elif _CODE.match(value) and any(ch.isdigit() for ch in value) and not (
                _is_number(value) or _DATE.match(value) or _FILE.search(value)):
            hits += 1
    return hits / len(values)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
