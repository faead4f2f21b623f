"""Block-wise zarr prediction of a volume with a 3D model: 3D blocks equal the in-memory
prediction, labels are merged exactly across block faces in z, y and x."""

from __future__ import annotations

import numpy as np
import torch
import zarr
from scipy import ndimage as ndi

from napari_unet.core.model import UNet
from napari_unet.core.predict import blocks, labels_from_probabilities, predict_to_zarr, segment

META = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_3d_blocks_equal_the_in_memory_volume(tmp_path):
    torch.manual_seed(0)
    net = UNet(depth=1, base_channels=2, ndim=3, pool=((1, 2, 2),)).eval()
    vol = (np.random.default_rng(0).random((13, 22, 19)) * 1000).astype(np.uint16)
    out = predict_to_zarr(net, vol, tmp_path / "v.zarr", metadata=META, block=8,
                          tile_shape=(18, 22, 22), min_size=2, fill_holes=False)  # fmt: skip
    group = zarr.open_group(str(out), mode="r")
    assert group["labels"].shape == (13, 22, 19) and group["labels"].chunks == (8, 8, 8)
    assert group["probabilities"].shape == (2, 13, 22, 19)
    prob, _ = segment(net, vol, metadata=META, tile_shape=(18, 22, 22))
    np.testing.assert_allclose(group["probabilities"][:], prob, atol=1e-5)
    whole = labels_from_probabilities(prob, min_size=2, fill_holes=False)  # regrow 1
    assert whole.max() > 3  # the random net gives several objects, some across blocks
    assert _same_partition(group["labels"][:], whole)


def test_3d_labels_merge_across_block_faces(tmp_path, monkeypatch):
    z, y, x = np.mgrid[:24, :24, :24]
    true = np.zeros((24, 24, 24), np.int32)
    for i, (cz, cy, cx) in enumerate([(8, 8, 8), (15, 16, 9), (8, 15, 17), (17, 8, 16)], 1):
        true[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 25] = i  # straddle the 8-blocks
    cell = (true > 0) & (ndi.grey_erosion(true, size=3) == true)  # separation borders
    prob = np.stack([1 - cell, cell]).astype(np.float32)

    def fake(model, read, region, **kw):
        yield None
        return prob[(slice(None), *(slice(a, b) for a, b in zip(region[::2], region[1::2], strict=True)))]

    monkeypatch.setattr(blocks, "iter_predict_region", fake)
    net = UNet(depth=1, base_channels=2, ndim=3)
    out = predict_to_zarr(net, np.zeros(true.shape, np.float32), tmp_path / "m.zarr", block=8,
                          probabilities=False, min_size=4, fill_holes=False)  # fmt: skip
    labels = zarr.open_group(str(out), mode="r")["labels"][:]
    expected = labels_from_probabilities(prob, min_size=4, fill_holes=False)  # regrow 1
    assert expected.max() == 4
    assert _same_partition(labels, expected)
    assert np.array_equal(np.unique(labels), np.arange(5))
