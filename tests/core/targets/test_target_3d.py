"""3D targets, separation borders and border weights against brute-force references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from tests.core.weights.reference import brute_force_weights, separated_cells
from tests.core.weights.test_border import METHODS, random_cells

from napari_unet.core.synthetic import synthetic_cells_3d
from napari_unet.core.targets import make_target, separation_borders, to_instances
from napari_unet.core.weights import border_weight_map, class_weights


def neighbours(inst: np.ndarray, index: tuple[int, ...]):
    """Values of the (up to 26) neighbours of ``index`` inside the volume."""
    for offset in np.ndindex(3, 3, 3):
        j = tuple(i + o - 1 for i, o in zip(index, offset, strict=True))
        if j != index and all(0 <= a < n for a, n in zip(j, inst.shape, strict=True)):
            yield inst[j]


def three_class_by_hand(inst: np.ndarray) -> np.ndarray:
    """0 background, 1 interior, 2 a cell voxel with background or another cell among its 26."""
    out = np.zeros(inst.shape, np.uint8)
    for index in np.ndindex(*inst.shape):
        c = inst[index]
        if c:
            out[index] = 2 if any(v != c for v in neighbours(inst, index)) else 1
    return out


volumes = arrays(
    np.uint8,
    st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)),
    elements=st.integers(0, 3),
)


@settings(max_examples=40, deadline=None)
@given(volumes)
def test_3d_targets_match_brute_force(labels):
    inst = to_instances(labels)
    border_by_hand = np.zeros(inst.shape, bool)
    for index in np.ndindex(*inst.shape):
        c = inst[index]
        border_by_hand[index] = c > 0 and any(v > 0 and v != c for v in neighbours(inst, index))
    np.testing.assert_array_equal(separation_borders(inst), border_by_hand)
    target, mask = make_target(labels)
    np.testing.assert_array_equal(target, (separated_cells(inst) > 0).astype(np.uint8))
    assert mask.shape == labels.shape and mask.all()
    np.testing.assert_array_equal(make_target(labels, num_classes=3)[0], three_class_by_hand(inst))
    # No 26-connected piece of the 2-class target spans two cells.
    pieces, n = ndi.label(target, structure=np.ones((3, 3, 3)))
    for i in range(1, n + 1):
        assert len(np.unique(inst[pieces == i])) == 1


def test_3d_binary_mask_cells_are_6_connected():
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = 255  # corner contact only: two cells
    mask[2, 2:, 2:] = mask[1, 2, 2] = 255  # face contact: one cell
    inst = to_instances(mask)
    assert inst.max() == 3
    assert inst[2, 3, 3] == inst[1, 2, 2] != inst[1, 1, 1] != inst[0, 0, 0]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spacing", [None, (4.0, 1.0, 1.0), (1.0, 0.5, 2.0)])
@pytest.mark.parametrize("class_balance", [True, False])
def test_3d_weight_map_matches_brute_force(method, spacing, class_balance):
    labels = random_cells((7, 12, 11), 10, seed=11, max_size=5)
    rng = np.random.default_rng(0)
    for annotated in (None, rng.random(labels.shape) > 0.4):
        ours = border_weight_map(labels, method=method, spacing=spacing, sigma=2.5,
                                 class_balance=class_balance, annotated=annotated)
        ref = brute_force_weights(labels, spacing=spacing, sigma=2.5,
                                  class_balance=class_balance, annotated=annotated)
        assert ours.dtype == np.float32 and ours.shape == labels.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-2)


@pytest.mark.parametrize("method", METHODS)
def test_3d_weight_map_on_synthetic_touching_cells_with_spacing(method):
    _, labels = synthetic_cells_3d((8, 32, 32), radius=6, spacing=(3.0, 1.0, 1.0), seed=4)
    assert labels.max() > 5
    ours = border_weight_map(labels, method=method, spacing=(3.0, 1.0, 1.0), sigma=3.0)
    ref = brute_force_weights(labels, spacing=(3.0, 1.0, 1.0), sigma=3.0)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-2)
    # Spacing matters: the same voxels with isotropic spacing give other weights.
    assert np.abs(border_weight_map(labels, method=method, sigma=3.0) - ours).max() > 0.5


@pytest.mark.parametrize("method", METHODS)
def test_weights_on_a_few_annotated_slices(method):
    """The sparse-slice case of the 3D U-Net paper: only some z-slices count in the loss."""
    _, labels = synthetic_cells_3d((10, 24, 24), radius=5, seed=7)
    annotated = np.zeros(labels.shape, bool)
    annotated[[2, 7]] = True
    w = border_weight_map(labels, method=method, sigma=3.0, annotated=annotated)
    assert np.all(w[~annotated] == 0) and np.all(w[annotated] > 0)
    ref = brute_force_weights(labels, sigma=3.0, annotated=annotated)
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-2)
    # The border term on an annotated slice uses the cells of the whole volume (3D distances).
    full = border_weight_map(labels, method=method, sigma=3.0, class_balance=False)
    sparse = border_weight_map(labels, method=method, sigma=3.0, class_balance=False,
                               annotated=annotated)
    np.testing.assert_allclose(sparse[annotated], full[annotated], atol=1e-5)
    _, mask = make_target(labels, annotated=annotated)
    np.testing.assert_array_equal(mask, annotated.astype(np.float32))


def test_3d_class_weights_three_classes():
    _, labels = synthetic_cells_3d((6, 20, 20), radius=5, seed=2)
    target, _ = make_target(labels, num_classes=3)
    w = class_weights(target, num_classes=3)
    for c in range(3):
        assert np.isclose(w[target == c].sum(), target.size / 3, rtol=1e-4)
    balanced = border_weight_map(labels, num_classes=3, w0=0.0)
    np.testing.assert_allclose(balanced, w, rtol=1e-6)


def test_three_class_target_of_annotated_planes_borders_only_the_outlines():
    """Cells painted on two planes of a volume, nothing else annotated: the voxels above and
    below a plane are unknown, not background, so the 3-class ("objects") target of each plane
    is the plane's own 2D target — border where two cells meet or a cell meets the plane's
    background, an interior elsewhere — in the target, the augmented patches' target and the
    class balance of the weight map."""
    from napari_unet.core.targets import slices_mask
    from napari_unet.core.training.data import targets_from_instances, training_target

    labels = np.zeros((6, 12, 16), np.uint16)
    labels[1, 2:7, 2:7], labels[1, 2:7, 7:12] = 1, 2  # two touching cells
    labels[1, 8:12, 11:16] = 3  # a separate one, on the image edge
    labels[4, 3:9, 4:10] = 4
    mask = slices_mask(labels.shape, z=(1, 4))
    plane = np.zeros((12, 16), np.uint8)  # plane 1 by hand: interior 1, border 2
    plane[2:7, 2:12], plane[8:12, 11:16] = 2, 2
    plane[3:6, 3:6], plane[3:6, 8:11] = 1, 1
    plane[9:12, 12:16] = 1  # the image edge is no background
    t = training_target(labels, annotated=mask, num_classes=3)
    np.testing.assert_array_equal(t.target[1], plane)
    np.testing.assert_array_equal(t.target[4], make_target(labels[4], num_classes=3)[0])
    assert int((t.target[4] == 1).sum()) == 4 * 4
    target, _ = targets_from_instances(t.instances, t.counted, class_weight=[1.0, 1.0, 1.0],
                                       num_classes=3)
    np.testing.assert_array_equal(target, t.target)
    balanced = border_weight_map(labels, num_classes=3, w0=0.0, annotated=mask)
    np.testing.assert_allclose(balanced, class_weights(t.target, annotated=mask, num_classes=3),
                               rtol=1e-6)
    assert set(np.unique(t.target[mask]).tolist()) == {0, 1, 2}
