"""Synthetic touching cells in 2D and 3D: exact labels, determinism, anisotropy."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.synthetic import synthetic_cells, synthetic_cells_3d
from napari_unet.core.targets import separation_borders


def test_same_seed_same_volume_and_another_seed_another():
    a = synthetic_cells_3d((12, 40, 40), radius=7, seed=5)
    b = synthetic_cells_3d((12, 40, 40), radius=7, seed=5)
    c = synthetic_cells_3d((12, 40, 40), radius=7, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].dtype == np.float32 and a[1].dtype == np.int32 and a[0].shape == (12, 40, 40)


@pytest.mark.parametrize("spacing", [None, (3.0, 1.0, 1.0)])
def test_3d_labels_are_exact_touching_cells(spacing):
    image, labels = synthetic_cells_3d((16, 48, 48), radius=7, spacing=spacing, seed=1)
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(ids.size))  # 1..N, consecutive
    assert labels.max() >= 8
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        _, pieces = ndi.label(labels[box] == i)  # 6-connected
        assert pieces == 1
    assert separation_borders(labels).any()  # cells touch
    # Cells are brighter than the background; the line where two cells touch is darker.
    assert image[labels > 0].mean() > image[labels == 0].mean() + 0.3
    border = separation_borders(labels)
    assert image[border].mean() < image[(labels > 0) & ~border].mean()


def test_anisotropic_spacing_makes_cells_flat_in_voxels_and_round_in_microns():
    def mean_extent(labels):
        boxes = [b for b in ndi.find_objects(labels) if b is not None]
        inner = [b for b in boxes if all(s.start > 0 and s.stop < n
                                         for s, n in zip(b, labels.shape, strict=True))]
        return np.mean([[s.stop - s.start for s in b] for b in inner or boxes], axis=0)

    _, iso = synthetic_cells_3d((40, 64, 64), radius=8, seed=3)
    _, aniso = synthetic_cells_3d((10, 64, 64), radius=8, spacing=(4.0, 1.0, 1.0), seed=3)
    z, y, x = mean_extent(iso)
    assert 0.75 < z / ((y + x) / 2) < 1.33
    z, y, x = mean_extent(aniso)
    ratio = 4.0 * z / ((y + x) / 2)  # physical z extent over xy extent
    assert 0.6 < ratio < 1.5 and z < 0.5 * y


def test_default_cell_count_follows_the_physical_volume():
    _, thin = synthetic_cells_3d((16, 64, 64), radius=6, seed=0)
    _, thick = synthetic_cells_3d((16, 64, 64), radius=6, spacing=(2.0, 1.0, 1.0), seed=0)
    assert 1.5 < thick.max() / thin.max() < 2.5


def test_2d_is_unchanged_by_the_ndim_extension():
    image, labels = synthetic_cells((64, 64), radius=8, seed=1)
    again = synthetic_cells((64, 64), radius=8, seed=1, spacing=1.0)  # spacing 1 is the default
    assert np.array_equal(labels, again[1])
    np.testing.assert_allclose(image, again[0], atol=1e-6)
    assert image.shape == (64, 64) and labels.max() > 5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: synthetic_cells((4, 4, 4, 4)), "shape"),
        (lambda: synthetic_cells((2, 32, 32)), "shape"),
        (lambda: synthetic_cells((6, 32)), "shape"),
        (lambda: synthetic_cells_3d((32, 32)), "shape"),
        (lambda: synthetic_cells((8, 32, 32), spacing=(1.0, 1.0)), "spacing"),
        (lambda: synthetic_cells((8, 32, 32), spacing=(0.0, 1.0, 1.0)), "spacing"),
        (lambda: synthetic_cells((8, 32, 32), spacing="z"), "spacing"),
    ],
)
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
