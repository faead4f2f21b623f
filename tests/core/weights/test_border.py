"""The paper's weight map against a brute-force reference (one distance transform per cell)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from tests.core.weights.reference import brute_force_weights

from napari_unet.core.synthetic import synthetic_cells
from napari_unet.core.targets import make_target
from napari_unet.core.weights import border_weight_map, class_weights
from napari_unet.core.weights.two_nearest import HAVE_NUMBA

METHODS = ["scipy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba"))]


def random_cells(shape, n, seed, *, max_size=9):
    """Random boxes (later ones overwrite earlier ones) with sparse ids: touching, edge, thin."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    ids = rng.choice(np.arange(1, 10 * n + 2), size=n, replace=False)
    for cell_id in ids:
        lo = [rng.integers(-2, s) for s in shape]
        size = rng.integers(1, max_size, size=len(shape))
        labels[tuple(slice(max(a, 0), max(a + b, 0)) for a, b in zip(lo, size, strict=True))] = (
            cell_id
        )
    return labels


def assert_matches_reference(labels, method, **options):
    w0 = options.get("w0", 10.0)
    ours = border_weight_map(labels, method=method, **options)
    ref = brute_force_weights(labels, **options)
    assert ours.dtype == np.float32 and ours.shape == labels.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3 * w0)
    return ours, ref


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_on_touching_cells(method, seed):
    _, labels = synthetic_cells((96, 80), radius=7, seed=seed)
    assert labels.max() > 20
    assert_matches_reference(labels, method)


@pytest.mark.parametrize("method", METHODS)
def test_matches_brute_force_with_hundreds_of_cells(method):
    labels = random_cells((120, 110), 300, seed=3, max_size=6)
    assert len(np.unique(labels)) > 200
    assert_matches_reference(labels, method, sigma=3.0, w0=5.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gap", [0, 1, 2])
def test_gaps_of_zero_to_two_pixels_and_cells_at_the_edge(method, gap):
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[:, : 10] = 40  # touches three image edges
    labels[3:15, 10 + gap : 20 + gap] = 7
    labels[15:, 25:] = 900  # corner cell
    ours, _ = assert_matches_reference(labels, method)
    if gap:
        # In the gap, d1 = 1 and d2 <= gap: the border term is close to w0.
        assert ours[8, 10] > 10 * np.exp(-((1 + gap) ** 2) / 50) + 0.5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_cells", [0, 1, 2])
def test_zero_one_two_cells(method, n_cells):
    labels = np.zeros((24, 24), dtype=np.int64)
    if n_cells >= 1:
        labels[2:8, 3:9] = 5
    if n_cells == 2:
        labels[12:20, 10:22] = 11
    ours, _ = assert_matches_reference(labels, method)
    target, _ = make_target(labels)
    wc = class_weights(target)
    if n_cells < 2:  # no border term
        np.testing.assert_array_equal(ours, wc)
    else:
        assert (ours - wc).max() > 1.0


@pytest.mark.parametrize("method", METHODS)
def test_binary_mask_input_like_isbi(method):
    _, labels = synthetic_cells((64, 64), radius=6, seed=4)
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)
    # The binary mask's 4-connected components are the reference's cells.
    inst = ndi.label(mask > 0)[0]
    ours = border_weight_map(mask, method=method)
    np.testing.assert_allclose(ours, brute_force_weights(inst), atol=1e-2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.75)])
def test_3d_with_anisotropic_spacing(method, spacing):
    labels = ndi.grey_dilation(random_cells((10, 18, 20), 12, seed=5, max_size=5), size=2)
    assert_matches_reference(labels, method, sigma=3.0, spacing=spacing)


@pytest.mark.parametrize("method", METHODS)
def test_2d_anisotropic_spacing(method):
    _, labels = synthetic_cells((48, 64), radius=6, seed=6)
    assert_matches_reference(labels, method, spacing=(1.5, 0.7), sigma=4.0)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(0, 25),
    sigma=st.floats(1.0, 6.0),
    h=st.integers(3, 40),
    w=st.integers(3, 40),
)
def test_property_matches_brute_force(seed, n, sigma, h, w):
    labels = random_cells((h, w), n, seed)
    for method in ["scipy", "numba"] if HAVE_NUMBA else ["scipy"]:
        assert_matches_reference(labels, method, sigma=sigma)


