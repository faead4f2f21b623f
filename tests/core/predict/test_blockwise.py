"""Block-wise zarr prediction: equals whole-image prediction; labels exact across blocks;
a dask distributed LocalCluster runs the blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage as ndi

from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.predict import (
    blocks,
    labels_from_probabilities,
    predict_image,
    predict_to_zarr,
)
from napari_unet.core.predict import blockwise as bigdata
from napari_unet.core.predict.blockwise import plane_layout
from napari_unet.core.synthetic import synthetic_cells


def _net(**kw):
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, **kw).eval()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images differ only by the numbering of the labels."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _fake_prediction(monkeypatch, prob: np.ndarray):
    """Replace the network by fixed probabilities to test the label merge on known cells."""

    def fake(model, read, region, **kw):
        y0, y1, x0, x1 = region
        yield None
        return prob[:, y0:y1, x0:x1].astype(np.float32)

    monkeypatch.setattr(blocks, "iter_predict_region", fake)


def test_blocks_equal_whole_image_prediction(tmp_path):
    net = _net()
    image = (np.random.default_rng(0).random((70, 83)) * 1000).astype(np.uint16)
    out = predict_to_zarr(net, image, tmp_path / "o.zarr", block=32, tile_shape=(60, 60),
                          min_size=3, fill_holes=False)  # fmt: skip
    group = zarr.open_group(str(out), mode="r")
    prob = group["probabilities"][:]
    ref = predict_image(net, image, tile_shape=(60, 60))
    np.testing.assert_allclose(prob, ref, atol=1e-4)
    assert group["labels"].chunks == (32, 32) and group["labels"].dtype == np.int32
    whole = labels_from_probabilities(ref, min_size=3, fill_holes=False)  # regrow 1, as blocks
    assert _same_partition(group["labels"][:], whole)


@pytest.mark.parametrize("classes", [2, 3])
def test_labels_merge_exactly_across_blocks(tmp_path, monkeypatch, classes):
    _, true = synthetic_cells((96, 112), radius=9, seed=2)
    grown = ndi.grey_dilation(true, size=3)
    border = (true > 0) & (grown != true)
    if classes == 2:
        p1 = ((true > 0) & ~border).astype(np.float32)
        prob = np.stack([1 - p1, p1])
    else:
        interior = (true > 0) & ~ndi.binary_dilation(border)
        prob = np.stack([true == 0, interior, (true > 0) & ~interior]).astype(np.float32)
    _fake_prediction(monkeypatch, prob)
    net = _net(num_classes=classes)
    out = predict_to_zarr(net, np.zeros((96, 112), np.float32), tmp_path / "l.zarr", block=16,
                          min_size=4, probabilities=False, fill_holes=False,
                          regrow=0)  # fmt: skip
    labels = zarr.open_group(str(out), mode="r")["labels"][:]
    assert "probabilities" not in zarr.open_group(str(out), mode="r")
    if classes == 2:
        expected = labels_from_probabilities(prob, min_size=4, fill_holes=False, regrow=0)
        assert _same_partition(labels, expected)
    else:  # seeds straddling blocks joined; all cells found
        seeds = labels_from_probabilities(np.stack([1 - prob[1], prob[1]]), min_size=4, regrow=0,
                                          fill_holes=False)  # fmt: skip
        assert int(labels.max()) == int(seeds.max())
        assert np.array_equal(labels[prob[1] > 0.5] > 0, seeds[prob[1] > 0.5] > 0)
    assert int(labels.max()) >= int(true.max()) - 2
    assert np.array_equal(np.unique(labels), np.arange(int(labels.max()) + 1))


@pytest.mark.parametrize("regrow", [1, 2])
def test_the_regrowth_runs_across_blocks_as_on_the_whole_image(tmp_path, monkeypatch, regrow):
    """Touching cells separated by the network's gaps, the gaps across block edges: the
    block-wise labels regrow into them exactly as the whole image's do."""
    _, true = synthetic_cells((96, 112), radius=9, seed=4)
    gap = ndi.grey_dilation(true, size=3) != true
    p1 = ((true > 0) & ~gap).astype(np.float32)
    prob = np.stack([1 - p1, p1])
    _fake_prediction(monkeypatch, prob)
    out = predict_to_zarr(_net(), np.zeros((96, 112), np.float32), tmp_path / "r.zarr",
                          block=16, min_size=4, fill_holes=False, regrow=regrow,
                          probabilities=False)
    group = zarr.open_group(str(out), mode="r")
    whole = labels_from_probabilities(prob, min_size=4, fill_holes=False, regrow=regrow)
    assert (whole > 0).sum() > (p1 > 0).sum()  # the regrowth gave pixels back
    assert _same_partition(group["labels"][:], whole)
    assert "labels_merged" not in group


