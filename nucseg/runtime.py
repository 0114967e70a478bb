"""What every torch code path shares: device choice, autocast, network input scaling, atomic writes.

One definition of each, so that training, tiled inference and the benchmarks agree:

- :func:`resolve_device`: ``"auto"`` is CUDA when present, else the CPU; asking for CUDA on a
  machine without it is an error everywhere (never a silent fall-back to the CPU).
- :func:`autocast` / :func:`amp_dtype`: mixed precision is bfloat16 where the device supports
  it, else float16 (which needs a ``GradScaler`` to train).
- :func:`cpu_bf16_native` / :func:`resolve_amp`: whether training autocasts: on CUDA, and on
  the CPU only where it computes bfloat16 in hardware (emulated bfloat16 is slower than fp32).
- :func:`image_to_tensor` / :func:`tensor_to_image`: uint8 RGB <-> network input, scaled to
  ``[0, 1]`` (segmentation networks) or ``[-1, 1]`` (GAN generators, which end in ``tanh``).
- :func:`atomic_write` / :func:`write_bytes_atomic`: a file appears whole or not at all.

torch is imported inside the functions that need it, so that floor-1 modules without torch
(``nucseg.data.annotations``) can use the atomic writers cheaply.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from nucseg.errors import NucsegError

if TYPE_CHECKING:
    import torch

ValueRange = Literal["unit", "symmetric"]
VALUE_RANGES: tuple[str, ...] = ("unit", "symmetric")

__all__ = [
    "VALUE_RANGES",
    "DeviceError",
    "InputError",
    "amp_dtype",
    "atomic_write",
    "autocast",
    "cpu_bf16_native",
    "image_to_tensor",
    "resolve_amp",
    "resolve_device",
    "tensor_to_image",
    "write_bytes_atomic",
]


class DeviceError(NucsegError, ValueError):
    """A device was requested that this machine does not have."""


class InputError(NucsegError, ValueError):
    """An array cannot be network input (shape, channels, dtype) or a setting is unknown."""


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for a name.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            or a ``torch.device``.
        local_rank: CUDA device index for a bare ``"cuda"`` (a process's rank on its node
            under ``torchrun``).

    Returns:
        The device; a bare CUDA device gets the index ``local_rank``.

    Raises:
        DeviceError: CUDA requested but not available, or an unknown device name.

    """
    import torch

    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(name)!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of a device: bfloat16 where supported, else float16 (CUDA only)."""
    import torch

    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision for a block (see :func:`amp_dtype`); a no-op when not ``enabled``."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


# x86 flags (AVX512-BF16, AMX-BF16) and the aarch64 feature (ARMv8.6 BF16) of /proc/cpuinfo.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=4)
def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """Feature flags of the first CPU in ``cpuinfo`` (x86 ``flags``, aarch64 ``Features``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:  # not Linux
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _mkldnn_bf16() -> bool:
    """Whether torch's oneDNN backend runs bfloat16 kernels on this CPU."""
    import torch

    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a build without the op
        return False


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware, so that CPU autocast pays off.

    True when /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (x86) or BF16 (aarch64) and torch's
    oneDNN backend runs bfloat16. oneDNN also accepts bfloat16 on plain AVX-512 by emulation,
    which is slower than float32: that is not native. Without /proc/cpuinfo (macOS, Windows) the
    answer is False.
    """
    return bool(_cpu_flags() & _NATIVE_BF16_FLAGS) and bool(_mkldnn_bf16())


def resolve_amp(device: torch.device, amp: bool | None) -> bool:
    """Whether training on ``device`` autocasts (to :func:`amp_dtype`).

    Args:
        device: The training device.
        amp: None = on for CUDA and for a CPU with native bfloat16 (:func:`cpu_bf16_native`);
            True = on for CUDA, and on the CPU where bfloat16 is native, else off with a
            ``RuntimeWarning``; False = off. Other devices never autocast.

    Returns:
        True to autocast.

    """
    if not (amp is None or amp) or device.type not in ("cuda", "cpu"):
        return False
    if device.type == "cuda":
        return True
    if cpu_bf16_native():
        return True
    if amp:
        warnings.warn(
            "amp=True: this CPU has no native bfloat16 (AVX512-BF16 / AMX-BF16 / ARM BF16), "
            "where autocast is slower than float32; training runs in float32",
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def image_to_tensor(image: np.ndarray, value_range: ValueRange = "unit") -> torch.Tensor:
    """Convert RGB image(s) to network input, channels first.

    uint8 values are divided by 255 (exactly as the training crops are); float input is taken
    to be in [0, 1] already. ``"symmetric"`` then maps [0, 1] to [-1, 1].

    Args:
        image: (H, W, 3) or a batch (N, H, W, 3), uint8 or float in [0, 1].
        value_range: ``"unit"`` ([0, 1]) or ``"symmetric"`` ([-1, 1]).

    Returns:
        (3, H, W) or (N, 3, H, W) float32 tensor. It is a channels-first view of a
        channels-last buffer, so ``.contiguous()`` copies it and
        ``.contiguous(memory_format=torch.channels_last)`` does not.

    Raises:
        InputError: wrong number of dimensions or channels, a non-numeric dtype, or an
            unknown ``value_range``.

    """
    import torch

    arr = np.asarray(image)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise InputError(f"image: expected (H, W, 3) or (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"image: expected uint8 or float in [0, 1], got dtype {arr.dtype}")
    if value_range not in VALUE_RANGES:
        raise InputError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    pixels = torch.from_numpy(np.ascontiguousarray(arr))
    pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    if value_range == "symmetric":
        pixels = pixels * 2.0 - 1.0
    return pixels.movedim(-1, -3)


def tensor_to_image(tensor: torch.Tensor, value_range: ValueRange = "unit") -> np.ndarray:
    """Inverse of :func:`image_to_tensor`: (3, H, W) or (N, 3, H, W) -> uint8 (..., H, W, 3).

    Values outside the range are clipped; rounding is to the nearest level.
    """
    import torch

    if value_range not in VALUE_RANGES:
        raise InputError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    values = tensor.detach().float().cpu()
    if value_range == "symmetric":
        values = (values + 1.0) / 2.0
    values = (values.clamp(0.0, 1.0) * 255.0).round().movedim(-3, -1)
    return values.to(torch.uint8).numpy()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync-ed and renamed onto ``path``.

    Readers see the old file or the new one, never a part. On an exception the temporary
    file is removed and ``path`` is untouched. Missing parent folders are created.

    Example::

        with atomic_write("out/history.csv") as tmp:
            frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 would make outputs private
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the Path."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
