"""The one validator of instance label maps (0 = background, 1.. = one id per nucleus).

Every module that takes a label map (ground truth, prediction, training crop, file contents)
checks it here, so a bad map raises the same `LabelMapError` with the same wording everywhere.
Imports only numpy and `nucseg.errors`, so any module can use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nucseg.errors import LabelMapError

__all__ = ["as_label_map"]

_INT32_MAX = int(np.iinfo(np.int32).max)


def as_label_map(
    labels: Any, name: str = "labels", *, ndim: int | None = 2, int32: bool = False
) -> np.ndarray:
    """Check that ``labels`` is a label map of non-negative integer ids and return it as an array.

    Booleans and floats are refused, even with integral values: a mask or a probability map
    passed where instance ids are expected is a bug, not something to round.

    Args:
        labels: Array-like of instance ids.
        name: What the array is (e.g. ``"ground truth"`` or a file path); starts the message.
        ndim: Required number of dimensions; None accepts any.
        int32: Also require every id to fit in int32 (for maps stored or returned as int32).

    Returns:
        ``np.asarray(labels)``: the input itself when it already is an ndarray (no copy).

    Raises:
        LabelMapError: Wrong number of dimensions, a non-integer dtype (bool included),
            negative ids, or (with ``int32``) ids above 2**31 - 1.
    """
    arr = np.asarray(labels)
    wanted = f"a {ndim}-D integer array" if ndim is not None else "an integer array"
    if ndim is not None and arr.ndim != ndim:
        raise LabelMapError(f"{name}: label map must be {wanted}, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise LabelMapError(f"{name}: label map must be {wanted}, got dtype {arr.dtype}")
    if arr.size == 0:
        return arr
    # Unsigned maps cannot be negative: skip a full pass over the pixels.
    if np.issubdtype(arr.dtype, np.signedinteger) and (low := arr.min()) < 0:
        raise LabelMapError(
            f"{name}: label map has negative ids (min {low}); ids must be >= 0, 0 = background"
        )
    if int32 and np.iinfo(arr.dtype).max > _INT32_MAX and (top := int(arr.max())) > _INT32_MAX:
        raise LabelMapError(f"{name}: label ids exceed the int32 range (max {top})")
    return arr
