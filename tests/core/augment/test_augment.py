"""Tests of napari_unet.core.augment: elastic + affine + gray-value augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.augment import (
    AugmentConfig,
    Augmenter,
    augment_batch,
    elastic_deform,
    random_displacement,
    resample,
    warp,
)
from napari_unet.core.augment import pipeline as augment

QUARTER = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # source = rot90 of output, about the centre


def _data(shape=(13, 10), *, channels=None, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    img_shape = shape if channels is None else (channels, *shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(0, min(int(info.max), 60000), img_shape, endpoint=True).astype(dtype)
    else:
        image = rng.random(img_shape).astype(dtype)
    labels = rng.integers(0, 5, shape).astype(np.int32) * 1000 + 7
    weights = rng.random(shape).astype(np.float32) * (labels > 1007)
    return image, labels, weights


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape", [(13, 10), (8, 8)])
def test_sigma_zero_is_exact_identity(dtype, interp, shape):
    image, labels, weights = _data(shape, dtype=dtype)
    out, lab, wts = elastic_deform(image, labels, weights, sigma=0.0, seed=3, image_interp=interp)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(wts, weights)
    assert out.dtype == image.dtype and lab.dtype == labels.dtype and wts.dtype == weights.dtype


def test_config_none_is_identity_for_batches():
    x = torch.rand(3, 2, 11, 12)
    y = torch.randint(0, 9, (3, 11, 12))
    w = torch.rand(3, 11, 12)
    g = torch.Generator().manual_seed(0)
    for interp in ("bilinear", "bicubic"):
        xo, yo, wo = augment_batch(x, y, w, config=AugmentConfig.none(image_interp=interp),
                                   generator=g)
        assert torch.equal(xo, x) and torch.equal(yo, y) and torch.equal(wo, w)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_label_values_after_are_a_subset_of_before(label_dtype):
    rng = np.random.default_rng(1)
    big = np.iinfo(label_dtype).max
    ids = np.array([0, 1, big // 3, big - 1, big], dtype=label_dtype)
    labels = ids[rng.integers(0, len(ids), (20, 17))]
    image = rng.random((20, 17)).astype(np.float32)
    for seed in range(5):
        _, lab = elastic_deform(image, labels, sigma=6.0, seed=seed)
        assert lab.dtype == labels.dtype
        assert set(np.unique(lab)) <= set(np.unique(labels))
        assert not np.array_equal(lab, labels)  # it did move
    # the full augmentation (rotation, scale, ...) as well
    x, y = torch.from_numpy(image)[None, None], torch.from_numpy(labels.astype(np.int64))[None]
    _, yo = augment_batch(x, y, generator=torch.Generator().manual_seed(0))
    assert set(yo.unique().tolist()) <= set(y.unique().tolist())


@pytest.mark.parametrize("side", [7, 8])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_quarter_rotation_equals_rot90(side, interp):
    image, labels, weights = _data((side, side), channels=2)
    out, lab, wts = warp(torch.from_numpy(image)[None], torch.from_numpy(labels)[None],
                         torch.from_numpy(weights)[None], matrix=QUARTER, image_interp=interp)
    np.testing.assert_array_equal(out[0].numpy(), np.rot90(image, axes=(1, 2)))
    np.testing.assert_array_equal(lab[0].numpy(), np.rot90(labels))
    np.testing.assert_array_equal(wts[0].numpy(), np.rot90(weights))


def test_rotation_by_angle_about_the_centre():
    # a half turn built from cos/sin of pi is rot180 up to rounding of the matrix entries
    image, labels, _ = _data((9, 9))
    c, s = np.cos(np.pi), np.sin(np.pi)
    mat = torch.tensor([[c, -s], [s, c]], dtype=torch.float32)
    out, lab, _ = warp(torch.from_numpy(image)[None, None], torch.from_numpy(labels)[None],
                       matrix=mat)
    np.testing.assert_allclose(out[0, 0].numpy(), np.rot90(image, 2), atol=1e-5)
    np.testing.assert_array_equal(lab[0].numpy(), np.rot90(labels, 2))


def test_mirror_extrapolation_at_the_borders():
    image, labels, _ = _data((9, 6))
    x = torch.from_numpy(image)[None, None]
    for dy, dx in [(-3, 0), (0, 4), (5, -2)]:
        out, lab, _ = warp(x, torch.from_numpy(labels)[None], offset=torch.tensor([dy, dx]))
        pad = 6
        ref_img = np.pad(image, pad, mode="reflect")  # numpy "reflect" = d c b | a b c d
        ref_lab = np.pad(labels, pad, mode="reflect")
        sl = (slice(pad + dy, pad + dy + 9), slice(pad + dx, pad + dx + 6))
        np.testing.assert_array_equal(out[0, 0].numpy(), ref_img[sl])
        np.testing.assert_array_equal(lab[0].numpy(), ref_lab[sl])


def test_reflect_index_far_outside():
    i = torch.arange(-25, 30)
    ref = np.pad(np.arange(4), 40, mode="reflect")[i.numpy() + 40]
    np.testing.assert_array_equal(resample.reflect_index(i, 4).numpy(), ref)
    assert torch.equal(resample.reflect_index(i, 1), torch.zeros_like(i))


def test_displacement_rms_matches_sigma_at_the_lattice_nodes():
    sigma, side = 10.0, 33  # nodes at pixels 0, 16, 32
    g = torch.Generator().manual_seed(0)
    field = random_displacement((side, side), grid=3, sigma=sigma, batch=400, generator=g)
    assert field.shape == (400, 2, side, side) and field.dtype == torch.float32
    nodes = field[:, :, ::16, ::16]
    rms = float(nodes.double().pow(2).mean().sqrt())
    assert abs(rms - sigma) / sigma < 0.15
    # over the whole field the interpolation averages nodes: the RMS is sigma * the RMS norm of
    # the interpolation weights, which is what we measure
    m = resample.cubic_matrix(side, 3)
    w2 = (m**2).sum(dim=1)
    expected = sigma * float((w2[:, None] * w2[None, :]).mean().sqrt())
    rms_all = float(field.double().pow(2).mean().sqrt())
    assert abs(rms_all - expected) / expected < 0.05
    assert rms_all < sigma


def test_displacement_is_bicubic_upsampling_of_the_coarse_lattice():
    g = torch.Generator().manual_seed(5)
    field = random_displacement((20, 27), grid=(3, 4), sigma=2.0, batch=2, generator=g,
                                dtype=torch.float64)
    coarse = torch.randn((2, 2, 3, 4), generator=torch.Generator().manual_seed(5),
                         dtype=torch.float64) * 2.0
    ref = F.interpolate(coarse, size=(20, 27), mode="bicubic", align_corners=True)
    torch.testing.assert_close(field, ref)
    torch.testing.assert_close(field[..., ::19, ::26], coarse[..., ::2, ::3])


def test_same_seed_same_result_and_different_seed_differs():
    image, labels, weights = _data((16, 15), channels=3)
    a = elastic_deform(image, labels, weights, sigma=4.0, seed=11)
    b = elastic_deform(image, labels, weights, sigma=4.0, seed=11)
    c = elastic_deform(image, labels, weights, sigma=4.0, seed=12)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    x, y = torch.from_numpy(image)[None], torch.from_numpy(labels)[None]
    r1 = Augmenter(AugmentConfig(noise_std=0.05), seed=4)(x, y)
    r2 = Augmenter(AugmentConfig(noise_std=0.05), seed=4)(x, y)
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_numpy_in_numpy_out_shapes_and_dtypes(dtype):
    image, labels, weights = _data((12, 9), dtype=dtype)
    out, lab = elastic_deform(image, labels, sigma=3.0, seed=0)
    assert isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == image.dtype
    assert isinstance(lab, np.ndarray) and lab.shape == labels.shape and lab.dtype == labels.dtype
    if np.issubdtype(dtype, np.integer):  # rounded and clipped, never wrapped
        assert out.min() >= np.iinfo(dtype).min and out.max() <= np.iinfo(dtype).max
    out3 = elastic_deform(image, labels, weights, sigma=3.0, seed=0)
    assert len(out3) == 3 and out3[2].shape == weights.shape and out3[2].dtype == np.float32


def test_tensors_in_tensors_out_and_multichannel():
    image, labels, weights = _data((14, 11), channels=3)
    image[1] = image[0]
    out, lab, wts = elastic_deform(torch.from_numpy(image), torch.from_numpy(labels),
                                   torch.from_numpy(weights), sigma=3.0, seed=2)
    assert all(isinstance(t, torch.Tensor) for t in (out, lab, wts))
    assert out.shape == (3, 14, 11) and lab.shape == (14, 11) and wts.dtype == torch.float32
    assert torch.equal(out[0], out[1])  # every channel moved by the same field
    assert not torch.equal(out[0], out[2])


def test_weights_follow_labels_exactly():
    # weights equal to the labels stay equal after the (nearest, shared-index) resampling, and a
    # weight map that is 0 where the labels are unannotated (0) stays 0 there
    _, labels, _ = _data((24, 21))
    labels[:6] = 0
    x = torch.rand(2, 1, 24, 21)
    y = torch.from_numpy(labels).expand(2, 24, 21).clone()
    w = y.to(torch.float32) / 10
    _, yo, wo = augment_batch(x, y, w, config=AugmentConfig(elastic_sigma=5.0),
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(wo, yo.to(torch.float32) / 10, rtol=0, atol=0)
    assert not torch.equal(yo[0], yo[1])  # one independent draw per sample
    assert bool((wo[yo == 0] == 0).all())


def test_out_shape_crops_labels_and_weights_centrally():
    x, y, w = torch.rand(2, 1, 20, 24), torch.randint(0, 4, (2, 20, 24)), torch.rand(2, 20, 24)
    cfg = AugmentConfig()
    full = augment_batch(x, y, w, config=cfg, generator=torch.Generator().manual_seed(3))
    crop = augment_batch(x, y, w, config=cfg, generator=torch.Generator().manual_seed(3),
                         out_shape=(8, 10))
    assert torch.equal(full[0], crop[0])
    assert torch.equal(crop[1], full[1][:, 6:14, 7:17])
    assert torch.equal(crop[2], full[2][:, 6:14, 7:17])


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_result_does_not_depend_on_cpu_chunking(monkeypatch, interp):
    x, y, w = torch.rand(5, 2, 12, 10), torch.randint(0, 4, (5, 12, 10)), torch.rand(5, 12, 10)
    cfg = AugmentConfig(noise_std=0.05, image_interp=interp)
    for out_shape in (None, (6, 5)):
        whole = augment_batch(x, y, w, config=cfg, generator=torch.Generator().manual_seed(8),
                              out_shape=out_shape)
        with monkeypatch.context() as m:
            m.setattr(augment, "_CPU_CHUNK_PIXELS", 2 * 12 * 10)  # two samples per chunk
            m.setattr(augment, "_CPU_BLOCK_ELEMENTS", 2 * 5 * 3 * 10)  # three rows per pass
            chunked = augment_batch(x, y, w, config=cfg, out_shape=out_shape,
                                    generator=torch.Generator().manual_seed(8))
        for a, b in zip(whole, chunked, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # float32 rounding only


def test_gray_values_change_the_image_only():
    x = torch.rand(2, 1, 16, 16)
    y = torch.randint(0, 3, (2, 16, 16))
    cfg = AugmentConfig.none(brightness=0.2, contrast=(0.5, 2.0), gamma=(0.5, 2.0), noise_std=0.1)
    xo, yo = augment_batch(x, y, config=cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(yo, y) and not torch.allclose(xo, x, atol=1e-3)
    xu = (x * 255).to(torch.uint8)
    xo8, _ = augment_batch(xu, y, config=cfg, generator=torch.Generator().manual_seed(0))
    assert xo8.dtype == torch.uint8 and not torch.equal(xo8, xu)


def test_volume_3d():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (6, 9, 8)).astype(np.int64)
    image = rng.random((2, 6, 9, 8)).astype(np.float32)
    out, lab = elastic_deform(image, labels, sigma=0.0, seed=0)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(lab, labels)
    out, lab = elastic_deform(image, labels, sigma=2.0, seed=0)
    assert out.shape == image.shape and set(np.unique(lab)) <= set(np.unique(labels))
    x, y = torch.from_numpy(image)[None], torch.from_numpy(labels)[None]
    xo, yo = augment_batch(x, y, generator=torch.Generator().manual_seed(0))
    assert xo.shape == x.shape and set(yo.unique().tolist()) <= {0, 1, 2, 3}


def test_errors_name_the_argument():
    image, labels, _ = _data((8, 8))
    with pytest.raises(ValueError, match="image"):
        elastic_deform(image[:7], labels)
    with pytest.raises(TypeError, match="labels"):
        elastic_deform(image, torch.from_numpy(labels))
    with pytest.raises(ValueError, match="labels"):
        augment_batch(torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 7, dtype=torch.int64))
    with pytest.raises(ValueError, match="image"):
        augment_batch(torch.rand(8, 8), torch.zeros(8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="out_shape"):
        augment_batch(torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.int64),
                      out_shape=(9, 2))
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="image_interp"):
        AugmentConfig(image_interp="cubic")
    with pytest.raises(ValueError, match="elastic_sigma"):
        dataclasses.replace(AugmentConfig(), elastic_sigma=-1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y, w = torch.rand(2, 1, 40, 36), torch.randint(0, 9, (2, 40, 36)), torch.rand(2, 40, 36)
    cpu = augment_batch(x, y, w, generator=torch.Generator().manual_seed(0))
    gpu = augment_batch(x.cuda(), y.cuda(), w.cuda(), generator=torch.Generator().manual_seed(0))
    assert all(t.device.type == "cuda" for t in gpu)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=1e-4)
    # nearest indices may differ only where a coordinate sits on a rounding tie
    assert float((gpu[1].cpu() != cpu[1]).float().mean()) < 0.01
