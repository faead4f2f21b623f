"""Training targets: instance/binary input, separation borders, 3-class targets, ignore mask."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from tests.core.weights.reference import separated_cells

from napari_unet.core.targets import make_target, separation_borders, to_instances


def test_binary_mask_becomes_4_connected_components():
    mask = np.array(
        [
            [255, 255, 0, 0],
            [0, 0, 255, 0],  # touches the first run only diagonally: a separate cell
            [0, 0, 255, 0],
            [255, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    inst = to_instances(mask)
    assert inst.dtype == np.int32
    assert inst.max() == 3
    assert len(np.unique(inst[mask > 0])) == 3
    np.testing.assert_array_equal(inst > 0, mask > 0)
    np.testing.assert_array_equal(to_instances(mask > 0), inst)  # bool input: same


def test_instance_ids_are_kept_and_may_be_sparse():
    labels = np.zeros((5, 6), dtype=np.uint16)
    labels[:2, :2], labels[3:, 3:], labels[:2, 4:] = 7, 1000, 3
    inst = to_instances(labels)
    np.testing.assert_array_equal(inst, labels)
    assert inst.dtype == np.int32


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]
)
def test_any_integer_dtype_gives_the_same_target(dtype):
    labels = np.zeros((6, 8), dtype=np.int64)
    labels[1:5, 1:4], labels[1:5, 4:7] = 5, 9
    target, mask = make_target(labels.astype(dtype))
    expected, _ = make_target(labels)
    np.testing.assert_array_equal(target, expected)
    assert target.dtype == np.uint8 and mask.dtype == np.float32


def test_large_ids_use_int64():
    labels = np.array([[0, 2**40, 2**40, 3]], dtype=np.uint64)
    inst = to_instances(labels)
    assert inst.dtype == np.int64 and inst[0, 1] == 2**40


def test_float_labels_with_integral_values_are_accepted():
    labels = np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_instances(labels), labels.astype(np.int32))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[0.0, 1.5]]), "non-integral"),
        (np.array([[0, -1]]), "non-negative"),
        (np.array([[0.0, np.nan]]), "finite"),
        (np.zeros(5, dtype=np.int32), "2D"),
        (np.zeros((2, 2, 2, 2), dtype=np.int32), "2D"),
    ],
)
def test_bad_labels_raise_value_error_naming_the_argument(labels, message):
    with pytest.raises(ValueError, match=message) as info:
        make_target(labels)
    assert "labels" in str(info.value)


def test_non_numeric_labels_raise_type_error():
    with pytest.raises(TypeError, match="labels"):
        to_instances(np.array([["a", "b"], ["c", "d"]]))


def test_separation_borders_split_touching_cells():
    labels = np.zeros((4, 7), dtype=np.int32)
    labels[:, :3], labels[:, 3:6] = 1, 2
    target, _ = make_target(labels)
    expected = np.array([[1, 1, 0, 0, 1, 1, 0]] * 4, dtype=np.uint8)
    np.testing.assert_array_equal(target, expected)


def test_diagonal_contact_is_a_separation_border():
    labels = np.array([[1, 0], [0, 2]])
    np.testing.assert_array_equal(separation_borders(labels), [[True, False], [False, True]])
    np.testing.assert_array_equal(make_target(labels)[0], np.zeros((2, 2)))


def test_separation_borders_3d_use_26_neighbours():
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    labels[0, 0, 0], labels[1, 1, 1], labels[3, 3, 3] = 1, 2, 3  # corner contact 1-2 only
    border = separation_borders(labels)
    np.testing.assert_array_equal(np.argwhere(border), [[0, 0, 0], [1, 1, 1]])


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4)))
def test_two_class_target_never_merges_cells(labels):
    inst = to_instances(labels)
    target, _ = make_target(labels)
    np.testing.assert_array_equal(np.where(separation_borders(inst), 0, inst), separated_cells(inst))
    # Every 8-connected foreground component of the target lies inside one instance.
    comp, n = ndi.label(target, structure=np.ones((3, 3)))
    for i in range(1, n + 1):
        assert len(np.unique(inst[comp == i])) == 1
    assert set(np.unique(target)) <= {0, 1}


def test_three_class_target():
    labels = np.zeros((5, 8), dtype=np.int32)
    labels[:, :4], labels[:, 4:7] = 3, 8
    target, _ = make_target(labels, num_classes=3)
    expected = np.array([[1, 1, 1, 2, 2, 1, 2, 0]] * 5, dtype=np.uint8)
    np.testing.assert_array_equal(target, expected)
    two, _ = make_target(labels)
    # Interiors are cells of the 2-class target; its cells are interior or outline pixels.
    assert np.all(two[target == 1] == 1) and np.all(target[two == 1] >= 1)


def test_annotated_mask_gives_weight_mask():
    labels = np.zeros((4, 4), dtype=np.int32)
    labels[1:3, 1:3] = 1
    annotated = np.zeros((4, 4), dtype=bool)
    annotated[:2] = True
    _, mask = make_target(labels, annotated=annotated)
    np.testing.assert_array_equal(mask, annotated.astype(np.float32))
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(make_target(labels, annotated=annotated.astype(np.uint8))[1], mask)
    np.testing.assert_array_equal(make_target(labels)[1], np.ones((4, 4), np.float32))


def test_annotated_mask_errors():
    labels = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(ValueError, match=r"annotated.*shape"):
        make_target(labels, annotated=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="annotated"):
        make_target(labels, annotated=np.full((4, 4), 2))


def test_num_classes_error():
    with pytest.raises(ValueError, match="num_classes"):
        make_target(np.zeros((3, 3), np.int32), num_classes=4)


def test_3d_binary_input_and_empty_labels():
    mask = np.zeros((3, 4, 4), dtype=bool)
    mask[0, :2, :2] = mask[2, 2:, 2:] = True
    inst = to_instances(mask)
    assert inst.max() == 2
    target, _ = make_target(mask)
    np.testing.assert_array_equal(target, mask.astype(np.uint8))
    empty, weight = make_target(np.zeros((3, 3), np.uint8))
    assert not empty.any() and weight.all()
