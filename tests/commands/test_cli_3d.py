"""`napari-unet predict` / `evaluate` on 3D TIFF stacks: a 3D model predicts volumes, a 2D
model planes, the mode is printed and a mismatch names the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.cli import main
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import segment

SPACING = (3.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    torch.manual_seed(0)
    net3 = UNet(depth=1, base_channels=2, ndim=3, spacing=SPACING).eval()
    meta = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
            "training": {"spacing": list(SPACING)}}
    net2 = UNet(depth=1, base_channels=2).eval()
    return (save_model(net3, d / "m3.safetensors", **meta), net3, meta,
            save_model(net2, d / "m2.safetensors"))


@pytest.fixture
def volume(tmp_path):
    vol = (np.random.default_rng(0).random((7, 20, 23)) * 1000).astype(np.uint16)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "vol.tif", vol)
    return vol


def test_predict_a_stack_as_a_volume_with_a_3d_model(tmp_path, models, volume, capsys):
    path3, net3, meta, _ = models
    code = main(["predict", "--model", str(path3), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--probabilities", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "as volumes (3D model, spacing (3.0, 1.0, 1.0))" in out
    labels = tifffile.imread(tmp_path / "out" / "vol_labels.tif")
    prob = tifffile.imread(tmp_path / "out" / "vol_probabilities.tif")
    ref_prob, ref_labels = segment(net3, volume, metadata=meta)
    assert prob.shape == (2, 7, 20, 23) and labels.shape == (7, 20, 23)
    np.testing.assert_allclose(prob, ref_prob, atol=1e-5)
    np.testing.assert_array_equal(labels, ref_labels)


def test_2d_model_predicts_planes_and_ndim3_mismatch_names_the_fix(tmp_path, models, volume,
                                                                   capsys):
    *_, path2 = models
    code = main(["predict", "--model", str(path2), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "o2"), "--device", "cpu"])
    assert code == 0 and "plane by plane" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "o2" / "vol_labels.tif").shape == (7, 20, 23)
    code = main(["predict", "--model", str(path2), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "o3"), "--ndim", "3"])
    err = capsys.readouterr().err
    assert code != 0 and "is a 2D model" in err and "--ndim 2" in err and "train --ndim 3" in err


def test_predict_zarr_volume_block_wise_with_a_3d_model(tmp_path, models, volume, capsys):
    path3, net3, meta, _ = models
    src = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=volume.shape,
                          chunks=(4, 8, 8), dtype="u2")  # fmt: skip
    src[:] = volume
    code = main(["predict", "--model", str(path3), "--input", str(tmp_path / "v.zarr"),
                 "--output", str(tmp_path / "o.zarr"), "--probabilities", "--block", "8"])
    assert code == 0 and "block by block as volumes" in capsys.readouterr().out
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    ref_prob, _ = segment(net3, volume, metadata=meta)
    np.testing.assert_allclose(group["probabilities"][:], ref_prob, atol=1e-5)


def test_evaluate_reports_3d_instance_f1(tmp_path, models, capsys):
    path3, net3, meta, _ = models
    vol = (np.random.default_rng(1).random((6, 18, 18)) * 500).astype(np.uint16)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", vol)
    _, pred = segment(net3, vol, metadata=meta)
    n = int(pred.max())
    assert n >= 1
    truth = pred.copy()
    obj = pred == n
    x = np.nonzero(obj)[2]
    cut = np.quantile(x, 0.3)
    split = obj & (np.arange(pred.shape[2]) < cut)
    assert 0 < split.sum() < 0.45 * obj.sum()
    truth[split] = n + 1  # the last cell is two in truth: one matched (IoU > 0.5), one missed
    tifffile.imwrite(tmp_path / "lab" / "a.tif", truth.astype(np.int32))
    code = main(["evaluate", "--model", str(path3), "--images", str(tmp_path / "img"),
                 "--labels", str(tmp_path / "lab"), "--json", "--device", "cpu"])
    cap = capsys.readouterr()
    assert code == 0 and "as volumes" in cap.err
    result = json.loads(cap.out)["images"][0]
    assert result["instance_f1"] == pytest.approx(2 * n / (2 * n + 1))
    assert result["n_pred"] == n and result["n_true"] == n + 1


def test_stitch_links_the_planes_of_a_2d_model_into_3d_objects(tmp_path, models, volume,
                                                                capsys, error_line):
    from napari_unet.core.io import load_model
    from napari_unet.core.predict.stitch import stitch_planes

    path3, *_, path2 = models
    net2, meta2 = load_model(path2)
    prob, _ = segment(net2, volume, metadata=meta2, stack=True)
    threshold = f"{float(np.median(prob[:, 1])):.5f}"  # half the pixels: many objects per plane
    base = ["predict", "--model", str(path2), "--input", str(tmp_path / "in"), "--device", "cpu",
            "--threshold", threshold, "--min-size", "0"]
    assert main([*base, "--output", str(tmp_path / "planes")]) == 0
    assert main([*base, "--output", str(tmp_path / "linked"), "--stitch"]) == 0
    planes = tifffile.imread(tmp_path / "planes" / "vol_labels.tif")
    linked = tifffile.imread(tmp_path / "linked" / "vol_labels.tif")
    assert planes.max() > 0 and not np.array_equal(planes, linked)
    np.testing.assert_array_equal(linked, stitch_planes(planes))
    code = main(["predict", "--model", str(path3), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "o3"), "--stitch"])
    assert code != 0 and "--stitch: a 3D model labels a volume in 3D already" in error_line()


def test_measure_a_volume_gives_one_3d_table(tmp_path, models, volume):
    import pandas as pd

    path3, *_ = models
    code = main(["predict", "--model", str(path3), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--device", "cpu", "--threshold", "0.0",
                 "--measure", "--pixel-size", "2", "0.5", "0.5"])
    assert code == 0
    labels = tifffile.imread(tmp_path / "out" / "vol_labels.tif")
    table = pd.read_csv(tmp_path / "out" / "vol_cells.csv")
    assert {"volume [µm³]", "centroid_z [µm]", "bbox_z1 [px]", "sphericity"} <= set(table.columns)
    assert "plane" not in table.columns and "area [µm²]" not in table.columns
    sizes = np.bincount(labels.ravel())[1:]
    np.testing.assert_allclose(table["volume [µm³]"], 0.5 * sizes[sizes > 0])
