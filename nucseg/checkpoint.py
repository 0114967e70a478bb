"""Training checkpoints: atomic save, safe load, network rebuild and compact weight export.

A checkpoint (``FORMAT`` 2) is a plain dict holding every named network of a training method::

    {"format": 2, "method": "unet" | "pix2pix" | ...,
     "networks": {name: {"spec": {"name", "kwargs"}, "state_dict"}},
     "inference_network": name | None (the one inference loads, e.g. averaged weights),
     "optimizers": {name: state}, "schedulers": {name: state}, "scaler": state,
     "epoch", "step", "rng": {"python", "numpy", "torch", "cuda"},
     "best": {"monitor", "value", "epoch"}, "history": [row, ...], "extra": {...},
     "postprocess": {PostprocessParams fields} | None, "meta": {...}}

Exported weights are the same format with one network and no optimiser state. Format 1 (one
network under ``"model"`` / ``"state_dict"``, as the committed U-Net weights of the first
releases) still loads: :func:`load_checkpoint` upgrades it in memory to a format-2 dict whose
only network is ``"net"``.

Everything in a checkpoint is loadable with ``torch.load(weights_only=True)`` (tensors,
numbers, strings, lists, tuples, dicts), so loading one never runs pickled code.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nucseg.errors import NucsegError
from nucseg.models import build_model
from nucseg.postprocess import PostprocessParams
from nucseg.runtime import atomic_write

FORMAT = 2
READABLE_FORMATS = (1, 2)
#: Largest exported weights file meant for committing to the repository.
MAX_EXPORT_MB = 20.0


class CheckpointError(NucsegError, ValueError):
    """A checkpoint file is missing, unreadable or not a nucseg checkpoint."""


def network_entry(net: nn.Module) -> dict[str, Any]:
    """``{"spec", "state_dict"}`` of a network made by ``nucseg.models.build_model``."""
    spec = getattr(net, "build_spec", None)
    if spec is None:
        raise CheckpointError(f"{type(net).__name__} was not built by nucseg.models.build_model")
    return {"spec": dict(spec), "state_dict": net.state_dict()}


def weights_checkpoint(
    networks: Mapping[str, nn.Module],
    method: str | None = None,
    postprocess: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An inference-only format-2 checkpoint of built networks (what :func:`load_model` reads)."""
    return {
        "format": FORMAT,
        "method": method,
        "networks": {name: network_entry(net) for name, net in networks.items()},
        "postprocess": dict(postprocess) if postprocess is not None else None,
        "meta": dict(meta or {}),
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically: a crash leaves the previous file intact.

    Args:
        checkpoint: Dict to save (see the module docstring).
        path: Destination file; its folder is created if needed.

    Returns:
        ``path`` as a Path.

    """
    with atomic_write(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def _upgrade(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A format-1 dict (one network) as format 2, with that network named ``"net"``."""
    old = dict(checkpoint)
    best = old.pop("best", None) or {}
    upgraded = {
        "format": FORMAT,
        "method": old.get("model", {}).get("name", "unet"),
        "networks": {"net": {"spec": old.pop("model"), "state_dict": old.pop("state_dict")}},
        "best": {"monitor": "val_aji", "value": best.get("val_aji"), "epoch": best.get("epoch")},
    }
    for key in ("optimizer", "scheduler"):
        if key in old:
            upgraded[f"{key}s"] = {"net": old.pop(key)}
    meta = dict(old.pop("meta", None) or {})
    if "total_steps" in meta:  # what a format-1 training run must share to be resumed
        meta.setdefault("plan", {"total_steps": meta["total_steps"]})
    return {**old, **upgraded, "meta": meta}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint or exported weights (format 1 or 2), as a format-2 dict.

    Args:
        path: Checkpoint file.
        map_location: Where tensors are loaded.

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        CheckpointError: Missing or unreadable file, or not a nucseg checkpoint.

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
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint)
    if found not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: not a nucseg checkpoint of format 1 or 2 ({found=})")
    needed = ("model", "state_dict") if found == 1 else ("networks",)
    for key in needed:
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    if found == 1:
        checkpoint = _upgrade(checkpoint)
    for name, entry in checkpoint["networks"].items():
        if not isinstance(entry, dict) or not {"spec", "state_dict"} <= set(entry):
            raise CheckpointError(f"{path}: network {name!r} lacks its spec or state_dict")
    return checkpoint


def network_names(checkpoint: Mapping[str, Any]) -> list[str]:
    """Names of the networks a (format-2) checkpoint holds, in stored order."""
    return list(checkpoint["networks"])


def inference_network(checkpoint: Mapping[str, Any]) -> str | None:
    """The network inference uses: the declared one, else the only one, else ``"net"``.

    ``"net"`` is what every segmentation method calls its network (a pix2pix checkpoint also
    holds its critic). None when the checkpoint does not say and neither rule applies.
    """
    names = network_names(checkpoint)
    declared = checkpoint.get("inference_network")
    if declared in names:
        return declared
    if len(names) == 1:
        return names[0]
    return "net" if "net" in names else None