def test_class_balance_properties():
    _, labels = synthetic_cells((64, 64), radius=6, seed=7)
    target, _ = make_target(labels)
    wc = border_weight_map(labels, w0=0.0)
    assert wc.mean() == pytest.approx(1.0, rel=1e-5)
    assert wc[target == 0].sum() == pytest.approx(wc[target == 1].sum(), rel=1e-5)
    assert len(np.unique(wc[target == 1])) == 1
    np.testing.assert_array_equal(border_weight_map(labels, w0=0.0, class_balance=False), 1.0)
    # The 3-class option balances three classes.
    t3, _ = make_target(labels, num_classes=3)
    w3 = border_weight_map(labels, w0=0.0, num_classes=3)
    totals = [w3[t3 == c].sum() for c in range(3)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)


def test_border_term_only_on_background_and_without_class_balance():
    _, labels = synthetic_cells((64, 64), radius=6, seed=8)
    target, _ = make_target(labels)
    w = border_weight_map(labels, class_balance=False)
    np.testing.assert_array_equal(w[target == 1], 1.0)
    assert w[target == 0].max() > 5.0


@pytest.mark.parametrize("method", METHODS)
def test_annotated_region(method):
    _, labels = synthetic_cells((64, 64), radius=6, seed=9)
    annotated = np.zeros(labels.shape, dtype=bool)
    annotated[:30, :25] = True
    ours, _ = assert_matches_reference(labels, method, annotated=annotated)
    assert not ours[~annotated].any()
    assert ours[annotated].min() > 0
    # w_c is balanced over the annotated pixels only.
    wc = border_weight_map(labels, w0=0.0, annotated=annotated)
    assert wc[annotated].mean() == pytest.approx(1.0, rel=1e-5)


def test_no_annotated_pixel_gives_zeros():
    _, labels = synthetic_cells((32, 32), radius=5, seed=1)
    w = border_weight_map(labels, annotated=np.zeros(labels.shape, bool))
    assert w.dtype == np.float32 and not w.any()
    assert not class_weights(np.zeros((3, 3), np.uint8), annotated=np.zeros((3, 3), bool)).any()


def test_empty_labels_and_single_class():
    w = border_weight_map(np.zeros((8, 8), np.uint8))
    np.testing.assert_array_equal(w, 1.0)
    w = border_weight_map(np.full((8, 8), 3, np.uint8))  # one cell everywhere
    np.testing.assert_array_equal(w, 1.0)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"w0": -1.0}, "w0"),
        ({"spacing": (1.0, 1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 0.0)}, "spacing"),
        ({"num_classes": 4}, "num_classes"),
        ({"method": "fast"}, "method"),
        ({"annotated": np.ones((3, 3), bool)}, "annotated"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(options, name):
    labels = np.zeros((8, 8), np.int32)
    labels[:4, :4], labels[5:, 5:] = 1, 2
    with pytest.raises(ValueError, match=name):
        border_weight_map(labels, **options)


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="labels"):
        border_weight_map(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="target"):
        class_weights(np.array([[0, 2]]), num_classes=2)


@pytest.mark.parametrize("num_classes", [3, 200])
def test_class_weights_formula_with_annotated(num_classes):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(20, 30)).astype(np.uint8)
    annotated = rng.random((20, 30)) < 0.4
    w = class_weights(target, annotated=annotated, num_classes=num_classes)
    n = annotated.sum()
    for c in range(3):
        n_c = (annotated & (target == c)).sum()
        np.testing.assert_allclose(w[annotated & (target == c)], n / (3 * n_c), rtol=1e-6)
    assert not w[~annotated].any()


@pytest.mark.parametrize("method", METHODS)
def test_ids_beyond_int32(method):
    labels = random_cells((30, 30), 8, seed=11).astype(np.uint64)
    big = np.where(labels > 0, labels + np.uint64(2**40), 0).astype(np.uint64)
    np.testing.assert_allclose(
        border_weight_map(big, method=method), brute_force_weights(labels), atol=1e-2
    )
