"""Packaging: light imports, the manifest and its entries, the console script."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import napari_unet

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path(napari_unet.__file__).with_name("napari.yaml")


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
    mods = _modules_after("import napari_unet, napari_unet.core, napari_unet.cli")
    assert not [m for m in mods if m.split(".")[0] in HEAVY]


def test_plugin_discovery_is_light():
    mods = _modules_after(
        "import npe2\n"
        "pm = npe2.PluginManager.instance(); pm.discover()\n"
        "assert 'napari-unet' in pm._manifests, list(pm._manifests)"
    )
    assert not [m for m in mods if m.split(".")[0] in HEAVY[:-1]]


def test_manifest_at_root_is_the_package_manifest():
    assert (ROOT / "napari.yaml").resolve() == MANIFEST.resolve()


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-unet"


def _python_names():
    data = yaml.safe_load(MANIFEST.read_text())
    return [c["python_name"] for c in data["contributions"]["commands"]]


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


def test_regular_install_ships_manifest_and_entry_point(tmp_path):
    """A built wheel (regular install) carries napari.yaml and the napari.manifest entry point."""
    import zipfile

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build a wheel here: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("napari_unet-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari_unet/napari.yaml" in names
    assert "[napari.manifest]" in entry_points and "napari_unet:napari.yaml" in entry_points
