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
