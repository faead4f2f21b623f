"""Colour images for one-channel models: the rule a model stores (``normalization["colour"]``)
turns them gray in training and prediction alike (``core.normalize.to_gray``)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.normalize import (
    COLOUR_RULES,
    as_model_channels,
    stored_colour_rule,
    to_gray,
)

PINK, PURPLE, WHITE = (240, 120, 180), (140, 150, 250), (245, 240, 245)


def he_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like tile: white background, pink cytoplasm exactly as dark in gray as the
    purple nuclei (mean of R, G and B: 180 both), and the nuclei's mask."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((64, 64, 3), np.float64)
    rgb[:] = WHITE
    rgb[8:56, 8:56] = PINK
    nuclei = np.zeros((64, 64), bool)
    for y, x in ((20, 20), (20, 44), (44, 30)):
        yy, xx = np.ogrid[:64, :64]
        nuclei |= (yy - y) ** 2 + (xx - x) ** 2 < 36
    rgb[nuclei] = PURPLE
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, nuclei


def separation(gray: np.ndarray, nuclei: np.ndarray, cytoplasm: np.ndarray) -> float:
    """How far apart nucleus and cytoplasm pixels lie, in standard deviations (d')."""
    a, b = gray[nuclei], gray[cytoplasm]
    return abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)


def test_stain_separates_purple_nuclei_from_pink_cytoplasm_better_than_the_mean():
    rgb, nuclei = he_like()
    cytoplasm = np.zeros_like(nuclei)
    cytoplasm[8:56, 8:56] = True
    cytoplasm &= ~nuclei
    stain = to_gray(rgb, rule="stain")
    assert stain[nuclei].mean() > stain[cytoplasm].mean()  # nuclei bright, as in fluorescence
    assert separation(stain, nuclei, cytoplasm) > 2 * separation(
        to_gray(rgb, rule="mean"), nuclei, cytoplasm)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_auto_is_stain_for_brightfield_and_mean_for_a_dark_background(dtype):
    rgb, _ = he_like()
    scale = {np.uint8: 1, np.uint16: 257, np.float32: 1 / 255}[dtype]
    rgb = (rgb.astype(np.float64) * scale).astype(dtype)
    np.testing.assert_allclose(to_gray(rgb, rule="auto"), to_gray(rgb, rule="stain"))
    dark = np.zeros((32, 32, 3), dtype)  # a fluorescence composite: dark background
    dark[10:20, 10:20] = (np.array([0, 0, 200], np.float64) * scale).astype(dtype)
    np.testing.assert_array_equal(to_gray(dark, rule="auto"), to_gray(dark, rule="mean"))


def test_channel_axis_alpha_and_float32():
    rgb, _ = he_like()
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
    first = np.moveaxis(rgba, -1, 0)
    for rule in COLOUR_RULES:
        out = to_gray(first, channel_axis=0, rule=rule)
        assert out.dtype == np.float32 and out.shape == rgb.shape[:2]
        np.testing.assert_allclose(out, to_gray(rgb, rule=rule), rtol=1e-6)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="rule: expected one of"):
        to_gray(np.zeros((4, 4, 3)), rule="hsv")
    with pytest.raises(ValueError, match="3 or 4 colour channels"):
        to_gray(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match=r"normalization'\]\['colour'\]"):
        stored_colour_rule({"normalization": {"colour": "lab"}})


def test_a_one_channel_model_takes_colour_by_its_stored_rule_and_older_models_by_the_mean():
    rgb, _ = he_like()
    meta = {"normalization": {"method": "percentile", "colour": "stain"}}
    gray, axis = as_model_channels(rgb, channel_axis=-1, in_channels=1, metadata=meta)
    assert axis is None
    np.testing.assert_array_equal(gray, to_gray(rgb, rule="stain"))
    older, _ = as_model_channels(rgb, channel_axis=-1, in_channels=1, metadata={})
    np.testing.assert_array_equal(older, to_gray(rgb, rule="mean"))
    same, axis = as_model_channels(rgb, channel_axis=-1, in_channels=3, metadata=meta)
    assert same is rgb and axis == -1
