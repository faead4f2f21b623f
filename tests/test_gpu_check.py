"""benchmarks/gpu_check.sh, the prepared GPU check: its syntax, its skip without CUDA, every
part's code path on the CPU (``--cpu-dry-run``: tiny networks and images, the CUDA tests'
code on the CPU), its deadline, the data pack and the report parsing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.commands.files import write_image
from napari_unet.core.predict.passes import TTA_TRANSFORMS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PARTS = ("env", "cuda_tests", "memory", "speed", "predict", "dsb", "core_tests")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bash(*args, out: Path, timeout: float = 900, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out),
           "TMPDIR": str(out.parent), **env}
    env.pop("NAPARI_UNET_TEST_DEVICE", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=out.parent, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One ``--cpu-dry-run`` of every part: (the finished process, its output folder)."""
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    return _bash("--cpu-dry-run", out=out), out


def test_script_syntax():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_help_and_a_wrong_option(tmp_path):
    help_ = _bash("--help", out=tmp_path / "out")
    assert help_.returncode == 0 and all(p in help_.stdout for p in PARTS)
    wrong = _bash("--cpu-dry-runn", out=tmp_path / "out")
    assert wrong.returncode == 2 and "unknown option --cpu-dry-runn" in wrong.stderr
    assert not (tmp_path / "out").exists()


@no_cuda
def test_skips_cleanly_without_cuda(tmp_path):
    done = _bash(out=tmp_path / "out", timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "no CUDA device: skipped\n", "")
    assert not (tmp_path / "out").exists()  # nothing else ran


@pytest.mark.slow
def test_cpu_dry_run_runs_every_part(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(out.iterdir())) <= 8  # a device call returns at most 8 files
    figures = json.loads((out / "gpu_check.json").read_text())
    assert {k: v["exit_code"] for k, v in figures["parts"].items()} == {
        **{p: 0 for p in PARTS}, "core_tests": -1}
    assert figures["env"]["torch"] == torch.__version__
    log = (out / "gpu_check.log").read_text().splitlines()
    assert [line.split()[1] for line in log if line.startswith("== ")] == [
        *PARTS[:-1], "core_tests:", "done"]


@pytest.mark.slow
def test_cpu_dry_run_runs_the_cuda_tests_code_on_the_cpu(dry_run):
    _, out = dry_run
    tests = json.loads((out / "gpu_check.json").read_text())["cuda_tests"]
    # tests/core/test_cuda.py ran on the CPU; the augmentation's CUDA test skipped
    assert tests["failed"] == 0 and tests["passed"] >= 3, tests
    assert tests["skip_reasons"] and all("CUDA" in r for r in tests["skip_reasons"])


@pytest.mark.slow
def test_cpu_dry_run_figures(dry_run):
    _, out = dry_run
    figures = json.loads((out / "gpu_check.json").read_text())
    speed = figures["speed"]
    for net in ("paper", "cpu_recipe"):
        assert speed[f"{net}_mixed"]["autocast"] == "bfloat16"
        assert speed[f"{net}_float32"]["autocast"] == "none (float32)"
        assert all(speed[f"{net}_{m}"]["steps_per_s"] > 0 for m in ("mixed", "float32"))
        assert speed[f"{net}_mixed_speedup"] > 0
    assert (speed["paper_mixed"]["preset"], speed["cpu_recipe_mixed"]["preset"]) == (
        "paper", "adamw")
    assert (speed["paper_mixed"]["batch"], speed["cpu_recipe_mixed"]["batch"]) == (1, 2)
    predict = figures["predict"]
    assert {k for k in predict if k.startswith(("paper", "nuclei"))} == {
        "paper_one_pass", "paper_tta", "nuclei_one_pass", "nuclei_tta", "nuclei_segment"}
    assert predict["tta_passes"] == len(TTA_TRANSFORMS)
    assert all(predict[k]["mpixel_per_s"] > 0 for k in predict if k.startswith("nuclei"))
    dsb = figures["dsb"]
    assert dsb["end"] == "done" and dsb["steps"] == 3 and dsb["settings"]["device"] == "cpu"
    assert dsb["validation"]["images"] == 2 and dsb["validation_colour"]["images"] == 1
    assert 0 <= dsb["validation"]["f1_mean_per_image"] <= 1
    assert (out / "dsb_events.jsonl").is_file()
    memory = figures["memory"]
    assert (memory["end"], memory["exit_code"], memory["steps"]) == ("done", 0, 3)
    assert memory["child_device"] == "cpu" and memory["model_published_on"] == "cpu"
    # polled as the widget does: its client showed the 3 losses and published the model
    assert (memory["losses_shown"], memory["errors"]) == (3, [])


