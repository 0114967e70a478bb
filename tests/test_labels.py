import numpy as np
import pytest

from nucseg.errors import AnnotationError, LabelMapError, NucsegError
from nucseg.labels import as_label_map


def test_valid_maps_come_back_without_a_copy():
    labels = np.array([[0, 3], [7, 0]], np.uint16)
    assert as_label_map(labels) is labels
    assert as_label_map([[0, 1], [2, 2]]).dtype.kind == "i"
    assert as_label_map(np.zeros((0, 0), np.int64)).shape == (0, 0)
    assert as_label_map(np.zeros((2, 3, 4), np.int32), ndim=None).ndim == 3


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (np.zeros((2, 3, 4), np.int32), "2-D integer array, got shape"),
        (np.zeros((3, 3), bool), "got dtype bool"),
        (np.ones((3, 3), np.float64), "got dtype float64"),  # integral floats are refused too
        (-np.ones((3, 3), np.int8), "negative ids"),
    ],
)
def test_one_error_names_the_array_and_the_problem(bad, problem):
    with pytest.raises(LabelMapError, match=problem) as info:
        as_label_map(bad, "ground truth")
    assert str(info.value).startswith("ground truth: ")


def test_int32_range_is_checked_only_on_request():
    big = np.array([[0, 2**31]], np.int64)
    assert as_label_map(big) is big
    with pytest.raises(LabelMapError, match="int32"):
        as_label_map(big, int32=True)
    as_label_map(np.array([[2**31 - 1]], np.int64), int32=True)


def test_error_is_an_annotation_error_and_a_value_error():
    assert issubclass(LabelMapError, AnnotationError)
    assert issubclass(LabelMapError, NucsegError) and issubclass(LabelMapError, ValueError)
