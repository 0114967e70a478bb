import pytest
import torch
from adversarial_toy import ToyGAN

from nucseg.engine import Engine, EngineError, EngineSettings
from nucseg.method import CHANGEABLE_ON_RESUME, Method


def test_frozen_discriminator_keeps_its_weights():
    method = ToyGAN()
    Engine(method, EngineSettings(out_dir="unused", device="cpu"))
    x, y = next(iter(method.loader(0)))
    with torch.no_grad():
        fake = method.networks["G"](x)
    fake.requires_grad_(True)
    before = {k: v.clone() for k, v in method.networks["D"].state_dict().items()}
    g_before = [p.clone() for p in method.networks["G"].parameters()]
    method.optimize_generator(x, y, method.networks["G"](x))
    for key, value in method.networks["D"].state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in method.networks["D"].parameters())
    assert any(
        not torch.equal(p, q)
        for p, q in zip(method.networks["G"].parameters(), g_before, strict=True)
    )
    # the discriminator step, by contrast, changes it
    method.optimize_discriminator(x, y, fake)
    changed = method.networks["D"].state_dict()
    assert any(not torch.equal(changed[k], before[k]) for k in before)


def test_net_is_bare_while_frozen_and_settings_are_checked(tmp_path):
    method = ToyGAN()
    Engine(method, EngineSettings(out_dir=tmp_path, device="cpu"))
    assert method.net("D") is method.networks["D"]  # one process: never wrapped
    with pytest.raises(EngineError, match="max_minutes"):
        Engine(ToyGAN(), EngineSettings(out_dir=tmp_path, max_minutes=-1, device="cpu"))
    with pytest.raises(EngineError, match="not attached"):
        Method().backward(torch.zeros(()))


def test_only_settings_that_leave_data_and_optimisation_alone_may_change_on_resume():
    assert "max_minutes" in CHANGEABLE_ON_RESUME
    assert not {"lr", "epochs", "seed", "batch_size", "crop_size"} & set(CHANGEABLE_ON_RESUME)
