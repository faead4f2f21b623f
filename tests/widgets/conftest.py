"""Widget tests write their run folders under the test's tmp_path, never in the home folder."""

import pytest


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"