def _pairs_of_cells(shape, *, split: str) -> np.ndarray:
    """Probabilities of pairs of touching cells that cross the 32-pixel block borders (one at
    a block corner, one with its neck on a border), and a faint blob on a border.

    ``split="seeds"``: each cell's probability falls from 0.97 at its centre (above 0.8 within
    2.6 px, above 0.5 within 7.2 px; centres 10 px apart), so the pair is one component at the
    threshold that only the confident cores (0.8) split; a network's probabilities are never
    flat, nor are these (a 1e-3 noise). ``split="watershed"``: two overlapping discs, which
    only the watershed splits."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    p1 = np.zeros(shape)
    for cy, cx, vertical in ((16, 32, False), (64, 80, True), (96, 96, False), (40, 100, True)):
        dy, dx = (5, 0) if vertical else (0, 5)
        for sign in (-1, 1):
            d = np.hypot(yy - cy - sign * dy, xx - cx - sign * dx)
            cell = 0.97 - 0.065 * d if split == "seeds" else 0.95 * (d <= 6)
            p1 = np.maximum(p1, cell)
    p1 = np.maximum(p1, 0.7 - 0.04 * np.hypot(yy - 96, xx - 40))  # no confident core
    p1 += np.random.default_rng(0).uniform(0, 1e-3, shape)
    p1 = np.clip(p1, 0, 1).astype(np.float32)
    return np.stack([1 - p1, p1])


def _matched(whole: np.ndarray, blocks: np.ndarray, iou: float = 0.9) -> int:
    """How many of the whole image's cells one block-wise cell covers with IoU ≥ iou."""
    found = 0
    for i in range(1, int(whole.max()) + 1):
        cell = whole == i
        j = np.bincount(blocks[cell]).argmax()
        found += bool(j) and (cell & (blocks == j)).sum() / (cell | (blocks == j)).sum() >= iou
    return found


@pytest.mark.parametrize("split", ["seeds", "watershed"])
def test_the_splits_that_need_each_cell_whole_run_block_by_block(tmp_path, monkeypatch, split):
    """The confident-core split (which the shipped model stores) and the watershed split run
    block-wise, on blocks labelled with a halo: cells crossing a block border (and a block
    corner) are the whole image's cells, touching cells stay apart across a border. With
    confident cores the labels are those of the whole image; the watershed of a distance
    transform has ties, which two blocks may break a pixel apart on the line between two
    cells."""
    prob = _pairs_of_cells((128, 128), split=split)
    options = {"seeds": 0.8} if split == "seeds" else {"watershed": True, "min_distance": 3}
    whole = labels_from_probabilities(prob, **options)
    cells = 8 if split == "seeds" else 9  # two per pair; the faint blob has no confident core
    assert int(whole.max()) == cells
    _fake_prediction(monkeypatch, prob)
    out = predict_to_zarr(_net(), np.zeros((128, 128), np.float32), tmp_path / "s.zarr",
                          block=32, halo=24, probabilities=False, **options)
    group = zarr.open_group(str(out), mode="r")
    labels = group["labels"][:]
    assert np.array_equal(np.unique(labels), np.arange(cells + 1))
    assert _matched(whole, labels) == cells
    if split == "seeds":
        assert _same_partition(labels, whole)
    assert group.attrs["napari_unet"]["halo"] == [24, 24]


def test_a_halo_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="halo: expected a positive number"):
        predict_to_zarr(_net(), np.zeros((32, 32), np.float32), tmp_path / "x.zarr",
                        block=16, seeds=0.8, halo=0)


