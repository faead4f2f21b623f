"""Widget tests write their run folders under the test's tmp_path, never in the home folder."""

import pytest


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def tiny_settings(widget, steps):
    """A tiny network that learns the easy synthetic cells in a few dozen steps."""
    form = widget.form
    form.controls["depth"].setValue(2)
    form.controls["base_channels"].setValue(8)
    form.controls["steps"].setValue(steps)
    form.controls["time_limit"].setValue(0)
    form.controls["lr"].setValue(5e-3)
    form.controls["batch_size"].setValue(2)
    form.controls["tile"].setValue(0)  # auto: covers the whole small image
    form.controls["dropout"].setValue(0.0)
    form.augment.setChecked(False)
    form.controls["device"].setCurrentText("cpu")
    form.live.setChecked(False)


@pytest.fixture
def tiny():
    """``tiny(widget, steps)``: set the Train form to :func:`tiny_settings`."""
    return tiny_settings
