"""Another project's napari_unet in the environment is told apart, at both ways in, with the fix.

The unrelated plugin published as ``napari-unet`` ships an import package called ``napari_unet``
too. Here a stand-in for its installed metadata (a ``.dist-info`` folder on ``sys.path``) or a
replaced ``__init__.py`` (the marker gone) plays the mixed environment.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import npe2
import pytest

import napari_unet
from napari_unet import cli, installation

MANIFEST = Path(napari_unet.__file__).with_name("napari_cell_unet.yaml")
OTHER_SUMMARY = "A Napari plugin allowing to train and run inference of a UNet model."


def write_dist_info(site: Path, *, name: str = "napari-unet", version: str = "1.0.0") -> Path:
    """The installed metadata of a distribution whose import package is ``napari_unet``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {OTHER_SUMMARY}\n"
    )
    (info / "top_level.txt").write_text("napari_unet\n")
    (info / "RECORD").write_text(f"napari_unet/__init__.py,,\n{info.name}/RECORD,,\n")
    return site


@pytest.fixture
def other_installed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_dist_info(tmp_path / "site")))


@pytest.fixture
def init_replaced(monkeypatch):
    monkeypatch.delattr(napari_unet, "__distribution__")


def test_this_environment_is_ours():
    assert installation.problem() is None
    installation.check()


def test_other_distribution_is_named_with_the_fix(other_installed):
    message = installation.problem()
    assert f"napari-unet 1.0.0 ({OTHER_SUMMARY!r})" in message
    assert "cannot live in one environment" in message
    assert "Fix: pip uninstall napari-unet, then reinstall this project: " in message
    assert "pip install --force-reinstall --no-deps napari-cell-unet" in message


def test_build_leftover_of_the_old_name_is_no_installation(tmp_path, monkeypatch):
    """setuptools leaves ``napari_unet.egg-info`` (no RECORD) beside the package it built."""
    leftover = tmp_path / "src" / "napari_unet.egg-info"
    leftover.mkdir(parents=True)
    (leftover / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: napari-unet\nVersion: 0.1.0\n")
    monkeypatch.syspath_prepend(str(leftover.parent))
    assert importlib.metadata.distribution("napari-unet").version == "0.1.0"
    assert installation.problem() is None


def test_replaced_init_is_told_apart(init_replaced):
    message = installation.problem()
    assert "is not napari-cell-unet's: its __init__.py was replaced or removed" in message
    assert "pip install --force-reinstall --no-deps napari-cell-unet" in message


@pytest.mark.parametrize("state", ["other_installed", "init_replaced"])
def test_command_line_stops_with_one_line_before_anything_else(state, request, capsys):
    request.getfixturevalue(state)
    assert cli.main(["--version"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("napari-unet: error: ") and "Traceback" not in line
    assert "pip install --force-reinstall --no-deps napari-cell-unet" in line
    assert captured.out == ""


def test_napari_activation_stops_with_the_message(other_installed):
    """napari activates a plugin (the manifest's on_activate) before its first widget or sample."""
    pm = npe2.PluginManager()
    pm.register(str(MANIFEST))
    with pytest.raises(installation.ForeignInstallationError) as info:
        pm.activate("napari-cell-unet")
    assert "Activating plugin 'napari-cell-unet' failed" in str(info.value)
    assert "pip uninstall napari-unet" in str(info.value)


def test_napari_activation_passes_when_all_is_ours():
    pm = npe2.PluginManager()
    pm.register(str(MANIFEST))
    pm.activate("napari-cell-unet")
    assert pm.get_context("napari-cell-unet")._activated