def test_blocks_normalise_as_the_whole_image(tmp_path, monkeypatch):
    """The blocks' input is :func:`normalize`'s mapping of the whole image, bit for bit, also
    for an inverted (bright-background) image."""
    from napari_unet.core.normalize import normalize

    image = np.full((40, 56), 200.0, np.float32)
    image[8:20, 10:30] = 20.0  # a dark object on a bright background: inverted
    image += np.random.default_rng(1).random(image.shape).astype(np.float32)

    def echo(model, read, region, **kw):  # the normalised input as "probabilities"
        x = read(*region)[0]
        yield None
        return np.stack([x, x])

    monkeypatch.setattr(blocks, "iter_predict_region", echo)
    meta = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8,
                              "invert": 0.5}}
    out = predict_to_zarr(_net(), image, tmp_path / "n.zarr", metadata=meta, block=16,
                          regrow=0, min_size=0)
    seen = zarr.open_group(str(out), mode="r")["probabilities"][1]
    np.testing.assert_array_equal(seen, normalize(image, invert=0.5))


def test_zarr_dask_and_stack_inputs(tmp_path):
    import dask.array as da

    net = _net()
    stack = np.random.default_rng(1).random((2, 40, 37)).astype(np.float32)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=stack.shape,
                          chunks=(1, 16, 16), dtype="f4")  # fmt: skip
    src[:] = stack
    out = predict_to_zarr(net, str(tmp_path / "in.zarr"), tmp_path / "s.zarr", block=16,
                          tile_shape=(60, 60))  # fmt: skip
    prob = zarr.open_group(str(out), mode="r")["probabilities"]
    assert prob.shape == (2, 2, 40, 37)
    for z in range(2):
        ref = predict_image(net, stack[z], tile_shape=(60, 60))
        np.testing.assert_allclose(prob[z], ref, atol=1e-4)
    out2 = predict_to_zarr(net, da.from_array(stack[0], chunks=20), tmp_path / "d.zarr",
                           block=32, tile_shape=(60, 60))  # fmt: skip
    np.testing.assert_allclose(zarr.open_group(str(out2), mode="r")["probabilities"][:],
                               prob[0], atol=1e-4)  # fmt: skip


def test_plane_layout_errors():
    assert plane_layout((3, 4, 5, 6), 4, None) == "zcyx"
    assert plane_layout((3, 5, 6, 2), 2, -1) == "zyxc"
    with pytest.raises(ValueError, match="C = 2"):
        plane_layout((3, 50, 60), 2, None)


def test_distributed_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    net = _net()
    model_path = save_model(net, tmp_path / "m.safetensors")
    image = np.random.default_rng(2).random((50, 45)).astype(np.float32)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape,
                          chunks=(16, 16), dtype="f4")  # fmt: skip
    src[:] = image
    local = predict_to_zarr(model_path, str(tmp_path / "in.zarr"), tmp_path / "local.zarr",
                            block=16, tile_shape=(60, 60))  # fmt: skip
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:  # fmt: skip
        events = list(bigdata.iter_predict_to_zarr(
            model_path, str(tmp_path / "in.zarr"), tmp_path / "dist.zarr", block=16,
            tile_shape=(60, 60), scheduler=cluster.scheduler_address))  # fmt: skip
    assert events[-1].message == "done" and events[-1].total == 4 * 3 + 1
    a = zarr.open_group(str(local), mode="r")
    b = zarr.open_group(str(tmp_path / "dist.zarr"), mode="r")
    np.testing.assert_allclose(a["probabilities"][:], b["probabilities"][:], atol=1e-5)
    np.testing.assert_array_equal(a["labels"][:], b["labels"][:])
    with pytest.raises(ValueError, match="model file path"):
        next(bigdata.iter_predict_to_zarr(net, image, tmp_path / "x.zarr", scheduler="tcp://x:1"))
    with pytest.raises(ValueError, match="zarr array"):
        next(bigdata.iter_predict_to_zarr(model_path, image, tmp_path / "x.zarr",
                                          scheduler="tcp://x:1"))  # fmt: skip
