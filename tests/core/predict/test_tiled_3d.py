"""3D overlap-tile prediction on the one tiler: tiling invariance (isotropic and anisotropic
pooling), same-padding blending, xy-plane TTA, automatic tile size, raw volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet
from napari_unet.core.normalize import normalize
from napari_unet.core.predict import (
    auto_tile_shape,
    predict_image,
    predict_stack,
    predict_tiled,
    tiling,
)
from napari_unet.core.predict.passes import TTA_TRANSFORMS, dihedral
from napari_unet.core.predict.tiled import iter_predict_region, return_value
from napari_unet.core.predict.tiling import region_reader, tile_alignment


def _net3d(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"depth": 2, "base_channels": 2, **kw}
    return UNet(1, kw.pop("num_classes", 2), ndim=3, **kw).double().eval()


def _one_pass(net: UNet, image: np.ndarray) -> np.ndarray:
    """Softmax of one pass over the mirror-padded whole volume, cropped to the volume."""
    chw = image if image.ndim == 4 else image[None]
    sizes, margins = chw.shape[1:], net.margins
    ins = net.valid_input_shape(tuple(n + 2 * m for n, m in zip(sizes, margins, strict=True)))
    pads = [(0, 0)] + [(m, i - n - m) for n, m, i in zip(sizes, margins, ins, strict=True)]
    pad = np.pad(chw, pads, mode="reflect")
    with torch.no_grad():
        out = torch.softmax(net(torch.from_numpy(pad)[None].double()), 1)[0].numpy()
    return out[(slice(None), *(slice(0, n) for n in sizes))]


ISO = _net3d()
ANISO = _net3d(seed=1, pool=((1, 2, 2), (2, 2, 2)))


def test_region_reader_3d_is_np_pad_reflect():
    vol = np.random.default_rng(0).random((2, 3, 5, 4)).astype(np.float32)
    ref = np.pad(vol, ((0, 0), (4, 5), (2, 0), (7, 1)), mode="reflect")
    got = region_reader(vol)(-4, 8, -2, 5, -7, 5)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(region_reader(vol)(1, 2, 0, 5, 1, 3), vol[:, 1:2, :, 1:3])


def test_tile_alignment_is_the_product_of_the_pool_factors_per_axis():
    assert tile_alignment(ISO) == (4, 4, 4)
    assert tile_alignment(ANISO) == (2, 4, 4)  # z pooled once: not 2**depth
    assert ANISO.margins == (12, 20, 20)


@pytest.mark.parametrize(
    ("shape", "tile"),
    [((9, 30, 23), (48, 48, 48)), ((13, 7, 30), (44, 56, 48)), ((1, 1, 1), (44, 44, 44)),
     ((20, 20, 20), (60, 44, 52))],
)
def test_3d_tiling_equals_one_pass(shape, tile):
    image = np.random.default_rng(sum(shape)).random(shape)
    prob = predict_tiled(ISO, image, tile_shape=tile, batch_size=2)
    assert prob.shape == (2, *shape) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, _one_pass(ISO, image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("tile", [(32, 56, 48), (34, 52, 60)])
def test_3d_tiling_equals_one_pass_with_anisotropic_pooling(tile):
    image = np.random.default_rng(5).random((13, 21, 19))
    prob = predict_tiled(ANISO, image, tile_shape=tile)
    np.testing.assert_allclose(prob, _one_pass(ANISO, image), atol=1e-6, rtol=0)


def test_3d_misaligned_z_start_would_seam():
    """The z alignment matters: a region starting off the z pooling grid differs."""
    vol = np.random.default_rng(2).random((1, 12, 12, 12))
    read = region_reader(vol)
    torch.set_grad_enabled(False)
    full = return_value(iter_predict_region(ANISO, read, (0, 12, 0, 12, 0, 12),
                                            tile_shape=(30, 44, 44)))
    part = return_value(iter_predict_region(ANISO, read, (2, 12, 0, 12, 0, 12),
                                            tile_shape=(30, 44, 44)))
    odd = return_value(iter_predict_region(ANISO, read, (1, 12, 0, 12, 0, 12),
                                           tile_shape=(30, 44, 44)))
    np.testing.assert_allclose(part, full[:, 2:], atol=1e-6)
    torch.set_grad_enabled(True)
    assert not np.allclose(odd, full[:, 1:], atol=1e-6)


def test_3d_region_and_tile_errors_name_the_axes():
    read = region_reader(np.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="region: expected one"):
        return_value(iter_predict_region(ISO, read, (0, 4, 0, 4), tile_shape=(44, 44, 44)))
    with pytest.raises(ValueError, match="tile_shape: expected 3 sides"):
        return_value(iter_predict_region(ISO, read, (0, 4, 0, 4, 0, 4), tile_shape=(44, 44)))
    with pytest.raises(ValueError, match="depth, height, width"):
        predict_tiled(ISO, np.zeros((4, 4, 4)), tile_shape=(44, 44))


def test_same_padding_3d_blends_to_probabilities():
    # seed 1: the tolerance is calibrated (an untrained same-padding net varies with the zeros
    # at tile edges; seed 1's one-tile output differs from 0.5 by 0.036 on average)
    torch.manual_seed(1)
    net = UNet(depth=1, base_channels=2, ndim=3, padding="same").double().eval()
    image = np.random.default_rng(1).random((20, 30, 28))
    tiled = predict_tiled(net, image, tile_shape=(16, 16, 16))
    whole = predict_tiled(net, image, tile_shape=(32, 32, 32))  # one tile
    assert tiled.shape == (2, 20, 30, 28)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)
    assert np.abs(tiled - whole).mean() < 0.05  # blended seams stay small


def test_3d_tta_averages_the_xy_plane_transforms_only():
    image = np.random.default_rng(3).random((4, 8, 8))  # the tile's output exactly: no extra
    tile = (44, 48, 48)
    tta = predict_tiled(ISO, image, tile_shape=tile, tta=True)
    plain = [
        dihedral(torch.from_numpy(predict_tiled(
            ISO, dihedral(torch.from_numpy(image), k).numpy().copy(), tile_shape=tile
        )), k, inverse=True).numpy()
        for k in TTA_TRANSFORMS
    ]  # fmt: skip
    np.testing.assert_allclose(tta, np.mean(plain, axis=0), atol=1e-5)
    # z is never flipped: averaging with z flips would give something else
    zflip = predict_tiled(ISO, image[::-1].copy(), tile_shape=tile, tta=True)[:, ::-1]
    assert not np.allclose(tta, (tta + zflip) / 2, atol=1e-5)


def test_auto_tile_shape_3d_per_axis_from_memory(monkeypatch):
    net = UNet(depth=2, base_channels=8, ndim=3, pool=((1, 2, 2), (2, 2, 2)))
    small = auto_tile_shape(net, (6, 20, 20))
    assert len(small) == 3 and net.output_shape(small)  # valid
    assert small[0] < small[1]  # z needs less context and covers 6 slices
    monkeypatch.setattr(tiling, "_budget", lambda device: (2.0**24, False))
    tight = auto_tile_shape(net, (400, 400, 400))
    monkeypatch.setattr(tiling, "_budget", lambda device: (2.0**30, False))
    roomy = auto_tile_shape(net, (400, 400, 400))
    assert net.output_shape(tight) and net.output_shape(roomy)
    assert np.prod(tight) < np.prod(roomy)


def test_predict_image_normalises_the_whole_volume_as_stored():
    net = _net3d(depth=1).float()
    raw = (np.random.default_rng(0).random((7, 12, 13)) * 1000).astype(np.uint16)
    meta = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8}}
    prob = predict_image(net, raw, metadata=meta)
    ref = predict_tiled(net, normalize(raw, low=1.0, high=99.8))
    assert prob.shape == (2, 7, 12, 13)
    np.testing.assert_allclose(prob, ref, atol=1e-6)
    two = UNet(2, depth=1, base_channels=2, ndim=3)
    chan = predict_image(two, np.stack([raw, raw], axis=-1), metadata=meta, channel_axis=-1)
    assert chan.shape == (2, 7, 12, 13)
    with pytest.raises(ValueError, match="3D model"):
        predict_stack(net, raw)
    with pytest.raises(ValueError, match="this is a 3D model"):
        predict_image(net, raw[0])
