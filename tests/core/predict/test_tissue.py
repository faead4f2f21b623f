"""The tissue's post-processing: every tissue pixel goes to a cell, the walls split them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.metrics import instance_matching
from napari_unet.core.predict import PostprocessSettings, labels_from_probabilities
from napari_unet.core.predict.blockwise import check_blockwise
from napari_unet.core.predict.postprocess import remove_small_labels
from napari_unet.core.predict.tissue import tissue_labels
from napari_unet.core.synthetic import synthetic_tissue
from napari_unet.core.targets import make_target


def _probabilities(labels, *, num_classes=3, noise=0.1, seed=0):
    """What a model trained on the tissue target (or, 2 classes, the paper's target) would
    say: its one-hot target blurred, with noise, normalised."""
    if num_classes == 3:
        target, _ = make_target(labels, num_classes=3, tissue=True)
    else:
        target, _ = make_target(labels)
    rng = np.random.default_rng(seed)
    onehot = np.stack([target == k for k in range(num_classes)]).astype(np.float32)
    sigma = (0,) + (0.8,) * labels.ndim
    prob = ndi.gaussian_filter(onehot, sigma) + rng.uniform(0, noise, onehot.shape)
    return (prob / prob.sum(axis=0, keepdims=True)).astype(np.float32)


def _every_cell_found(pred, truth) -> None:
    m = instance_matching(pred, truth, threshold=0.5)
    assert m["fp"] == 0 and m["fn"] == 0, m
    assert m["mean_matched_iou"] > 0.85, m  # each cell owns its half of the walls


@pytest.mark.parametrize("shape, size", [((96, 96), 14), ((12, 36, 36), 10)])
def test_every_pixel_of_a_tissue_gets_a_cell(shape, size):
    """A tissue of touching cells without background, 2D (an epithelium) and 3D."""
    _, truth = synthetic_tissue(shape, cell_size=size, seed=1)
    prob = _probabilities(truth)
    pred = labels_from_probabilities(prob, tissue=True, min_size=4)
    assert (pred > 0).all()
    _every_cell_found(pred, truth)
    # the paper's target and post-processing leave the walls as background gaps
    objects = labels_from_probabilities(_probabilities(truth, num_classes=2), min_size=4,
                                        regrow=0)
    assert (objects == 0).mean() > 0.1


def test_background_only_outside_the_tissue():
    _, truth = synthetic_tissue((80, 80), cell_size=14, outside=18, seed=2)
    pred = labels_from_probabilities(_probabilities(truth), tissue=True, min_size=4)
    np.testing.assert_array_equal(pred == 0, truth == 0)
    # the cut along the outside leaves slivers of cells, all wall, that no seed starts: their
    # pixels go to a neighbour; every other cell is found
    slivers = remove_small_labels(truth, 30) == 0
    _every_cell_found(np.where(slivers, 0, pred), np.where(slivers, 0, truth))


def test_a_two_class_model_forced_to_fill_the_space():
    """A model trained the paper's way on a tissue (walls as background): with tissue=True
    every pixel goes to a cell and the cells meet at the walls."""
    _, truth = synthetic_tissue((96, 96), cell_size=14, seed=3)
    pred = labels_from_probabilities(_probabilities(truth, num_classes=2), tissue=True,
                                     min_size=4)
    assert (pred > 0).all()
    _every_cell_found(pred, truth)


def test_small_seeds_are_flooded_by_their_neighbours():
    """A seed under min_size starts no cell, yet its pixels still go to a cell."""
    cell = np.full((1, 22), 0.9, np.float32)
    cell[0, 9:11] = 0.05  # a wall
    cell[0, 14:16] = 0.05  # another, around a 3-pixel seed at 11..13
    wall = 1 - cell
    prob = np.stack([np.zeros_like(cell), cell, wall])
    pred = tissue_labels(prob, min_size=5)
    assert (pred > 0).all() and len(np.unique(pred)) == 2
    assert len(np.unique(tissue_labels(prob, min_size=1))) == 3


def test_tissue_without_a_confident_interior_is_a_cell_of_its_own():
    cell = np.zeros((1, 12), np.float32)
    cell[0, :4] = 0.9  # a confident cell
    cell[0, 8:] = 0.3  # tissue (not background), but no confident interior, apart
    bg = np.where(cell > 0, 0.05, 0.95).astype(np.float32)
    prob = np.stack([bg, cell, 1 - bg - cell])
    assert tissue_labels(prob, min_size=1)[0].tolist() == [1] * 4 + [0] * 4 + [2] * 4


def test_the_seed_level_is_the_threshold_at_least():
    """Two cells joined by an interior at 0.65: seeds above 0.7 keep them apart."""
    cell = np.full((3, 12), 0.9, np.float32)
    cell[:, 5:7] = 0.65
    prob = np.stack([np.full_like(cell, 0.02), cell, 0.98 - cell])
    assert tissue_labels(prob, min_size=1).max() == 1
    assert tissue_labels(prob, seeds=0.7, min_size=1).max() == 2
    assert tissue_labels(prob, threshold=0.7, min_size=1).max() == 2


def test_a_model_trained_on_a_tissue_fills_by_default_and_the_user_decides():
    meta = {"target": "tissue", "postprocess": {"threshold": 0.6}}
    assert PostprocessSettings.from_metadata(meta).tissue
    assert not PostprocessSettings.from_metadata(meta, tissue=False).tissue
    chosen = {"target": "tissue", "postprocess": {"tissue": False}}  # chosen on validation
    assert not PostprocessSettings.from_metadata(chosen).tissue
    assert not PostprocessSettings.from_metadata({"target": "objects"}).tissue
    assert not PostprocessSettings.from_metadata(None).tissue


def test_blocks_refuse_the_tissue_watershed():
    with pytest.raises(ValueError, match=r"cannot apply tissue=True.*--no-tissue"):
        check_blockwise(PostprocessSettings(tissue=True))
    check_blockwise(PostprocessSettings())
