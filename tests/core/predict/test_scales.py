"""Prediction at several scales, averaged at the image's own size: the shapes, scale 1 as it
was, the stored colour rule, the flips' spread over every pass, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet
from napari_unet.core.predict import iter_predict_tiled, iter_segment, segment
from napari_unet.core.predict.images import normalizer
from napari_unet.core.predict.postprocess import PostprocessSettings
from napari_unet.core.predict.scales import is_colour, stored_scales

COLOUR = [1.0, 0.7, 1.4]
META = {"normalization": {"method": "percentile", "low": 1.0, "high": 99.8},
        "postprocess": {"threshold": 0.5, "min_size": 1, "scales": {"colour": COLOUR}}}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4).eval()


def rgb_image(seed: int, *, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (26, 34, 3)).astype(np.uint8)
    return np.repeat(rgb[..., :1], 3, axis=-1) if gray else rgb


@pytest.mark.parametrize("shape", [(5, 7), (23, 37), (40, 52)])
@pytest.mark.parametrize("scales", [(1.0, 0.7, 1.4), (0.5,), (1.3, 0.2)])
def test_averaging_over_scales_gives_the_input_size_back(net, shape, scales):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    prob, labels = segment(net, image, scales=scales, tta=True)
    assert prob.shape == (2, *shape) and prob.dtype == np.float32
    assert labels.shape == shape and labels.dtype == np.int32
    # every pixel a probability: the resized edges are not lost to zeros
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)


def test_scale_one_is_the_prediction_of_today_bit_for_bit(net):
    image = np.random.default_rng(1).integers(0, 4000, (30, 44)).astype(np.uint16)
    last = list(iter_segment(net, image, metadata=META, tta=True, scales=(1,)))[-1]
    # the one path before scales: normalise, tile, post-process
    chw = normalizer(META, channel_axis=0)(image[None])
    before = list(iter_predict_tiled(net, chw, tta=True, flip_std=True))[-1]
    assert np.array_equal(last.result, before.result)
    assert np.array_equal(last.flip_std, before.flip_std)
    assert np.array_equal(last.labels,
                          PostprocessSettings.from_metadata(META).labels(before.result))
    # a gray image under the colour rule is predicted at its own size: the same bits
    default = list(iter_segment(net, image, metadata=META, tta=True))[-1]
    assert np.array_equal(default.result, before.result)


def test_the_colour_rule_picks_the_colour_scales_for_colour_input_only(net):
    colour, gray = rgb_image(2), rgb_image(3, gray=True)
    assert is_colour(colour, -1) and not is_colour(gray, -1)
    assert stored_scales(META, colour=True) == tuple(COLOUR)
    assert stored_scales(META, colour=False) == (1.0,)

    def prob(image, **kw):
        return segment(net, image, metadata=META, channel_axis=-1, tta=False, **kw)[0]

    np.testing.assert_array_equal(prob(colour), prob(colour, scales=COLOUR))
    assert not np.array_equal(prob(colour), prob(colour, scales=(1,)))
    np.testing.assert_array_equal(prob(gray), prob(gray, scales=(1,)))
    assert not np.array_equal(prob(gray), prob(gray, scales=COLOUR))
    # a stack: each plane by its own kind
    stack = segment(net, np.stack([colour, gray]), metadata=META, channel_axis=-1, stack=True,
                    tta=False)[0]
    np.testing.assert_array_equal(stack[0], prob(colour))
    np.testing.assert_array_equal(stack[1], prob(gray))


def test_the_spread_covers_every_pass_of_every_scale(net):
    image = np.random.default_rng(4).random((24, 30)).astype(np.float32)
    one = list(iter_segment(net, image, tta=False, scales=(1,)))[-1]
    assert one.flip_std is None  # one pass: nothing to disagree
    two = list(iter_segment(net, image, tta=False, scales=(1, 0.5)))[-1]
    fg = [1 - segment(net, image, tta=False, scales=(s,))[0][0] for s in (1, 0.5)]
    # the variance, E[fg²] − E[fg]² in float32: its square root magnifies rounding near 0
    np.testing.assert_allclose(two.flip_std ** 2, np.var(fg, axis=0), atol=1e-6)
    flips = list(iter_segment(net, image, tta=True, scales=(1, 0.5)))[-1]
    assert flips.flip_std.shape == (24, 30) and float(flips.flip_std.max()) > 1e-4


@pytest.mark.parametrize("bad", [[], [0], [1, -0.5], [float("nan")], "big"])
def test_bad_scales_name_the_argument_and_the_fix(net, bad):
    with pytest.raises(ValueError, match=r"scales: expected one or more positive.*give 1"):
        segment(net, np.zeros((20, 20), np.float32), scales=bad)


def test_bad_stored_scales_and_3d_models_are_refused():
    with pytest.raises(ValueError, match=r"metadata\['postprocess'\]\['scales'\].*'color'"):
        stored_scales({"postprocess": {"scales": {"color": [1, 0.7]}}}, colour=True)
    with pytest.raises(ValueError, match=r"\['colour'\]: expected one or more positive"):
        stored_scales({"postprocess": {"scales": {"colour": [0]}}}, colour=True)
    net3d = UNet(depth=1, base_channels=2, ndim=3)
    with pytest.raises(ValueError, match=r"scales: .*2D models.*scales=\(1,\)"):
        segment(net3d, np.zeros((8, 12, 12), np.float32), scales=(1, 0.5))
