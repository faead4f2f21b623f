"""The per-cell table: known areas, intensities and positions on hand-made images, scikit-image's
own properties, 3D, stacks of planes and the confidence maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import regionprops

from napari_unet.core.measure import confidence_maps, measure_cells, sphericity


def _two_cells():
    """A 4×6 cell of value 10 (label 3) and a 5×5 cell at the border of values 1..25 (label 8)."""
    labels = np.zeros((20, 30), np.int32)
    image = np.full((20, 30), 100, np.uint16)  # background: never counted
    labels[4:8, 10:16], image[4:8, 10:16] = 3, 10
    labels[15:20, 0:5], image[15:20, 0:5] = 8, np.arange(1, 26).reshape(5, 5)
    return labels, image


def test_known_areas_intensities_positions_and_border():
    labels, image = _two_cells()
    t = measure_cells(labels, image)
    assert t["label"].tolist() == [3, 8]
    assert t["area"].tolist() == [24.0, 25.0]
    assert t["mean_intensity"].tolist() == [10.0, 13.0]
    assert t["min_intensity"].tolist() == [10.0, 1.0]
    assert t["max_intensity"].tolist() == [10.0, 25.0]
    assert t["integrated_intensity"].tolist() == [240.0, 325.0]
    assert t[["centroid_y", "centroid_x"]].values.tolist() == [[5.5, 12.5], [17.0, 2.0]]
    assert t[["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]].values.tolist() == [
        [4, 10, 8, 16], [15, 0, 20, 5]]
    assert t["touches_border"].tolist() == [False, True]
    np.testing.assert_allclose(t["equivalent_diameter"], np.sqrt(4 * t["area"] / np.pi))


def test_shape_properties_are_scikit_images():
    labels, image = _two_cells()
    t = measure_cells(labels, image)
    for row, region in zip(t.itertuples(), regionprops(labels), strict=True):
        assert row.eccentricity == pytest.approx(region.eccentricity)
        assert row.solidity == pytest.approx(region.solidity)


def test_spacing_and_origin_make_sizes_and_positions_physical():
    labels, image = _two_cells()
    t = measure_cells(labels, image, spacing=(0.5, 0.25), origin=(10.0, -1.0), unit="µm")
    assert t["area"].tolist() == [24 * 0.125, 25 * 0.125]
    assert t[["centroid_y", "centroid_x"]].values.tolist() == [[10 + 5.5 * 0.5, -1 + 12.5 * 0.25],
                                                              [10 + 17 * 0.5, -1 + 2 * 0.25]]
    assert t[["bbox_y0", "bbox_x1"]].values.tolist() == [[4, 16], [15, 5]]  # pixel indices
    units = t.attrs["units"]
    assert (units["area"], units["centroid_y"], units["equivalent_diameter"], units["bbox_y0"]) \
        == ("µm²", "µm", "µm", "px")
    assert "mean_intensity" not in units


def test_colour_channels_and_maps():
    labels, image = _two_cells()
    rgb = np.stack([image, 2 * image, 3 * image], axis=-1)
    prob = np.where(labels == 3, 0.9, 0.4).astype(np.float32)
    t = measure_cells(labels, rgb, maps={"mean_probability": prob})
    assert t["mean_intensity_2"].tolist() == [30.0, 39.0]
    assert t["integrated_intensity_1"].tolist() == [480.0, 650.0]
    np.testing.assert_allclose(t["mean_probability"], [0.9, 0.4], rtol=1e-6)
    first = measure_cells(labels, np.moveaxis(rgb, -1, 0), channel_axis=0)
    assert first["mean_intensity_1"].tolist() == [20.0, 26.0]


def test_volume_columns_sphericity_and_units():
    z, y, x = np.ogrid[:12, :24, :40]
    labels = np.zeros((12, 24, 40), np.int32)
    labels[(2 * (z - 6)) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 64] = 1  # a ball, z spacing 2
    labels[5:6, 2:22, 20:40] = 2  # a flat slab (2 × 20 × 20), at the border
    t = measure_cells(labels, labels.astype(np.float32), spacing=(2.0, 1.0, 1.0))
    assert {"volume", "centroid_z", "bbox_z1", "sphericity"} <= set(t.columns)
    assert not {"area", "eccentricity", "solidity"} & set(t.columns)
    assert t["volume"].tolist() == [2.0 * np.count_nonzero(labels == 1),
                                    2.0 * np.count_nonzero(labels == 2)]
    assert t.loc[0, "centroid_z"] == pytest.approx(12.0)
    assert t.loc[0, "sphericity"] > 0.9 and t.loc[1, "sphericity"] < 0.5
    assert t["touches_border"].tolist() == [False, True]
    assert t.attrs["units"]["volume"] == "px³"


def test_sphericity_of_a_ball_is_about_one_whatever_the_spacing():
    z, y, x = np.ogrid[-10:11, -20:21, -20:21]
    ball = (2 * z) ** 2 + y**2 + x**2 <= 225  # a ball of radius 15 sampled every 2 in z
    assert sphericity(ball, (2.0, 1.0, 1.0)) == pytest.approx(1.0, abs=0.03)
    assert sphericity(ball, (1.0, 1.0, 1.0)) < 0.95  # read as voxels: a flattened ball


def test_a_stack_of_planes_is_measured_plane_by_plane():
    labels, image = _two_cells()
    stack = np.stack([labels, np.zeros_like(labels), labels * (labels == 8)])
    t = measure_cells(stack, np.stack([image] * 3), planes=True, spacing=(5.0, 1.0, 1.0))
    assert list(t.columns[:3]) == ["label", "plane", "area"]
    assert t[["plane", "label"]].values.tolist() == [[0, 3], [0, 8], [2, 8]]
    assert t["area"].tolist() == [24.0, 25.0, 25.0]  # in-plane areas: the z spacing not used
    assert "centroid_z" not in t.columns and "eccentricity" in t.columns


def test_no_cells_gives_the_columns_and_no_rows():
    t = measure_cells(np.zeros((8, 8), np.int32), np.ones((8, 8)),
                      maps={"mean_probability": np.zeros((8, 8))})
    assert len(t) == 0 and "integrated_intensity" in t.columns and "mean_probability" in t.columns


def test_wrong_shapes_name_the_argument():
    labels, image = _two_cells()
    with pytest.raises(ValueError, match="image: expected the labels' shape"):
        measure_cells(labels, image[:10])
    with pytest.raises(ValueError, match=r"maps\['p'\]"):
        measure_cells(labels, maps={"p": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="planes"):
        measure_cells(labels, planes=True)
    with pytest.raises(ValueError, match="labels: expected an integer"):
        measure_cells(labels.astype(float))


def test_confidence_maps_of_two_and_three_class_models_and_flips():
    prob = np.zeros((3, 4, 4), np.float32)
    prob[0], prob[1], prob[2] = 0.25, 0.5, 0.25
    maps = confidence_maps(prob, flip_std=np.full((4, 4), 0.1))
    assert set(maps) == {"mean_probability", "mean_flip_std"}
    np.testing.assert_allclose(maps["mean_probability"], 0.75)
    stacked = confidence_maps(np.stack([prob, prob]), stacked=True)
    assert stacked["mean_probability"].shape == (2, 4, 4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 6))
def test_sums_over_cells_add_up(seed, cells):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, cells + 1, (12, 15)).astype(np.int32)
    image = rng.random((12, 15)).astype(np.float32)
    t = measure_cells(labels, image)
    assert t["area"].sum() == np.count_nonzero(labels)
    assert t["integrated_intensity"].sum() == pytest.approx(float(image[labels > 0].sum()),
                                                            rel=1e-5)
    np.testing.assert_allclose(t["integrated_intensity"], t["mean_intensity"] * t["area"],
                               rtol=1e-5)
    assert (t["min_intensity"] <= t["mean_intensity"] + 1e-6).all()
