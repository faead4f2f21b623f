"""``napari-unet predict`` on an image too large to segment at once: refused before it is read,
with the block-wise route as the fix, which then works; progress is never silent."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.cli import main
from napari_unet.commands import big_images, predict
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict.footprint import segment_bytes
from napari_unet.core.synthetic import synthetic_cells


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    torch.manual_seed(0)
    model = save_model(UNet(depth=1, base_channels=4).eval(), root / "m.safetensors")
    image = (synthetic_cells((1100, 1000), radius=9, seed=0)[0] * 1000).astype(np.uint16)
    tifffile.imwrite(root / "big.tif", image, tile=(256, 256))
    return root, model, image


def test_header_shape_reads_no_pixel(tmp_path):
    """A TIFF that declares 20000 x 20000 pixels (a few KB compressed): its shape comes from
    the header, and the estimate says what segmenting it at once would need."""
    path = tmp_path / "huge.tif"
    with tifffile.TiffWriter(path) as tif:  # tiles of zeros, written one by one
        tif.write((np.zeros((256, 256), np.uint16) for _ in range(79 * 79)),
                  shape=(20000, 20000), dtype=np.uint16, tile=(256, 256), compression="zlib")
    assert path.stat().st_size < 5_000_000
    shape, dtype = big_images.header_shape(path)
    assert shape == (20000, 20000) and dtype == np.uint16
    need = segment_bytes(UNet(depth=1, base_channels=4), shape, itemsize=2)
    assert need > 10 * 2**30  # over 10 GB: the image, its float copy, probabilities, labels


def test_huge_tiff_is_refused_before_reading(tmp_path, files, monkeypatch, capsys):
    root, model, _ = files
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "50M")
    read = []
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: read.append(a) or 1 / 0)
    code = main(["predict", "--model", str(model), "--input", str(root / "big.tif"),
                 "--output", str(tmp_path / "out"), "--device", "cpu"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and read == []
    assert "segmenting a 1100 x 1000 image at once needs about" in line
    assert "--output big_labels.zarr" in line
    assert not (tmp_path / "out").exists()


def test_the_fix_works_block_by_block(tmp_path, files, monkeypatch):
    """The suggested route under the same limit: the labels of the zarr store are those of a
    whole-image prediction (same cells), with the memory of a block."""
    root, model, image = files
    whole = tmp_path / "whole"
    assert main(["predict", "--model", str(model), "--input", str(root / "big.tif"),
                 "--output", str(whole), "--device", "cpu", "--no-tta"]) == 0
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "50M")
    out = tmp_path / "big_labels.zarr"
    assert main(["predict", "--model", str(model), "--input", str(root / "big.tif"),
                 "--output", str(out), "--device", "cpu", "--block", "256", "--no-tta"]) == 0
    blocks = np.asarray(zarr.open_group(str(out), mode="r")["labels"])
    reference = tifffile.imread(whole / "big_labels.tif")
    assert blocks.shape == image.shape
    agree = np.mean((blocks > 0) == (reference > 0))
    assert agree > 0.99, agree


def test_progress_is_reported_without_a_terminal(tmp_path, files, monkeypatch, caplog):
    """stderr is not a terminal under pytest: lines, not a bar, report the tile batches."""
    root, model, _ = files
    monkeypatch.setattr(predict, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="napari_unet.commands.predict"):
        assert main(["predict", "--model", str(model), "--input", str(root / "big.tif"),
                     "--output", str(tmp_path / "o"), "--device", "cpu", "--tile", "124",
                     "--no-tta"]) == 0
    lines = [r.getMessage() for r in caplog.records if "tile batches" in r.getMessage()]
    assert len(lines) > 5 and lines[-1].startswith("big.tif: ")


def _matched(whole: np.ndarray, blocks: np.ndarray, iou: float = 0.9) -> float:
    """The share of the whole image's cells that one block-wise cell covers with IoU ≥ iou."""
    pairs, overlap = np.unique(np.stack([whole.ravel(), blocks.ravel()]), axis=1,
                               return_counts=True)
    size_w, size_b = np.bincount(whole.ravel()), np.bincount(blocks.ravel())
    found = set()
    for (a, b), n in zip(pairs.T, overlap, strict=True):
        if a and b and n / (size_w[a] + size_b[b] - n) >= iou:
            found.add(a)
    return len(found) / max(int(whole.max()), 1)


def test_the_shipped_model_predicts_into_zarr_as_it_is(tmp_path):
    """`--model nuclei` stores confident cores (seeds 0.8): a TIFF and a zarr array go block by
    block into a zarr store with no option typed, and the cells, many across the block
    borders, are those of the whole image."""
    from napari_unet.sample_data import load_nuclei

    image = load_nuclei()[0]
    tifffile.imwrite(tmp_path / "nuclei.tif", image, tile=(64, 64))
    source = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape,
                             chunks=(64, 64), dtype=image.dtype)
    source[:] = image
    base = ["predict", "--model", "nuclei", "--device", "cpu"]
    assert main([*base, "--input", str(tmp_path / "nuclei.tif"), "--output",
                 str(tmp_path / "whole")]) == 0
    whole = tifffile.imread(tmp_path / "whole" / "nuclei_labels.tif")
    assert whole.max() > 50
    for given in ("nuclei.tif", "in.zarr"):
        out = tmp_path / f"{given}_labels.zarr"
        assert main([*base, "--input", str(tmp_path / given), "--output", str(out),
                     "--block", "128"]) == 0
        blocks = np.asarray(zarr.open_group(str(out), mode="r")["labels"])
        assert abs(int(blocks.max()) - int(whole.max())) <= 1, (blocks.max(), whole.max())
        assert _matched(whole, blocks) > 0.97


def test_colour_scales_count_in_the_memory_check(tmp_path, monkeypatch):
    """A colour image that fits at its own size but not at the scales the model stores for
    colour images (1.4 holds twice its pixels): refused before reading, naming the scales;
    ``--scales 1`` (scales=(1,)) passes the same check."""
    model = UNet(depth=1, base_channels=4).eval()
    meta = {"postprocess": {"scales": {"gray": [1], "colour": [1, 0.7, 1.4]}}}
    path = tmp_path / "he.tif"
    tifffile.imwrite(path, np.zeros((1100, 1000, 3), np.uint8), photometric="rgb")
    own = segment_bytes(model, (1100, 1000), itemsize=1)
    scaled = segment_bytes(model, (1100, 1000), itemsize=1, scales=(1, 0.7, 1.4))
    assert scaled > own * 1.5  # the resized copy and its probabilities
    # tiles are tiny next to the image: a limit between the two estimates
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", str(int((own + scaled) / 2 / 0.85)))
    with pytest.raises(big_images.CLIError, match=r"at scales 1, 0\.7, 1\.4"):
        big_images.check_whole_image(path, model, tile=(64, 64), device="cpu", metadata=meta)
    assert big_images.check_whole_image(path, model, tile=(64, 64), device="cpu",
                                        metadata=meta, scales=(1.0,)) == 1100 * 1000
