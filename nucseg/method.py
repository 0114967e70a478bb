"""What a training method declares for the engine (``nucseg.engine``): the :class:`Method` base.

A method owns its named networks, optimisers and schedulers, its data and the algorithm of one
step; the engine runs it. The helpers a method calls (``net``, ``set_requires_grad``,
``autocast``, ``backward``, ``step``, ``to_device``) route through the engine it is attached to,
so the same ``train_step`` runs on the CPU, CUDA with AMP, and DDP.

A method plugs in like this::

    class MyGAN(Method):
        name, monitor = "mygan", None              # no validation score: best = last
        def __init__(self, ...):
            super().__init__()
            self.networks = {"G": build_model("unet", ...), "D": build_model("patchgan", ...)}
            self.optimizers = {"G": Adam(...), "D": Adam(...)}
        def loader(self, epoch): ...               # batches of that epoch, deterministic
        def train_step(self, batch):
            fake = self.net("G")(batch.image)
            self.set_requires_grad("D", False)      # frozen: called unwrapped under DDP
            loss_g = ...; self.backward(loss_g); self.step("G")
            self.set_requires_grad("D", True)
            loss_d = ...; self.backward(loss_d); self.step("D")
            return {"G": loss_g, "D": loss_d}

    nucseg.engine.Engine(MyGAN(...), EngineSettings(out_dir="runs/x", epochs=10)).run()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nucseg.errors import EngineError
from nucseg.runtime import autocast

if TYPE_CHECKING:
    from nucseg.engine import Engine

#: Settings that may differ between a checkpoint and the run resuming it: they change neither
#: the data nor the optimisation (the data's content is compared by fingerprint instead).
CHANGEABLE_ON_RESUME = (
    "max_minutes", "out_dir", "data_dir", "extra_pairs_dir", "device", "num_workers", "threads",
)  # fmt: skip


class Method:
    """What one training method declares; subclasses fill the dicts in ``__init__``.

    Attributes:
        name: Method name, stored in checkpoints.
        monitor: History column that selects ``best.pt`` (None: best is the last epoch).
        monitor_mode: ``"max"`` or ``"min"``.
        scheduler_interval: Schedulers step after every ``"step"`` or every ``"epoch"``.
        inference_network: The network that inference loads from this method's checkpoints
            (stored in them; ``nucseg.checkpoint.load_model``); None = the only one, or ``"net"``.
        networks: Named networks, built with ``nucseg.models.build_model``.
        optimizers: Named optimisers.
        schedulers: Named learning-rate schedulers.

    """

    name = "method"
    monitor: str | None = "val_aji"
    monitor_mode = "max"
    scheduler_interval = "step"
    inference_network: str | None = None

    def __init__(self) -> None:
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.engine: Engine | None = None
        self._wrapped: dict[str, nn.Module] = {}

    # --- what a method implements -------------------------------------------------------
    def loader(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch; the same epoch must give the same batches (for resume)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Batches per epoch on this process."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step of every network; returns the loss parts (scalar tensors)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics, e.g. ``{"val_aji": 0.6}``; empty when there is nothing to score."""
        return {}

    def plan(self) -> dict[str, Any]:
        """Facts a resumed run must share with the checkpoint.

        For example the planned steps, the settings (except :data:`CHANGEABLE_ON_RESUME`) and
        a fingerprint of the data, under flat names so that a refused resume names the fields
        that differ.
        """
        return {}

    def extra_state(self) -> dict[str, Any]:
        """More state to checkpoint (e.g. image pools), in ``torch.load``-safe types."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def meta(self) -> dict[str, Any]:
        """Facts stored in every checkpoint's ``meta`` (e.g. the config)."""
        return {}

    def postprocess_state(self) -> dict[str, Any] | None:
        """Post-processing settings that inference should use with these weights, if any."""
        return None

    # --- what the engine gives a method -------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Move the networks to the engine's device and wrap the trainable ones for DDP."""
        self.engine = engine
        for name, net in self.networks.items():
            net.to(engine.device, memory_format=engine.memory_format)
            trainable = any(p.requires_grad for p in net.parameters())
            if engine.world > 1 and trainable:
                ids = [engine.device.index] if engine.device.type == "cuda" else None
                self._wrapped[name] = DistributedDataParallel(net, ids)

    def net(self, name: str) -> nn.Module:
        """The network to call: DDP-wrapped while it trains, bare while it is frozen.

        A frozen network called through DDP would leave its gradient reduction waiting.
        """
        bare = self.networks[name]
        wrapped = self._wrapped.get(name)
        if wrapped is None or not any(p.requires_grad for p in bare.parameters()):
            return bare
        return wrapped

    def set_requires_grad(self, names: str | Sequence[str], flag: bool) -> None:
        """Freeze (False) or unfreeze (True) the named networks."""
        for name in [names] if isinstance(names, str) else names:
            for p in self.networks[name].parameters():
                p.requires_grad_(flag)

    def autocast(self) -> Any:
        """Mixed precision for the forward pass, as the engine decided."""
        return autocast(self._engine().device, self._engine().amp)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate a loss through the engine's gradient scaler."""
        self._engine().scaler.scale(loss).backward()

    def step(self, optimizer: str) -> None:
        """Update with the named optimiser (scaled), then clear its gradients."""
        opt = self.optimizers[optimizer]
        self._engine().scaler.step(opt)
        opt.zero_grad(set_to_none=True)

    def to_device(self, tensor: torch.Tensor, image: bool = False) -> torch.Tensor:
        """Move a batch tensor to the device; images (N, C, H, W) also to the memory format."""
        engine = self._engine()
        if image:
            return tensor.to(engine.device, non_blocking=True, memory_format=engine.memory_format)
        return tensor.to(engine.device, non_blocking=True)

    def _engine(self) -> Engine:
        if self.engine is None:
            raise EngineError(f"method {self.name!r} is not attached to an engine")
        return self.engine
