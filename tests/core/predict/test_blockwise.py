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
from napari_unet.core.predict import blockwise as bigdata
from napari_unet.core.predict import labels_from_probabilities, predict_image, predict_to_zarr
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

    monkeypatch.setattr(bigdata, "iter_predict_region", fake)


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
    whole = labels_from_probabilities(ref, min_size=3, fill_holes=False, regrow=0)
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
                          min_size=4, probabilities=False, fill_holes=False)  # fmt: skip
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


def test_blocks_drop_cells_without_a_confident_core(tmp_path, monkeypatch):
    """With ``seeds``: a cell whose core (above 0.8) is cut by a block edge, 6 + 6 pixels on
    either side, is kept (its core counted over both blocks); a blob at 0.6 everywhere is
    dropped, as the in-memory post-processing does."""
    p1 = np.zeros((32, 32), np.float32)
    p1[2:12, 10:22] = 0.6
    p1[6:8, 13:19] = 0.95  # the core, across the block edge at x = 16
    p1[20:28, 4:12] = 0.6  # no core
    prob = np.stack([1 - p1, p1])
    _fake_prediction(monkeypatch, prob)
    out = predict_to_zarr(_net(), np.zeros((32, 32), np.float32), tmp_path / "c.zarr", block=16,
                          min_size=10, seeds=0.8, probabilities=False, regrow=0)  # fmt: skip
    labels = zarr.open_group(str(out), mode="r")["labels"][:]
    assert labels.max() == 1 and labels[4, 11] == labels[10, 20] == 1 and not labels[24, 8]
    whole = labels_from_probabilities(prob, min_size=10, seeds=0.8, regrow=0)
    assert _same_partition(labels, whole)


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
