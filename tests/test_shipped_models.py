"""Shipped named models (napari_unet.models): registry, clear errors, fp16 files, the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import napari_unet.models as models
from napari_unet.cli import main
from napari_unet.core.io import load_model, read_metadata, save_model
from napari_unet.core.model import UNet


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """The registry pointed at a temporary folder (no file in it yet)."""
    monkeypatch.setattr(models, "_HERE", tmp_path)
    return tmp_path


def test_unshipped_name_is_a_clear_error(registry):
    assert "nuclei" in models.model_names() and models.available_models() == []
    with pytest.raises(FileNotFoundError, match=r"nuclei.*no weights.*train_shipped_model"):
        models.model_path("nuclei")
    with pytest.raises(KeyError, match="not a shipped model"):
        models.model_path("mitochondria")
    assert models.resolve_model("some/file.safetensors") == Path("some/file.safetensors")


def test_cli_predict_and_train_name_the_missing_shipped_model(registry, tmp_path, capsys):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((40, 40), np.uint8))
    assert main(["predict", "--model", "nuclei", "--input", str(img),
                 "--output", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "--model" in err and "nuclei" in err and "no weights" in err
    lab = tmp_path / "lab.tif"
    tifffile.imwrite(lab, np.zeros((40, 40), np.uint16))
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out",
                 str(tmp_path / "m.safetensors"), "--init", "nuclei", "--steps", "1"]) != 0
    assert "--init" in capsys.readouterr().err


def _ship_tiny(folder: Path) -> UNet:
    torch.manual_seed(0)
    net = UNet(depth=1, base_channels=4).eval()
    save_model(net.half(), folder / "nuclei.safetensors")  # fp16 weights, as shipped
    return net.float()


def test_shipped_fp16_model_loads_as_float32_and_predicts_via_cli(registry, tmp_path):
    net = _ship_tiny(registry)
    assert models.available_models() == ["nuclei"]
    model, _ = load_model(models.model_path("nuclei"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for a, b in zip(model.parameters(), net.parameters(), strict=True):
        assert torch.allclose(a, b.half().float())
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    assert main(["predict", "--model", "nuclei", "--input", str(img),
                 "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "img_labels.tif").is_file()


def test_shipped_model_loads_without_network(tmp_path):
    """In a fresh interpreter whose sockets all fail, the shipped model still loads."""
    folder = tmp_path / "models"
    folder.mkdir()
    _ship_tiny(folder)
    code = f"""
import socket
def refuse(*a, **k):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
import napari_unet.models as m
m._HERE = __import__("pathlib").Path({str(folder)!r})
from napari_unet.core.io import load_model
model, meta = load_model(m.model_path("nuclei"))
print("loaded", model.depth)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded 1" in out.stdout


def test_gray_image_predicts_with_an_rgb_model(tmp_path):
    torch.manual_seed(0)
    path = save_model(UNet(in_channels=3, depth=1, base_channels=4), tmp_path / "rgb.safetensors")
    img = tmp_path / "gray.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    assert main(["predict", "--model", str(path), "--input", str(img),
                 "--output", str(tmp_path / "out")]) == 0


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dsb.py"
    spec = importlib.util.spec_from_file_location("bench_dsb", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_split_is_fixed_and_disjoint():
    bench = _bench()
    split = json.loads((Path(bench.__file__).parent / "splits.json").read_text())["dsb2018"]
    parts = {k: set(split[k]) for k in ("train", "validation", "test")}
    assert {k: len(v) for k, v in parts.items()} == {"train": 384, "validation": 80, "test": 100}
    assert sum(len(v) for v in parts.values()) == len(set.union(*parts.values()))
    colour = set(split["colour"])
    assert all(len(v & colour) >= 10 for v in parts.values())  # colour / H&E in every part
    rows = [{"tp": 3, "fp": 1, "fn": 0, "f1": 6 / 7}, {"tp": 1, "fp": 0, "fn": 2, "f1": 0.5}]
    s = bench.scores(rows)
    assert s["ap50"] == round(4 / 7, 4) and s["f1"] == round(8 / 11, 4)


def test_bench_writes_shipped_file_and_card(registry, tmp_path):
    bench = _bench()
    src = save_model(UNet(depth=1, base_channels=4), tmp_path / "m.safetensors",
                     history=[{"step": 1, "loss": 0.5}], training={"steps": 1})
    report = {"args": {"train_set": "train", "time_limit": "1"}, "scored_on": "test",
              "training": {"steps": 1}}
    shipped = bench.write_shipped(src, report, ["a"], ["b"], name="nuclei")
    state = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(shipped))
    assert all(t.dtype == torch.float16 for t in state.values())
    meta = read_metadata(shipped)  # the per-step history stays out of the shipped file
    assert meta["training"] == {"steps": 1} and not meta.get("history")
    assert meta["postprocess"]["scales"] == bench.SHIPPED_SCALES  # a new ship keeps them
    s = {"images": 1, "f1": 0.5, "ap50": 0.33, "f1_mean_per_image": 0.5}
    report["shipped"] = {"test": {"all": s, "gray": s, "colour": None}}
    card = bench.write_card(shipped, report, ["a"], ["b"], name="nuclei").read_text()
    for field in ("description", "authors", "cite", "license", "training_data", "inputs",
                  "outputs", "F1@0.5", "0.500", "- scales: "):
        assert field in card
    # the peer's section of the card (bench_peers.py's figures) survives the card's rewrite
    path = models.REGISTRY["nuclei"].card_path
    path.write_text(card.replace("Test ids:", "## Against StarDist (an hour)\n\n0.844\n\nTest ids:"))
    again = bench.write_card(shipped, report, ["a"], ["b"], name="nuclei").read_text()
    assert "## Against StarDist (an hour)\n\n0.844\n\nTest ids:" in again
    assert again.count("## Against StarDist") == 1


def test_the_shipped_nuclei_model_averages_scales_on_colour_images_only():
    from napari_unet.core.predict.scales import stored_scales

    path = models.REGISTRY["nuclei"].path
    if not path.is_file():
        pytest.skip("the nuclei weights are not in this checkout")
    meta = read_metadata(path)
    assert stored_scales(meta, colour=True) == (1.0, 0.7, 1.4)
    assert stored_scales(meta, colour=False) == (1.0,)
    card = models.REGISTRY["nuclei"].card_path.read_text(encoding="utf-8")
    assert '- scales: {"gray": [1.0], "colour": [1.0, 0.7, 1.4]}' in card and "0.724" in card
