"""Read and write RGB images and instance label maps, with errors that name the file.

Images come back as ``uint8`` arrays of shape ``(H, W, 3)``; an alpha channel is dropped.
Grayscale, 16-bit and float images are refused rather than silently converted, because
MoNuSeg-style H&E tiles are always 8-bit RGB and anything else usually means a wrong file.
Label maps come back as ``int32`` arrays of shape ``(H, W)`` with 0 as background.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from nucseg.errors import AnnotationError, ImageReadError
from nucseg.labels import as_label_map
from nucseg.runtime import atomic_write

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

_TIFF = (".tif", ".tiff")
_PIL_COLOUR_MODES = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV")  # 8-bit colour, converted to RGB
_PIL_GRAY_MODES = ("1", "L", "LA", "La")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_bit_depth(path: Path) -> int | None:
    """Return the bit depth stored in a PNG header (Pillow hides 16-bit RGB), or None."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE):
        return None
    return head[24]


def _read_tiff(path: Path) -> np.ndarray:
    """Read the first image of a TIFF, falling back to Pillow if tifffile cannot decode it."""
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError("no image in the file")
            return tif.asarray(key=0)
    except Exception as tiff_exc:  # noqa: BLE001 - any decoder failure is reported below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about the corruption we report
                with Image.open(path) as im:
                    im.load()
                    return np.asarray(im)
        except Exception:  # noqa: BLE001
            raise ImageReadError(
                f"{path}: unreadable or corrupt TIFF ({type(tiff_exc).__name__}: {tiff_exc})"
            ) from tiff_exc


def _read_pil(path: Path) -> np.ndarray:
    """Read a PNG/JPEG with Pillow, turning palette and other 8-bit colour modes into RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                if im.mode in _PIL_GRAY_MODES:
                    raise ImageReadError(
                        f"{path}: grayscale image (mode {im.mode!r}); an 8-bit RGB image is needed"
                    )
                if im.mode in _PIL_COLOUR_MODES:
                    im = im.convert("RGBA" if "A" in im.mode else "RGB")
                return np.asarray(im)
    except ImageReadError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ImageReadError(f"{path}: unreadable or corrupt image ({exc})") from exc


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate dtype and channels of a decoded image and return it as (H, W, 3) uint8."""
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF: (C, H, W)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2)):
        raise ImageReadError(f"{path}: grayscale image (shape {array.shape}); 8-bit RGB needed")
    if array.dtype != np.uint8:
        kind = "16-bit" if array.dtype in (np.uint16, np.int16) else f"{array.dtype}"
        raise ImageReadError(f"{path}: {kind} image (dtype {array.dtype}); 8-bit RGB needed")
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageReadError(
            f"{path}: unexpected image shape {array.shape}; expected (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image (shape {array.shape})")
    return np.ascontiguousarray(array[..., :3])


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit RGB(A) image and return it as RGB.

    TIFF (any compression tifffile/imagecodecs or Pillow can decode, e.g. LZW, PackBits),
    PNG and JPEG are accepted. A fourth (alpha) channel is dropped; palette PNGs are
    expanded to RGB.

    Args:
        path: Image file with one of ``IMAGE_SUFFIXES``.

    Returns:
        Array of dtype uint8 and shape (H, W, 3).

    Raises:
        ImageReadError: The file is missing, has an unsupported suffix, cannot be decoded,
            is grayscale, is not 8-bit, or has an unexpected number of channels.

    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported image suffix {suffix!r}; use {IMAGE_SUFFIXES}")
    if suffix == ".png" and (_png_bit_depth(path) or 8) > 8:
        raise ImageReadError(f"{path}: 16-bit PNG; an 8-bit RGB image is needed")
    array = _read_tiff(path) if suffix in _TIFF else _read_pil(path)
    return _as_rgb(array, path)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG or zlib-compressed TIFF (parent folders are created).

    Args:
        path: Destination ending in .png, .tif or .tiff.
        image: uint8 array of shape (H, W, 3).

    Returns:
        The path written.

    Raises:
        ValueError: Unsupported suffix, or the array is not (H, W, 3) uint8.

    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"{path}: write_image needs uint8 (H, W, 3), got {image.dtype} {image.shape}"
        )
    suffix = path.suffix.lower()
    if suffix not in (*_TIFF, ".png"):
        raise ValueError(f"{path}: write_image supports .png, .tif, .tiff, not {suffix!r}")
    with atomic_write(path) as tmp:  # readers never see half an image
        if suffix in _TIFF:
            tifffile.imwrite(tmp, image, photometric="rgb", compression="zlib")
        else:
            Image.fromarray(image).save(tmp, format="PNG")
    return path


def _label_array(path: Path) -> np.ndarray:
    """Decode a label file into a raw array (validated by the caller)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in _TIFF:
            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise ValueError("no image in the file")
                return tif.asarray(key=0)
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":  # palette indices are the ids, not the colours
                return np.asarray(im)
            if im.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L"):
                raise AnnotationError(
                    f"{path}: label PNG must be single-channel integer, got mode {im.mode!r}"
                )
            return np.asarray(im)
    except AnnotationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a named error
        raise AnnotationError(
            f"{path}: unreadable or corrupt label map ({type(exc).__name__}: {exc})"
        ) from exc


def read_label_map(path: str | Path) -> np.ndarray:
    """Read an instance label map (0 = background, 1..n = nuclei).

    Args:
        path: A .png (8- or 16-bit single channel), .tif/.tiff or .npy file.

    Returns:
        int32 array of shape (H, W).

    Raises:
        AnnotationError: The file is missing or unreadable; its subclass `LabelMapError` when
            the map is not 2-D, not of an integer type, or holds negative ids or ids beyond
            the int32 range.

    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such label file")
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise AnnotationError(f"{path}: unsupported label suffix {suffix!r}; use {LABEL_SUFFIXES}")
    labels = _label_array(path)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    labels = as_label_map(labels, str(path), int32=True)
    return np.ascontiguousarray(labels, dtype=np.int32)


def write_label_map(path: str | Path, labels: np.ndarray) -> Path:
    """Write an instance label map as 16-bit PNG, int32 TIFF or int32 NPY.

    Args:
        path: Destination ending in .png, .tif, .tiff or .npy (parent folders are created).
        labels: 2-D array of non-negative integer ids.

    Returns:
        The path written.

    Raises:
        LabelMapError: A non-integer or non-2-D array, negative ids, or ids beyond the int32
            range (a ValueError).
        ValueError: Unsupported suffix, or (PNG only) ids above 65535, which a 16-bit PNG
            cannot hold.

    """
    path = Path(path)
    labels = as_label_map(labels, str(path), int32=True)
    top = int(labels.max()) if labels.size else 0
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise ValueError(f"{path}: write_label_map supports {LABEL_SUFFIXES}, not {suffix!r}")
    if suffix == ".png" and top > 65535:
        raise ValueError(
            f"{path}: label id {top} > 65535 does not fit a 16-bit PNG; use .tif or .npy"
        )
    with atomic_write(path) as tmp:  # readers never see half a map
        if suffix == ".png":
            Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")
        elif suffix in _TIFF:
            tifffile.imwrite(tmp, labels.astype(np.int32), compression="zlib")
        else:
            with open(tmp, "wb") as fh:  # np.save on a path would append ".npy"
                np.save(fh, labels.astype(np.int32))
    return path
