"""Real development radiographs from ``../shared/data`` (beside the project root); every test here
skips cleanly where that folder is absent, as in a user's clone."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the real development sets ship beside the project, not in it)")
    return folder


@pytest.fixture(scope="session")
def kermany_dev() -> Path:
    """``kermany_dev/``: 2,860 real pediatric radiographs, Kermany layout, train/test patient-disjoint."""
    return _shared("kermany_dev")


@pytest.fixture(scope="session")
def rsna_dev() -> Path:
    """``rsna_dev/``: 209 real radiographs in the RSNA challenge layout with the challenge's boxes."""
    return _shared("rsna_dev")
