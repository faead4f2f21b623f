"""The spread of the test-time flips comes out of the same forward passes as the averaged
probabilities: per pixel, the standard deviation over the flips of the foreground probability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet
from napari_unet.core.predict import iter_predict_tiled, iter_segment, predict_tiled
from napari_unet.core.predict.passes import TTA_TRANSFORMS, dihedral


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet(depth=1, base_channels=4).eval()


def test_flip_std_is_the_spread_of_the_flipped_predictions(net):
    image = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    last = list(iter_predict_tiled(net, image, tta=True, flip_std=True))[-1]
    fg = []
    for k in TTA_TRANSFORMS:  # each flip predicted on its own, then flipped back
        flipped = dihedral(torch.from_numpy(image), k).numpy()
        prob = predict_tiled(net, np.ascontiguousarray(flipped))
        fg.append(1 - dihedral(torch.from_numpy(prob), k, inverse=True).numpy()[0])
    np.testing.assert_allclose(last.flip_std, np.std(fg, axis=0), atol=2e-5)
    np.testing.assert_allclose(last.result, predict_tiled(net, image, tta=True), atol=1e-6)
    assert last.result.shape == (2, 28, 28) and float(last.flip_std.max()) > 1e-4


def test_no_spread_without_flips_and_the_segmentation_path_passes_it_on(net):
    image = np.random.default_rng(1).random((3, 24, 24)).astype(np.float32)
    assert list(iter_predict_tiled(net, image[0], flip_std=True))[-1].flip_std is None
    last = list(iter_segment(net, image, stack=True, tta=True))[-1]
    assert last.flip_std.shape == (3, 24, 24) and last.result.shape == (3, 2, 24, 24)
    assert list(iter_segment(net, image[0], tta=False))[-1].flip_std is None
    assert list(iter_segment(net, image[0], tta=True))[-1].flip_std.shape == (24, 24)
