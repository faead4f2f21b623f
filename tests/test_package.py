"""Packaging: light imports, the manifest and its entries, the console script."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import napari_unet
from napari_unet.installation import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path(napari_unet.__file__).with_name("napari_cell_unet.yaml")
WIDGETS = {"Annotate cells", "Weight map", "Train U-Net", "Predict"}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


HEAVY = ("torch", "qtpy", "PyQt6", "PyQt5", "PySide2", "PySide6", "magicgui", "napari")


def test_import_package_is_light():
    mods = _modules_after(
        "import napari_unet, napari_unet.core, napari_unet.cli, napari_unet.installation\n"
        "assert napari_unet.installation.problem() is None"
    )
    assert not [m for m in mods if m.split(".")[0] in HEAVY]


def test_plugin_discovery_is_light():
    mods = _modules_after(
        "import npe2\n"
        "pm = npe2.PluginManager.instance(); pm.discover()\n"
        "assert 'napari-cell-unet' in pm._manifests, list(pm._manifests)"
    )
    assert not [m for m in mods if m.split(".")[0] in HEAVY[:-1]]


def test_manifest_at_root_is_the_package_manifest():
    assert (ROOT / "napari.yaml").resolve() == MANIFEST.resolve()


def test_manifest_validates_and_follows_the_distribution_name():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == DISTRIBUTION == napari_unet.__distribution__ == "napari-cell-unet"
    assert all(c.id.startswith(f"{DISTRIBUTION}.") for c in manifest.contributions.commands)
    assert {w.display_name for w in manifest.contributions.widgets} == WIDGETS
    assert manifest.on_activate == "napari_unet.installation:activate"


def test_installed_distribution_points_napari_at_the_manifest():
    """The environment's metadata (what npe2 reads) names this project and its manifest file."""
    import importlib.metadata

    dist = importlib.metadata.distribution(DISTRIBUTION)
    (entry,) = [e for e in dist.entry_points if e.group == "napari.manifest"]
    assert (entry.name, entry.value) == (DISTRIBUTION, f"napari_unet:{MANIFEST.name}")
    (script,) = [e for e in dist.entry_points if e.group == "console_scripts"]
    assert (script.name, script.value) == ("napari-unet", "napari_unet.cli:main")


def _python_names():
    data = yaml.safe_load(MANIFEST.read_text())
    return [data["on_activate"]] + [c["python_name"] for c in data["contributions"]["commands"]]


@pytest.mark.parametrize("python_name", _python_names())
def test_every_manifest_entry_imports(python_name):
    module, _, attr = python_name.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_console_script_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "napari_unet", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and napari_unet.__version__ in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "napari_unet", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_napari_hub_description_shows_the_loop_with_every_screenshot():
    """``.napari-hub/DESCRIPTION.md``: the plugin hub's page, with docs/images' screenshots."""
    import re

    hub = ROOT / ".napari-hub" / "DESCRIPTION.md"
    text = hub.read_text(encoding="utf-8")
    shown = {(hub.parent / src).resolve() for src in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)}
    assert shown == {p.resolve() for p in (ROOT / "docs" / "images").glob("*.png")}
    assert all(f"**{name}**" in text for name in WIDGETS)
    assert f"pip install {DISTRIBUTION}\n" in text and "pip uninstall napari-unet" in text
