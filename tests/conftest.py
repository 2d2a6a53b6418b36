"""Shared fixtures: tiny synthetic datasets, written once per test session.

Session-scoped dataset fixtures are shared by many tests: treat them as read-only and copy them
(``shutil.copytree(src, tmp_path / ...)``) before changing anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_default_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Point the default image cache (``$CXR_CACHE``) into the test session's temp folder, never ~/.cache."""
    monkeypatch.setenv("CXR_CACHE", str(tmp_path_factory.getbasetemp() / "cxr_cache"))


@pytest.fixture(scope="session")
def ped_cxr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-image Ped-ChestXray tree (``{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``), sides 48-96 px, seed 0."""
    from cxr.synth.ped_cxr import write_ped_cxr

    return write_ped_cxr(
        tmp_path_factory.mktemp("ped_cxr") / "chest_xray", n=60, seed=0, min_side=48, max_side=96
    )


@pytest.fixture(scope="session")
def rsna_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image RSNA challenge folder (CSVs, ``stage_2_{train,test}_images/*.dcm``), 256 px, seed 0, 3 test images."""
    from cxr.synth.rsna import write_rsna

    return write_rsna(tmp_path_factory.mktemp("rsna") / "rsna", n=24, seed=0, size=256, n_test=3)


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test: on a small shared CPU, several OpenMP threads per process
    thrash, and one is several times faster for the small models of the learning tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
