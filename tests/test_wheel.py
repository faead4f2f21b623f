"""The built distribution works without the source tree.

``python -m build`` makes an sdist and a wheel that hold the package, its napari manifest, the
shipped ``nuclei`` model and its card and the sample data, and nothing of tests/, benchmarks/,
scripts/ or the docs' images. The wheel, installed into a fresh virtual environment (the way a user
installs it, with every dependency resolved by pip), runs the demo, predicts with the shipped model
on the shipped sample image, and is found and validated by napari's plugin engine (npe2). With the
unrelated ``napari-unet`` installed over it, both ways in stop with the message and its fix works.

The environment takes about 20 s to make here: pip installs from the package index (torch as in
scripts/install.sh: ``TORCH_SPEC``, default the CPU build ``torch==2.13.0``), without compiling
byte code, with the pip of the running environment (``pip --python``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from email.parser import Parser
from fnmatch import fnmatch
from pathlib import Path

import pytest

import napari_unet
from napari_unet.installation import DISTRIBUTION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_unet"
#: what a user needs beside the code; every one must be in both archives
DATA = {
    "napari_unet/napari_cell_unet.yaml",
    "napari_unet/models/nuclei.safetensors",
    "napari_unet/models/nuclei.md",
    "napari_unet/data/dsb2018_nuclei.png",
    "napari_unet/data/dsb2018_nuclei_labels.tif",
    "napari_unet/data/ATTRIBUTION.md",
}
REPOSITORY_ONLY = ("tests/", "benchmarks/", "scripts/", "docs/", ".napari-hub/", "napari.yaml")


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def _ok(cmd, **kwargs) -> str:
    out = _run(cmd, **kwargs)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel of this checkout, built by ``python -m build`` (wheel from sdist)."""
    out = tmp_path_factory.mktemp("dist")
    _ok([sys.executable, "-m", "build", "--outdir", out, ROOT])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        names = {m.name.removeprefix(f"{top}/") for m in tf.getmembers() if m.isfile()}
    return {n.removeprefix("src/") for n in names}


def test_archives_hold_code_manifest_model_and_samples_and_nothing_else(dist):
    code = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")
            if "__pycache__" not in p.parts}
    for kind, names in (("wheel", _wheel_names(dist["wheel"])),
                        ("sdist", _sdist_names(dist["sdist"]))):
        assert DATA <= names, f"{kind} lacks {sorted(DATA - names)}"
        assert code <= names, f"{kind} lacks {sorted(code - names)}"
        stray = sorted(n for n in names if n.startswith(REPOSITORY_ONLY)
                       or (n.endswith(".png") and n not in DATA))
        assert not stray, f"{kind} holds files of the repository only: {stray}"
    assert dist["wheel"].name.startswith("napari_cell_unet-")


