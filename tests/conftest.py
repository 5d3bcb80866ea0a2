"""Shared fixtures: the real data in ../shared/data, and an offline, deterministic environment."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDTRANSFER_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def image_cache(tmp_path_factory) -> Path:
    """The image cache of every test (and of the CLI processes they start) in one temporary folder, never the
    real ~/.cache: tests stay hermetic, and the session still decodes each dataset once. A test that needs
    its own sets data.cache_dir or $MEDTRANSFER_CACHE itself."""
    folder = tmp_path_factory.mktemp("image-cache")
    before = os.environ.get("MEDTRANSFER_CACHE")
    os.environ["MEDTRANSFER_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("MEDTRANSFER_CACHE", None)
    else:
        os.environ["MEDTRANSFER_CACHE"] = before


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real X-ray data next to the checkout; skip (with the reason) when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (tests that need ../shared/data are skipped)")
    return SHARED_DATA
