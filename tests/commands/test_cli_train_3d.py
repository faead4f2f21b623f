"""`napari-unet train --ndim 3` on tiny TIFF stacks, its one-line errors, and 3D run folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.io import load_model, read_metadata
from napari_unet.core.synthetic import synthetic_cells, synthetic_cells_3d
from napari_unet.core.targets import slices_mask
from napari_unet.core.training import TrainConfig, TrainingPair
from napari_unet.engine import runs
from napari_unet.engine import training as run_training

TINY3D = ["--ndim", "3", "--spacing", "4", "1", "1", "--depth", "1", "--base-channels", "2",
          "--tile", "14", "20", "20", "--validate-every", "0", "--val-fraction", "0",
          "--device", "cpu", "--cpu-bf16", "off"]


@pytest.fixture
def stacks(tmp_path):
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for i in range(2):
        vol, labels = synthetic_cells_3d((14, 24, 24), radius=5, seed=i)
        tifffile.imwrite(img / f"v{i}.tif", (vol * 1000).astype(np.uint16))
        tifffile.imwrite(lab / f"v{i}.tif", labels)
    return img, lab


def test_train_ndim3_on_stacks_with_annotated_slices(stacks, tmp_path, capsys):
    img, lab = stacks
    out = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out", str(out),
                 "--steps", "2", "--annotated-slices", "z=3,9", *TINY3D]) == 0
    err = capsys.readouterr().err
    assert "labels complete on the planes z=3,9" in err and "tile (14, 20, 20)" in err
    meta = read_metadata(out)
    assert meta["architecture"]["ndim"] == 3 and meta["architecture"]["pool"] == [[1, 2, 2]]
    assert meta["architecture"]["norm"] == "batch"  # the 3D recipe
    # the recipe's drop-out (0) and 2D pre-training on the 2 x 2 annotated planes
    assert meta["architecture"]["dropout"] == 0.0 and meta["training"]["pretrain_2d"] == 0.25
    assert meta["history"][0]["pretrain_2d_steps"] == 2  # the 2-step budget, in 2D first
    assert meta["training"]["spacing"] == [4.0, 1.0, 1.0]
    model, _ = load_model(out)
    assert model.ndim == 3


def test_ndim_mismatch_errors_name_the_fix(stacks, tmp_path, capsys, error_line):
    img, lab = stacks
    out = str(tmp_path / "m.safetensors")
    base = ["train", "--out", out, "--steps", "1", "--device", "cpu"]
    assert main([*base, "--images", str(img), "--labels", str(lab)]) == 2
    assert "give --ndim 3" in error_line()
    flat, flat_lab = tmp_path / "flat", tmp_path / "flat_lab"
    flat.mkdir()
    flat_lab.mkdir()
    image, labels = synthetic_cells((32, 32), radius=6, seed=0)
    tifffile.imwrite(flat / "a.tif", image)
    tifffile.imwrite(flat_lab / "a.tif", labels)
    assert main([*base, "--images", str(flat), "--labels", str(flat_lab), "--ndim", "3"]) == 2
    assert "drop --ndim 3" in error_line()
    assert main([*base, "--images", str(flat), "--labels", str(flat_lab), "--pretrain-2d",
                 "0.3"]) == 2
    assert "--pretrain-2d: pre-training in 2D starts a 3D U-Net; give --ndim 3" in error_line()
    tifffile.imwrite(flat_lab / "a.tif", np.stack([labels] * 4), photometric="minisblack")
    assert main([*base, "--images", str(flat), "--labels", str(flat_lab)]) == 2
    assert "--ndim 3" in error_line()
    assert main([*base, "--images", str(img), "--labels", str(lab),
                 "--annotated-slices", "z=1"]) == 2
    assert "add --ndim 3" in error_line()
    assert main([*base, "--images", str(img), "--labels", str(lab), "--ndim", "3",
                 "--spacing", "1", "1"]) == 2
    assert "--spacing: expected 3 positive pixel sizes" in error_line()
    assert main([*base, "--images", str(img), "--labels", str(lab), "--ndim", "3",
                 "--annotated-slices", "z=99"]) == 2
    assert "--annotated-slices" in error_line()


def test_run_folder_round_trip_in_3d(tmp_path):
    vol, labels = synthetic_cells_3d((10, 16, 16), radius=4, seed=0)
    ann = slices_mask(vol.shape, z=(2, 7))
    pair = TrainingPair(vol, labels, ann, ndim=3, spacing=(3.0, 1.0, 1.0))
    config = TrainConfig(ndim=3, spacing=(3.0, 1.0, 1.0), tile=(14, 20, 20), depth=1)
    run = runs.new_run_dir(tmp_path, name="vol")
    runs.write_run(run, [pair], settings=config, seed=4, sparse=False)
    assert tifffile.imread(next((run / "data").glob("*_image.tif"))).shape == (10, 16, 16)
    (back,), settings, _ = runs.read_run(run)
    assert back.ndim == 3 and back.shape == (10, 16, 16) and back.spacing == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(back.labels, labels)
    np.testing.assert_array_equal(back.annotated, ann)
    cfg = run_training.config_from_settings(settings)
    assert (cfg.ndim, cfg.spacing, cfg.tile) == (3, (3.0, 1.0, 1.0), (14, 20, 20))