def _pick(checkpoint: Mapping[str, Any], network: str | None, path: str | Path) -> str:
    names = network_names(checkpoint)
    if network is None:
        chosen = inference_network(checkpoint)
        if chosen is None:
            raise CheckpointError(f"{path}: holds networks {names}; name the one you want")
        return chosen
    if network not in names:
        raise CheckpointError(f"{path}: no network {network!r}; it holds {names}")
    return network


def build_network(entry: Mapping[str, Any], label: str = "network") -> nn.Module:
    """Rebuild one network from its checkpoint entry (half-precision weights become float32).

    Raises:
        CheckpointError: The spec names no known network, or the weights do not fit it.

    """
    spec = entry["spec"]
    try:
        net = build_model(spec["name"], **spec.get("kwargs", {}))
        net.load_state_dict(entry["state_dict"])  # copy_ casts fp16 -> fp32
    except (NucsegError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{label}: cannot rebuild model {spec!r}: {err}") from None
    return net


def load_model(
    path: str | Path, device: str | torch.device = "cpu", network: str | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild one network of a checkpoint or exported weights, ready for inference.

    Args:
        path: File written by :func:`save_checkpoint` or :func:`export_weights`.
        device: Device for the network.
        network: Which network (e.g. ``"generator"``); None = :func:`inference_network`.

    Returns:
        ``(model in eval mode on device, checkpoint dict)``; see :func:`postprocess_from`.

    Raises:
        CheckpointError: Unreadable file, an unknown or ambiguous network, or weights that do
            not fit the stored model.

    """
    checkpoint = load_checkpoint(path)
    name = _pick(checkpoint, network, path)
    model = build_network(checkpoint["networks"][name], f"{path} [{name}]")
    return model.to(device).eval(), checkpoint


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


def _exported_state(state_dict: Mapping[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    return {key: value.half() if half and value.is_floating_point() else value
            for key, value in state_dict.items()}  # fmt: skip


def export_weights(
    checkpoint_path: str | Path,
    out_path: str | Path,
    network: str | None = None,
    half: bool = True,
    max_mb: float | None = MAX_EXPORT_MB,
    postprocess: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a compact inference-only copy of one network of a checkpoint (for committing).

    The result is a format-2 checkpoint with that one network (floating tensors in float16
    when ``half``), ``postprocess`` and ``meta`` (plus ``best``, the method and the source file
    name inside ``meta``); :func:`load_model` reads it.

    Args:
        checkpoint_path: Training checkpoint.
        out_path: Destination file (written atomically).
        network: Which network to export; None = :func:`inference_network`.
        half: Store floating-point tensors as float16 (halves the size).
        max_mb: Refuse (and remove) an export larger than this many MB; None disables.
        postprocess: ``PostprocessParams`` fields tuned after training (on validation images),
            replacing the checkpoint's own.
        meta: Extra facts for the model card (profile, timings, scores), merged into ``meta``.

    Returns:
        ``out_path`` as a Path.

    Raises:
        CheckpointError: Unreadable checkpoint, unknown network, or the export exceeds
            ``max_mb``.

    """
    checkpoint = load_checkpoint(checkpoint_path)
    name = _pick(checkpoint, network, checkpoint_path)
    entry = checkpoint["networks"][name]
    state = _exported_state(entry["state_dict"], half)
    facts = dict(checkpoint.get("meta") or {})
    facts.update(best=checkpoint.get("best"), exported_from=Path(checkpoint_path).name)
    facts.update(method=checkpoint.get("method"), network=name)
    facts.update(meta or {})
    exported = {
        "format": FORMAT,
        "method": checkpoint.get("method"),
        "networks": {name: {"spec": entry["spec"], "state_dict": state}},
        "postprocess": dict(postprocess) if postprocess else checkpoint.get("postprocess"),
        "meta": facts,
    }
    out = save_checkpoint(exported, out_path)
    size_mb = out.stat().st_size / 1e6
    if max_mb is not None and size_mb > max_mb:
        out.unlink()
        raise CheckpointError(f"{out}: exported weights are {size_mb:.1f} MB > {max_mb} MB")
    return out


def exports_same_weights(
    checkpoint_path: str | Path,
    published_path: str | Path,
    network: str | None = None,
    half: bool = True,
) -> bool:
    """Whether ``export_weights(checkpoint_path, ...)`` would publish the tensors already there.

    A test scoring of re-exported, unchanged weights is logged as such in the model card, not as
    a new model. False when nothing is published yet.
    """
    if not Path(published_path).is_file():
        return False
    checkpoint, published = load_checkpoint(checkpoint_path), load_checkpoint(published_path)
    name = _pick(checkpoint, network, checkpoint_path)
    ours = _exported_state(checkpoint["networks"][name]["state_dict"], half)
    theirs = (published["networks"].get(name) or {}).get("state_dict") or {}
    return ours.keys() == theirs.keys() and all(
        ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours
    )
