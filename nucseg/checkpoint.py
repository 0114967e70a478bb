"""Training checkpoints: atomic save, safe load, model rebuild and compact weight export.

A checkpoint is a plain dict (``FORMAT`` 1)::

    {"format": 1, "model": {"name", "kwargs"}, "state_dict", "optimizer", "scheduler", "scaler",
     "epoch", "step", "rng": {"python", "numpy", "torch", "cuda"}, "best": {"val_aji", "epoch"},
     "history": [row, ...], "postprocess": {PostprocessParams fields} | None, "meta": {...}}

Everything in it is loadable with ``torch.load(weights_only=True)`` (tensors, numbers, strings,
lists, tuples, dicts), so loading a checkpoint never runs pickled code. ``meta`` must stay
within those types (strings, numbers, lists, dicts).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nucseg.errors import NucsegError
from nucseg.models import build_model
from nucseg.postprocess import PostprocessParams

FORMAT = 1
#: Largest exported weights file meant for committing to the repository.
MAX_EXPORT_MB = 20.0


class CheckpointError(NucsegError, ValueError):
    """A checkpoint file is missing, unreadable or not a nucseg checkpoint."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically: a crash leaves the previous file intact.

    The dict is written to a temporary file in the same folder, flushed and fsync-ed, then
    renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows).

    Args:
        checkpoint: Dict to save (see the module docstring).
        path: Destination file; its folder is created if needed.

    Returns:
        ``path`` as a Path.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (or exported weights) written by this module.

    Args:
        path: Checkpoint file.
        map_location: Where tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: Missing or unreadable file, or not a format-1 nucseg checkpoint.

    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
        raise CheckpointError(f"{path}: not a nucseg checkpoint of format {FORMAT} ({found=})")
    for key in ("model", "state_dict"):
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return checkpoint


def capture_rng() -> dict[str, Any]:
    """Snapshot the python, numpy, torch (and CUDA, if initialised) random generators."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    state["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`capture_rng` (CUDA only if the device count fits)."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = dict(state["numpy"])
    inner = dict(numpy_state["state"])
    inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
    numpy_state["state"] = inner
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def postprocess_to_dict(params: PostprocessParams | None) -> dict[str, Any] | None:
    """PostprocessParams -> plain dict for a checkpoint (None stays None)."""
    return None if params is None else dataclasses.asdict(params)


def postprocess_from(checkpoint: dict[str, Any]) -> PostprocessParams | None:
    """The post-processing settings stored in a checkpoint, or None."""
    stored = checkpoint.get("postprocess")
    return None if stored is None else PostprocessParams(**stored)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DDP / DataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a network from a checkpoint or exported weights, ready for inference.

    Half-precision exported weights are loaded back into the float32 network.

    Args:
        path: File written by :func:`save_checkpoint` or :func:`export_weights`.
        device: Device for the network.

    Returns:
        ``(model in eval mode on device, checkpoint dict)``; see :func:`postprocess_from`.

    Raises:
        CheckpointError: Unreadable file, or weights that do not fit the stored model.

    """
    checkpoint = load_checkpoint(path)
    spec = checkpoint["model"]
    try:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
        model.load_state_dict(checkpoint["state_dict"])  # copy_ casts fp16 -> fp32
    except (NucsegError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot rebuild model {spec!r}: {err}") from None
    return model.to(device).eval(), checkpoint


def export_weights(
    checkpoint_path: str | Path,
    out_path: str | Path,
    half: bool = True,
    max_mb: float | None = MAX_EXPORT_MB,
    postprocess: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a compact inference-only copy of a checkpoint (for committing weights).

    Keeps ``format``, ``model``, ``state_dict`` (floating tensors in float16 when ``half``),
    ``postprocess`` and ``meta`` (plus ``best`` and the source file name inside ``meta``).

    Args:
        checkpoint_path: Training checkpoint.
        out_path: Destination file (written atomically).
        half: Store floating-point tensors as float16 (halves the size).
        max_mb: Refuse (and remove) an export larger than this many MB; None disables.
        postprocess: ``PostprocessParams`` fields tuned after training (on validation images),
            replacing the checkpoint's own.
        meta: Extra facts for the model card (profile, timings, scores), merged into ``meta``.

    Returns:
        ``out_path`` as a Path.

    Raises:
        CheckpointError: Unreadable checkpoint, or the export exceeds ``max_mb``.

    """
    checkpoint = load_checkpoint(checkpoint_path)
    state = {
        key: value.half() if half and value.is_floating_point() else value
        for key, value in checkpoint["state_dict"].items()
    }
    facts = dict(checkpoint.get("meta") or {})
    facts.update(best=checkpoint.get("best"), exported_from=Path(checkpoint_path).name)
    facts.update(meta or {})
    exported = {
        "format": FORMAT,
        "model": checkpoint["model"],
        "state_dict": state,
        "postprocess": dict(postprocess) if postprocess else checkpoint.get("postprocess"),
        "meta": facts,
    }
    out = save_checkpoint(exported, out_path)
    size_mb = out.stat().st_size / 1e6
    if max_mb is not None and size_mb > max_mb:
        out.unlink()
        raise CheckpointError(f"{out}: exported weights are {size_mb:.1f} MB > {max_mb} MB")
    return out
