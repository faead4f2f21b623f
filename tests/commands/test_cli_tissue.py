"""`napari-unet train` recognises a tissue; `predict --tissue / --no-tissue`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.io import read_metadata, save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import labels_from_probabilities, predict_image
from napari_unet.core.synthetic import synthetic_tissue

TINY = ["--steps", "2", "--depth", "1", "--base-channels", "2", "--tile", "44",
        "--validate-every", "0", "--val-fraction", "0", "--device", "cpu", "--cpu-bf16", "off"]


def test_train_recognises_a_tissue_and_says_so(tmp_path, capsys):
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for i in range(2):
        image, labels = synthetic_tissue((48, 48), cell_size=12, seed=i)
        tifffile.imwrite(img / f"{i}.tif", (image * 1000).astype(np.uint16))
        tifffile.imwrite(lab / f"{i}.tif", labels)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out", str(out),
                 *TINY]) == 0
    assert ("; target tissue (100 % of the annotated cells' outline touches another cell; "
            "tissue from 50 %)") in capsys.readouterr().err
    meta = read_metadata(out)
    assert meta["target"] == "tissue" and meta["architecture"]["num_classes"] == 3
    forced = tmp_path / "objects.safetensors"
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out", str(forced),
                 "--target", "objects", *TINY]) == 0
    meta = read_metadata(forced)
    assert meta["target"] == "objects" and meta["architecture"]["num_classes"] == 2
    assert "; target objects (chosen)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tissue_model(tmp_path_factory):
    torch.manual_seed(0)
    net = UNet(num_classes=3, depth=1, base_channels=4).eval()
    path = tmp_path_factory.mktemp("m") / "tissue.safetensors"
    return save_model(net, path, target="tissue"), net


@pytest.mark.parametrize("flag, tissue", [([], True), (["--no-tissue"], False)])
def test_predict_fills_the_space_for_a_tissue_model_unless_told_not_to(
        tmp_path, tissue_model, flag, tissue, capsys):
    path, net = tissue_model
    image, _ = synthetic_tissue((40, 44), cell_size=10, seed=3)
    tifffile.imwrite(tmp_path / "t.tif", image)
    assert main(["predict", "--model", str(path), "--input", str(tmp_path / "t.tif"),
                 "--output", str(tmp_path / "out"), "--tile", "44", "--no-tta", "--device",
                 "cpu", *flag]) == 0, capsys.readouterr().err
    labels = tifffile.imread(tmp_path / "out" / "t_labels.tif")
    prob = predict_image(net, image, tile_shape=(44, 44))
    np.testing.assert_array_equal(labels, labels_from_probabilities(prob, tissue=tissue))


def test_predict_tissue_on_a_model_of_objects(tmp_path, capsys):
    torch.manual_seed(1)
    net = UNet(depth=1, base_channels=4).eval()
    path = save_model(net, tmp_path / "m.safetensors")
    image, _ = synthetic_tissue((40, 44), cell_size=10, seed=4)
    tifffile.imwrite(tmp_path / "t.tif", image)
    assert main(["predict", "--model", str(path), "--input", str(tmp_path / "t.tif"),
                 "--output", str(tmp_path / "out"), "--tile", "44", "--no-tta", "--device",
                 "cpu", "--tissue", "--min-size", "0"]) == 0, capsys.readouterr().err
    assert (tifffile.imread(tmp_path / "out" / "t_labels.tif") > 0).all()  # a 2-class model


def _bench_tissue():
    """benchmarks/bench_tissue.py as a module and its shared data folder (skip without it)."""
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_tissue",
                                                  root / "benchmarks" / "bench_tissue.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = bench.DEFAULT_DATA
    if not (data / "images" / "plantseg_ovule_cells.tif").exists():
        pytest.skip("the shared volumes are not here")
    return bench, data


def test_the_benchmark_runs_small(tmp_path, capsys):
    """benchmarks/bench_tissue.py --smoke: both targets trained and predicted through the
    command line on a crop of the shared ovule volume, scored."""
    bench, data = _bench_tissue()
    report = tmp_path / "r.json"
    assert bench.main(["--smoke", "--data", str(data), "--json", str(report)]) == 0
    import json

    results = json.loads(report.read_text())["results"]
    assert set(results) == {"objects", "objects+tissue", "tissue"}
    assert results["tissue"]["training"]["target"] == "tissue"
    assert results["objects"]["training"]["target"] == "objects"
    assert results["objects+tissue"]["test"]["tissue_share"] == 1.0
    assert all(0 <= r["test"]["f1"] <= 1 for r in results.values())


def test_the_benchmark_compares_recipes(tmp_path):
    """bench_tissue.py --recipes old,new: one model per recipe through the command line, the
    old one trained contiguous (--cpu-channels-last off), each row naming its recipe."""
    bench, data = _bench_tissue()
    report = tmp_path / "r.json"
    assert bench.main(["--smoke", "--data", str(data), "--targets", "tissue", "--recipes",
                       "old,new", "--keep", str(tmp_path / "keep"), "--json", str(report)]) == 0
    import json

    from napari_unet.core.io import read_metadata

    results = json.loads(report.read_text())["results"]
    assert set(results) == {"tissue (old recipe)", "tissue (new recipe)"}
    assert [r["training"]["recipe"] for r in results.values()] == ["old", "new"]
    layouts = [read_metadata(tmp_path / "keep" / f"tissue_{r}_recipe.safetensors")["training"]
               ["cpu_channels_last"] for r in ("old", "new")]
    assert layouts == ["off", "auto"]
