"""Exceptions raised on bad input; each message names the file and the problem."""

from __future__ import annotations


class NucsegError(Exception):
    """Base class of every error nucseg raises on purpose."""


class ImageReadError(NucsegError, ValueError):
    """An image file is missing, corrupt, or not 8-bit RGB(A)."""


class AnnotationError(NucsegError, ValueError):
    """An annotation (XML or label map) is missing, malformed or unusable."""


class LayoutError(NucsegError, ValueError):
    """A dataset folder has an unknown layout, or an image lacks its annotation (or the reverse)."""


class ShapeMismatchError(NucsegError, ValueError):
    """Two arrays that must share a shape do not (image vs. labels, ground truth vs. prediction)."""


class LabelMapError(AnnotationError):
    """An instance label map is not a non-negative integer array of the expected shape.

    Raised by `nucseg.labels.as_label_map`, the one check every module runs on label maps,
    whether ground truth, prediction or training crop. A subclass of `AnnotationError` because
    a label map is an annotation in form (code catching `AnnotationError` around
    `read_label_map` or the metrics keeps working), and so also a `ValueError` for callers
    that expect one.
    """


class EngineError(NucsegError, ValueError):
    """A training setting is invalid, or a checkpoint does not fit the run being resumed."""


class AnnotationWarning(UserWarning):
    """Ground truth that was used, but may not mean what it seems (skipped regions, no nuclei)."""


class ScoringWarning(UserWarning):
    """A score that is computed, but probably not what the user meant (e.g. a binary mask)."""