def test_a_part_past_the_deadline_is_not_run(tmp_path):
    out = tmp_path / "out"
    done = _bash("--cpu-dry-run", "--parts", "memory,speed", out=out, GPU_CHECK_SECONDS="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== memory: not run (" in done.stdout and "== speed: not run (" in done.stdout
    figures = json.loads((out / "gpu_check.json").read_text())
    assert set(figures) == {"parts"}  # no part computed a figure
    for part in ("memory", "speed"):
        mark = figures["parts"][part]
        assert (mark["exit_code"], mark["seconds"]) == (-1, 0)
        assert mark["note"].startswith("not run: ") and mark["note"].endswith("left of 0 s")


def test_a_failing_part_fails_the_check(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")  # a pack without its files
    done = _bash("--cpu-dry-run", "--parts", "env,dsb", str(bad), out=tmp_path / "out")
    assert done.returncode == 1, done.stdout + done.stderr
    parts = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["parts"]
    assert (parts["env"]["exit_code"], parts["dsb"]["exit_code"]) == (0, 1)
    # no data folder: the part is marked as not run, and the check goes on
    done = _bash("--cpu-dry-run", "--parts", "dsb", str(tmp_path / "none"), out=tmp_path / "o2")
    assert done.returncode == 0 and "== dsb: no data folder" in done.stdout
    assert json.loads((tmp_path / "o2" / "gpu_check.json").read_text())["parts"]["dsb"][
        "exit_code"] == -1


def test_pack_copies_the_files(tmp_path):
    gpu_pack = _module("gpu_pack")
    src = tmp_path / "src"
    gray = np.random.default_rng(0).integers(0, 255, (12, 10), dtype=np.uint8)
    write_image(src / "g.png", np.stack([gray, gray, gray, np.full_like(gray, 255)], -1))
    write_image(src / "c.png", np.stack([gray, gray // 2, 255 - gray], -1))
    for i in ("g", "c", "unused"):
        tifffile.imwrite(src / f"{i}_lab.tif", np.arange(120, dtype=np.uint16).reshape(12, 10))
    m = gpu_pack.pack(tmp_path / "pack", {"train": ["g"], "validation": ["c"]},
                      image_path=lambda i: src / f"{i}.png",
                      label_path=lambda i: src / f"{i}_lab.tif", colour={"c", "unused"})
    assert m["parts"] == {"train": ["g"], "validation": ["c"]} and m["colour"] == ["c"]
    for part, i in (("train", "g"), ("validation", "c")):
        for kind, name in (("images", f"{i}.png"), ("labels", f"{i}_lab.tif")):
            packed = tmp_path / "pack" / part / kind / f"{i}{Path(name).suffix}"
            assert packed.read_bytes() == (src / name).read_bytes()
    assert json.loads((tmp_path / "pack" / "manifest.json").read_text()) == m
    with pytest.raises(FileExistsError, match="holds a pack already"):
        gpu_pack.pack(tmp_path / "pack", {"train": ["g"]}, image_path=lambda i: src / "g.png",
                      label_path=lambda i: src / "g_lab.tif")


def test_junit_report_counts(tmp_path):
    check = _module("gpu_check")
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t.a" name="ok"/>'
        '<testcase classname="t.a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t.b" name="err"><error message="y"/></testcase>'
        '<testcase classname="t.b" name="gpu"><skipped message="needs a CUDA device"/></testcase>'
        "</testsuite></testsuites>")
    args = type("Args", (), {"junit": str(xml), "rc": 1, "seconds": 2.0})
    r = check.junit(args)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"]) == (4, 1, 2, 1)
    assert r["failures"] == ["t.a::bad", "t.b::err"]
    assert r["skip_reasons"] == {"needs a CUDA device": 1}
    args.junit = str(tmp_path / "missing.xml")
    assert check.junit(args)["report"] is None


def test_mixed_precision_switch_follows_the_device():
    check = _module("gpu_check")
    from napari_unet.core.synthetic import synthetic_cells
    from napari_unet.core.training import TrainConfig, Trainer

    image, labels = synthetic_cells((48, 48), radius=6, seed=0)
    trainer = Trainer([(image, labels)], TrainConfig(steps=1, depth=1, base_channels=2,
                                                     validate_every=0, val_fraction=0.0,
                                                     device="cpu"))
    check.set_mixed_precision(trainer, True)
    assert trainer.bf16 and not trainer.channels_last
    check.set_mixed_precision(trainer, False)
    assert not trainer.bf16 and trainer.channels_last
    assert trainer.model.down[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    trainer.device = torch.device("cuda")  # the CUDA branch: flags only, nothing moves
    check.set_mixed_precision(trainer, False)
    assert (trainer.amp, trainer.scaler.is_enabled(), trainer.channels_last) == (
        False, False, False)
    check.set_mixed_precision(trainer, True)
    assert trainer.amp and trainer.channels_last