def test_wheel_metadata_is_what_napari_hub_reads(dist):
    with zipfile.ZipFile(dist["wheel"]) as zf:
        info = next(n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DISTRIBUTION and meta["Version"] == napari_unet.__version__
    assert "Framework :: napari" in meta.get_all("Classifier")
    assert "U-Net" in meta["Summary"] and meta["License-Expression"] == "BSD-3-Clause"
    assert {u.split(",")[0] for u in meta.get_all("Project-URL")} >= {"User Support"}
    assert meta["Description-Content-Type"] == "text/markdown" and "napari-cell-unet" in (
        meta.get_payload())
    assert "napari-cell-unet = napari_unet:napari_cell_unet.yaml" in entry_points
    assert "napari-unet = napari_unet.cli:main" in entry_points


def test_readme_install_line_installs_the_built_wheel(dist):
    """The README's install command names this distribution's wheel as ``python -m build`` names it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    wheels = [w for line in readme.splitlines() if "pip install" in line
              for w in shlex.split(line.strip()) if w.startswith("dist/") and w.endswith(".whl")]
    assert wheels and all(fnmatch(f"dist/{dist['wheel'].name}", w) for w in wheels), wheels


# --- a fresh virtual environment with the wheel installed ---------------------------------------

def _scratch(tmp_path_factory) -> Path:
    """A folder for the environment (1.4 GB): in memory where there is room, since deleting it
    from disk takes long (67 s on this machine's ext4 mounted with discard; none from tmpfs)."""
    shm = Path("/dev/shm")
    try:
        fs = os.statvfs(shm)
        if not fs.f_flag & os.ST_NOEXEC and fs.f_bavail * fs.f_frsize > 4 * 2**30:
            return Path(tempfile.mkdtemp(prefix="napari-cell-unet-wheel-", dir=shm))
    except OSError:
        pass
    return tmp_path_factory.mktemp("fresh")


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """A fresh virtual environment holding the wheel and its dependencies; removed afterwards."""
    root = _scratch(tmp_path_factory)
    env_dir = root / "venv"
    _ok([sys.executable, "-m", "venv", "--without-pip", env_dir])
    python = env_dir / "bin" / "python"
    torch_spec = shlex.split(os.environ.get("TORCH_SPEC", "torch==2.13.0"))
    _ok(_pip(python, "install", "--no-compile", *torch_spec, dist["wheel"]))
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NAPARI_UNET_RUNS")}
    env["NAPARI_UNET_RUNS"] = str(root / "runs")
    yield {"python": python, "bin": env_dir / "bin", "work": work, "env": env,
           "wheel": dist["wheel"]}
    shutil.rmtree(root, ignore_errors=True)


def _pip(python: Path, *args) -> list:
    return [sys.executable, "-m", "pip", "--python", python, *args, "-q",
            "--disable-pip-version-check"]


def _in(venv, *cmd) -> subprocess.CompletedProcess:
    return _run(cmd, cwd=venv["work"], env=venv["env"])


def _ok_in(venv, *cmd) -> str:
    return _ok(cmd, cwd=venv["work"], env=venv["env"])


DISCOVER = """
import napari_unet, npe2
from napari_unet.sample_data import DATA_DIR
pm = npe2.PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-cell-unet")
print("package", napari_unet.__file__)
print("widgets", sorted(w.display_name for w in manifest.contributions.widgets))
try:  # what napari does when the sample is opened: activate the plugin, call the command
    layers = pm.commands.get("napari-cell-unet.sample_nuclei")()
    print("sample", [kind for _, _, kind in layers])
except Exception as exc:
    print("failed", exc)
print("image", DATA_DIR / "dsb2018_nuclei.png")
"""


def _discover(venv) -> dict[str, str]:
    lines = _ok_in(venv, venv["python"], "-c", DISCOVER).splitlines()
    return dict(line.split(" ", 1) for line in lines if line.split(" ", 1)[0] in
                {"package", "widgets", "sample", "failed", "image"})


def test_installed_wheel_runs_demo_predict_and_plugin_discovery(venv):
    import tifffile

    found = _discover(venv)
    site = str(venv["python"].parents[1])
    assert found["package"].startswith(site) and not found["package"].startswith(str(ROOT))
    assert found["widgets"] == "['Annotate cells', 'Predict', 'Train U-Net', 'Weight map']"
    assert found["sample"] == "['image', 'labels']", found
    assert "valid" in _ok_in(venv, venv["bin"] / "npe2", "validate", DISTRIBUTION)

    # a few training steps are enough to show the installed copy trains, predicts and writes
    _ok_in(venv, venv["bin"] / "napari-unet", "demo", "--steps", "3", "--out", "demo")
    assert {"model.safetensors", "overlay.png", "labels_pred.tif"} <= {
        p.name for p in (venv["work"] / "demo").iterdir()}

    image = Path(found["image"])
    assert image.is_file() and image.is_relative_to(site)
    _ok_in(venv, venv["bin"] / "napari-unet", "predict", "--model", "nuclei", "--input", image,
           "--output", "pred")
    pred = tifffile.imread(venv["work"] / "pred" / "dsb2018_nuclei_labels.tif")
    true = tifffile.imread(image.with_name("dsb2018_nuclei_labels.tif"))
    n_pred, n_true = len(set(pred.ravel()) - {0}), len(set(true.ravel()) - {0})
    assert 0.7 * n_true <= n_pred <= 1.3 * n_true, (n_pred, n_true)  # the shipped weights work


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_other_wheel(folder: Path) -> Path:
    """A stand-in for the wheel of the package index's ``napari-unet`` 1.0.0: same name, same
    import package, the same shared paths (``napari_unet/__init__.py``, ``napari.yaml``)."""
    info = "napari_unet-1.0.0.dist-info"
    files = {
        "napari_unet/__init__.py": b'__version__ = "1.0.0"\n',
        "napari_unet/napari.yaml": (
            b"name: napari-unet\ndisplay_name: Napari UNet\ncontributions:\n  commands:\n"
            b"    - id: napari-unet.unet_training\n      title: UNet Training\n"
            b"      python_name: napari_unet.widgets.unet_training_widget:UNetTrainingWidget\n"
            b"  widgets:\n    - command: napari-unet.unet_training\n"
            b"      display_name: UNet Training\n"),
        "napari_unet/widgets/unet_training_widget.py": b"class UNetTrainingWidget:\n    pass\n",
        f"{info}/METADATA": (b"Metadata-Version: 2.1\nName: napari-unet\nVersion: 1.0.0\n"
                             b"Summary: A Napari plugin allowing to train and run inference of a "
                             b"UNet model.\n"),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[napari.manifest]\nnapari-unet = napari_unet:napari.yaml\n",
        f"{info}/top_level.txt": b"napari_unet\n",
    }
    record = "\n".join([*(_record_line(p, d) for p, d in files.items()), f"{info}/RECORD,,", ""])
    wheel = folder / "napari_unet-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


def test_other_napari_unet_installed_over_it_is_reported_and_the_fix_works(venv, tmp_path):
    python, napari_unet_cmd = venv["python"], venv["bin"] / "napari-unet"
    _ok_in(venv, napari_unet_cmd, "--version")
    _ok(_pip(python, "install", "--no-deps", write_other_wheel(tmp_path)))

    out = _in(venv, napari_unet_cmd, "--version")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "napari-unet 1.0.0" in out.stderr and "cannot live in one environment" in out.stderr
    assert "Fix: pip uninstall napari-unet, then reinstall this project" in out.stderr
    failed = _discover(venv)["failed"]  # napari opening a sample or widget of ours
    assert "Activating plugin 'napari-cell-unet' failed" in failed
    assert "pip uninstall napari-unet" in failed

    # the fix, step by step: uninstalling the other takes the shared __init__.py with it ...
    _ok(_pip(python, "uninstall", "-y", "napari-unet"))
    out = _in(venv, napari_unet_cmd, "--version")
    assert out.returncode == 2 and "__init__.py was replaced or removed" in out.stderr
    # ... which reinstalling this project puts back
    _ok(_pip(python, "install", "--force-reinstall", "--no-deps", venv["wheel"]))
    assert napari_unet.__version__ in _ok_in(venv, napari_unet_cmd, "--version")
    assert _discover(venv)["sample"] == "['image', 'labels']"
