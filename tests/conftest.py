"""Shared fixtures: the real data in ../shared/data, and an offline, deterministic environment."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDTRANSFER_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real X-ray data next to the checkout; skip (with the reason) when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (tests that need ../shared/data are skipped)")
    return SHARED_DATA
