"""Tessellated annotations: the recognition rule and the tissue target (background, cell, wall)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_unet.core.synthetic import synthetic_cells, synthetic_cells_3d, synthetic_tissue
from napari_unet.core.targets import (
    TISSUE_CONTACT,
    contact_share,
    make_target,
    recognise_target,
    separation_borders,
    slices_mask,
    to_instances,
)
from napari_unet.core.training.data import training_target
from napari_unet.core.weights import border_weight_map


def test_a_tissue_is_tessellated_and_nuclei_are_not():
    _, tissue = synthetic_tissue((96, 96), cell_size=14, seed=1)
    _, nuclei = synthetic_cells((96, 96), radius=8, seed=1)  # crowded: some nuclei touch
    assert contact_share(tissue) == pytest.approx(1.0)
    assert 0.0 < contact_share(nuclei) < TISSUE_CONTACT
    assert recognise_target([(tissue, None)])[0] == "tissue"
    assert recognise_target([(nuclei, None)])[0] == "objects"


def test_background_outside_the_tissue_keeps_it_a_tissue():
    """A tissue with background beside it (outside the organ): the outline along the outside
    is background, the rest touches cells; still tessellated."""
    _, labels = synthetic_tissue((96, 96), cell_size=14, outside=20, seed=2)
    assert (labels == 0).mean() > 0.2
    assert TISSUE_CONTACT <= contact_share(labels) < 1.0


def test_membrane_separated_cells_are_objects():
    """ISBI 2012's labels: cells (255) separated by membranes of background (0)."""
    _, tissue = synthetic_tissue((64, 64), cell_size=12, seed=3)
    binary = np.where(separation_borders(tissue), 0, 255).astype(np.uint8)
    assert contact_share(binary) == 0.0
    assert recognise_target([(binary, None)])[0] == "objects"


def test_cells_that_meet_at_corners_do_not_touch():
    """Cells touch through their faces, as a binary mask's cells are read: a diagonal line of
    one-pixel cells (a mask's 4-connected components) is no tissue."""
    assert contact_share(np.eye(16, dtype=int)) == 0.0
    assert contact_share(np.eye(16, dtype=int) * np.arange(1, 17)) == 0.0


def test_unannotated_neighbours_are_unknown_not_background():
    """Three annotated planes of a tissue volume: the planes above and below are unknown, so
    the cells' outline on a plane touches other cells only: tessellated."""
    _, labels = synthetic_tissue((12, 40, 40), cell_size=10, seed=4)
    mask = slices_mask(labels.shape, z=(2, 6, 9))
    sparse = np.where(mask, labels, 0)
    assert contact_share(sparse, annotated=mask) == pytest.approx(1.0)
    # without the mask the erased planes would read as background around every cell
    assert contact_share(sparse) < TISSUE_CONTACT


def test_shares_pool_over_the_annotations():
    _, tissue = synthetic_tissue((48, 48), cell_size=12, seed=5)
    _, nuclei = synthetic_cells((256, 256), radius=8, seed=5)
    kind, share = recognise_target([(tissue, None), (nuclei, None)])
    assert kind == "objects" and 0 < share < TISSUE_CONTACT  # the nuclei outweigh the tissue


def test_the_tissue_target_keeps_every_cell_pixel_and_marks_the_walls():
    _, labels = synthetic_tissue((64, 64), cell_size=12, seed=6)
    target, _ = make_target(labels, num_classes=3, tissue=True)
    assert (target > 0).all()  # no background: every pixel of the tissue is cell or wall
    np.testing.assert_array_equal(target == 2, separation_borders(labels))
    # the walls split the cells: each interior component is in one cell, one per cell
    from scipy import ndimage as ndi

    interiors, n = ndi.label(target == 1)
    assert n == labels.max()
    for i in range(1, n + 1):
        assert len(np.unique(labels[interiors == i])) == 1


def test_annotated_planes_keep_their_cells_whole_in_3d():
    """On an annotated plane the voxels above and below are unknown (0 in the labels): they
    are no wall, so the plane's cells are cell and wall, never all border."""
    _, labels = synthetic_tissue((10, 40, 40), cell_size=10, seed=7)
    mask = slices_mask(labels.shape, z=(3, 7))
    t = training_target(np.where(mask, labels, 0), annotated=mask, num_classes=3, tissue=True)
    for z in (3, 7):
        np.testing.assert_array_equal(t.target[z] == 2, separation_borders(labels[z]))
        assert (t.target[z] == 1).mean() > 0.5
    assert (t.weights[~mask] == 0).all()


def test_the_tissue_target_needs_three_classes():
    with pytest.raises(ValueError, match="num_classes: the tissue target has 3 classes"):
        make_target(np.array([[1, 2]]), tissue=True)
    with pytest.raises(ValueError, match="num_classes"):
        border_weight_map(np.array([[1, 2]]), tissue=True)


def test_tissue_class_weights_balance_cell_and_wall():
    _, labels = synthetic_tissue((64, 64), cell_size=12, seed=8)
    target, _ = make_target(labels, num_classes=3, tissue=True)
    w = border_weight_map(labels, num_classes=3, tissue=True, w0=0.0)
    assert w[target == 1].sum() == pytest.approx(w[target == 2].sum(), rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)),
              elements=st.integers(0, 4)))
def test_tissue_target_is_cells_and_walls_property(labels):
    """Every cell pixel is cell or wall (no shrink), the walls are the separation borders."""
    target, _ = make_target(labels, num_classes=3, tissue=True)
    np.testing.assert_array_equal(target > 0, labels > 0)
    np.testing.assert_array_equal(target == 2, separation_borders(to_instances(labels)))


def test_nuclei_volume_is_objects_on_its_planes():
    _, labels = synthetic_cells_3d((12, 40, 40), radius=5, seed=9)
    mask = slices_mask(labels.shape, z=(3, 8))
    assert recognise_target([(np.where(mask, labels, 0), mask)])[0] == "objects"
