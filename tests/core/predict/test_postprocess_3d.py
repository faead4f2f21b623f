"""Labels from 3D probabilities: face-connected components, anisotropic watershed and regrowth,
min_size in voxels, 3D hole filling; the 3D segment path."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.model import UNet
from napari_unet.core.predict import (
    PostprocessSettings,
    labels_from_probabilities,
    segment,
    stored_spacing,
)
from napari_unet.core.predict.postprocess import fill_label_holes

SPACING = (4.0, 1.0, 1.0)  # z step = 4 xy pixels


def _prob(cell: np.ndarray) -> np.ndarray:
    cell = cell.astype(np.float32)
    return np.stack([1 - cell, cell])


def _two_cells_stacked_in_z():
    """Two touching spheres of radius 8.5 (physical) stacked along a coarse z."""
    z, y, x = np.mgrid[:12, :24, :24].astype(float)
    a = ((z - 3.5) * 4) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 8.5**2
    b = ((z - 7.5) * 4) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 8.5**2
    return a, b


def test_touching_3d_cells_are_separated_by_the_anisotropic_watershed():
    a, b = _two_cells_stacked_in_z()
    opts = dict(watershed=True, min_distance=5, min_size=1, regrow=0)
    lab = labels_from_probabilities(_prob(a | b), spacing=SPACING, **opts)
    assert lab.shape == a.shape and lab.dtype == np.int32 and lab.max() == 2
    only_a, only_b = a & ~b, b & ~a
    ids_a, ids_b = np.unique(lab[only_a]), np.unique(lab[only_b])
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a[0] != ids_b[0]
    # in voxel units the pair looks like one flat blob: spacing is what separates them
    assert labels_from_probabilities(_prob(a | b), **opts).max() == 1


def test_3d_components_are_face_connected_and_min_size_counts_voxels():
    cell = np.zeros((4, 6, 6), bool)
    cell[0, 0, 0] = cell[1, 1, 1] = True  # corner neighbours only: two objects
    cell[2:4, 3:6, 3:6] = True  # 18 voxels
    lab = labels_from_probabilities(_prob(cell), min_size=1, regrow=0)
    assert lab.max() == 3
    assert labels_from_probabilities(_prob(cell), min_size=18, regrow=0).max() == 1
    assert labels_from_probabilities(_prob(cell), min_size=19, regrow=0).max() == 0


def test_3d_regrowth_uses_physical_distances():
    cell = np.zeros((7, 10, 10), bool)
    cell[:3, 2:8, 2:8] = cell[4:, 2:8, 2:8] = True  # a one-slice gap between two cells
    iso = labels_from_probabilities(_prob(cell), min_size=1, regrow=1)
    aniso = labels_from_probabilities(_prob(cell), min_size=1, regrow=1, spacing=SPACING)
    assert iso.max() == aniso.max() == 2
    assert (iso[3, 2:8, 2:8] > 0).all()  # 1 px wide: closed
    assert not (aniso[3] > 0).any()  # 4 px wide in physical units: stays background


def test_3d_holes_are_filled_in_the_volume():
    lab = np.zeros((5, 5, 5), np.int32)
    lab[1:4, 1:4, 1:4] = 1
    lab[2, 2, 2] = 0
    assert fill_label_holes(lab)[2, 2, 2] == 1
    tube = lab.copy()
    tube[:, 2, 2] = 0  # open to the outside along z: not a hole in 3D
    assert fill_label_holes(tube)[2, 2, 2] == 0


def test_bad_spacing_names_the_argument():
    with pytest.raises(ValueError, match="spacing: expected 3 positive"):
        labels_from_probabilities(np.zeros((2, 3, 4, 5), np.float32), spacing=(1, 1))


def test_settings_labels_take_spacing_and_segment_a_volume_with_a_3d_model():
    a, b = _two_cells_stacked_in_z()
    s = PostprocessSettings(watershed=True, min_distance=5, min_size=1, regrow=0)
    assert s.labels(_prob(a | b), spacing=SPACING).max() == 2
    net = UNet(depth=1, base_channels=2, ndim=3)
    meta = {"training": {"spacing": list(SPACING)}}
    assert stored_spacing(meta) == SPACING
    prob, labels = segment(net, np.random.default_rng(0).random((6, 10, 12)), metadata=meta)
    assert prob.shape == (2, 6, 10, 12) and labels.shape == (6, 10, 12)
    with pytest.raises(ValueError, match="stack: a 3D model"):
        segment(net, np.random.default_rng(0).random((6, 10, 12)), stack=True)


def test_stitch_planes_links_per_plane_labels_into_the_3d_objects():
    """Two 3D cells whose per-plane ids are shuffled plane by plane come back as two objects."""
    from napari_unet.core.predict.stitch import stitch_planes

    rng = np.random.default_rng(0)
    truth = np.zeros((6, 10, 12), np.int32)
    truth[:, 2:6, 1:5] = 1
    truth[1:5, 3:8, 6:11] = 2
    per_plane = np.zeros_like(truth)
    for z in range(truth.shape[0]):  # each plane numbered on its own, in a random order
        ids = rng.permutation(3) + 1
        per_plane[z][truth[z] == 1] = ids[0]
        per_plane[z][truth[z] == 2] = ids[1]
    out = stitch_planes(per_plane)
    assert int(out.max()) == 2
    for k in (1, 2):
        assert len(np.unique(out[truth == k])) == 1
    assert out[truth == 1][0] != out[truth == 2][0]
    # a weak overlap (IoU below the threshold) starts a new object
    shifted = np.zeros((2, 10, 12), np.int32)
    shifted[0, 0:4, 0:4] = 1
    shifted[1, 3:7, 3:7] = 1
    assert int(stitch_planes(shifted).max()) == 2
    with pytest.raises(ValueError, match="labels"):
        stitch_planes(np.zeros((4, 4), int))
