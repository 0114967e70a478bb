"""A small two-network adversarial method on the engine, for the engine's tests.

pix2pix in miniature: a generator maps 3-channel inputs to 3-channel targets, a conditional
discriminator sees (input, output) pairs, least-squares GAN loss plus L1, linear learning-rate
decay per epoch, and a history pool of generated images kept as extra checkpoint state.
Run as a script under torchrun for the DDP test: ``torchrun ... adversarial_toy.py OUT EPOCHS``.
"""

import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from nucseg.engine import EngineSettings, Method, run_distributed
from nucseg.models import build_model


class ToyGAN(Method):
    name = "toy-gan"
    monitor = "val_l1"
    monitor_mode = "min"
    scheduler_interval = "epoch"

    def __init__(self, rank=0, world=1, epochs=2, n=8, batch=2, pool_size=3):
        super().__init__()
        self.networks = {
            "G": build_model("unet", width=2, depth=1),
            "D": build_model("unet", in_channels=6, num_classes=1, width=2, depth=1),
        }
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.999))
            for name, net in self.networks.items()
        }
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1 - e / (epochs + 1))
            for name, opt in self.optimizers.items()
        }
        data = torch.Generator().manual_seed(1)
        x = torch.rand(n, 3, 16, 16, generator=data)
        self.data = TensorDataset(x, x.flip(-1))  # the "translation": a mirror image
        self.sampler = DistributedSampler(self.data, world, rank, shuffle=True, seed=0)
        self.batch, self.pool_size, self.pool = batch, pool_size, []

    def steps_per_epoch(self):
        return len(self.sampler) // self.batch

    def loader(self, epoch):
        self.sampler.set_epoch(epoch)
        return DataLoader(self.data, self.batch, sampler=self.sampler, drop_last=True)

    def _discriminate(self, x, y):
        return self.net("D")(torch.cat([x, y], dim=1))

    def optimize_discriminator(self, x, y, fake):
        self.set_requires_grad("D", True)
        # one call on real and fake together: DDP sees one forward per backward
        with self.autocast():
            both = self._discriminate(torch.cat([x, x]), torch.cat([y, fake.detach()]))
            real, fake_score = both.chunk(2)
            loss = 0.5 * (
                F.mse_loss(real, torch.ones_like(real))
                + F.mse_loss(fake_score, torch.zeros_like(fake_score))
            )
        self.backward(loss)
        self.step("D")
        return loss

    def optimize_generator(self, x, y, fake):
        self.set_requires_grad("D", False)  # frozen, so called unwrapped
        with self.autocast():
            score = self._discriminate(x, fake)
            loss = F.mse_loss(score, torch.ones_like(score)) + 10 * F.l1_loss(fake, y)
        self.backward(loss)
        self.step("G")
        self.set_requires_grad("D", True)
        return loss

    def train_step(self, batch):
        x, y = (self.to_device(t, image=True) for t in batch)
        with self.autocast():
            fake = self.net("G")(x)
        loss_d = self.optimize_discriminator(x, y, fake)
        loss_g = self.optimize_generator(x, y, fake)
        self.pool = ([*self.pool, fake.detach()[0].cpu()])[-self.pool_size :]
        return {"G": loss_g, "D": loss_d}

    def validate(self):
        x, y = self.data.tensors
        with torch.no_grad():
            return {"val_l1": float(F.l1_loss(self.networks["G"](x), y))}

    def extra_state(self):
        return {"pool": torch.stack(self.pool) if self.pool else torch.zeros(0)}

    def load_extra_state(self, state):
        self.pool = list(state["pool"])


def train_toy(out_dir, epochs=2, resume=False, until_epoch=None, max_minutes=None, **options):
    settings = EngineSettings(
        out_dir=out_dir, epochs=epochs, device="cpu", threads=1, max_minutes=max_minutes
    )
    return run_distributed(
        lambda rank, world: ToyGAN(rank, world, epochs=epochs),
        settings,
        resume,
        until_epoch,
        **options,
    )


if __name__ == "__main__":
    train_toy(sys.argv[1], epochs=int(sys.argv[2]))
