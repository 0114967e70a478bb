"""GAN networks: ResnetGenerator, PatchDiscriminator, init_weights, registry and checkpoints."""

import io

import pytest
import torch
from torch import nn

from nucseg.checkpoint import (
    build_network,
    load_model,
    network_entry,
    save_checkpoint,
    weights_checkpoint,
)
from nucseg.errors import NucsegError
from nucseg.models import MODELS, build_model
from nucseg.models.gan import PatchDiscriminator, ResnetGenerator, init_weights


def _n_params(net):
    return sum(p.numel() for p in net.parameters())


# --- ResnetGenerator ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("upsampling", ["transpose", "nearest"])
def test_generator_keeps_height_and_width(size, upsampling):
    net = ResnetGenerator(in_channels=2, out_channels=3, width=4, n_blocks=2, upsampling=upsampling)
    with torch.no_grad():
        out = net(torch.rand(2, 2, size, size))
    assert out.shape == (2, 3, size, size)
    assert torch.isfinite(out).all()
    with torch.no_grad():  # non-square, and another number of down-samplings
        out = ResnetGenerator(width=4, n_blocks=1, n_downsampling=3)(torch.rand(1, 3, 32, 48))
    assert out.shape == (1, 3, 32, 48)


def test_generator_output_is_tanh_bounded():
    torch.manual_seed(0)
    net = ResnetGenerator(width=4, n_blocks=1)
    with torch.no_grad():
        net.head[1].weight.mul_(500)  # huge pre-activations: only the tanh keeps them in range
        out = net(torch.randn(2, 3, 32, 32) * 10)
    assert out.min() >= -1 and out.max() <= 1
    assert out.min() < -0.999 and out.max() > 0.999  # saturated at both ends, so tanh is last
    assert isinstance(net.head[-1], nn.Tanh)


@pytest.mark.parametrize("size", [(63, 64), (64, 30), (4, 4), (2, 8)])
def test_generator_rejects_sizes_it_cannot_invert(size):
    net = ResnetGenerator(width=4, n_blocks=1)
    with pytest.raises(ValueError, match=r"multiples of 4 and at least 8.*crop or pad"):
        net(torch.rand(1, 3, *size))


def test_generator_rejects_bad_input_and_settings():
    with pytest.raises(ValueError, match="expects"):
        ResnetGenerator(width=4, n_blocks=1)(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="norm must be one of"):
        ResnetGenerator(norm="group")
    with pytest.raises(ValueError, match="upsampling"):
        ResnetGenerator(upsampling="bilinear")
    with pytest.raises(ValueError, match="positive"):
        ResnetGenerator(width=0)
    with pytest.raises(NucsegError, match="bad arguments"):
        build_model("resnet_generator", blocks=3)


def test_generator_structure_follows_settings():
    net = ResnetGenerator(width=8, n_blocks=3, dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 1 + 2 + 2 * 3 + 2
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in net.modules()) == 2
    # biases only where no normalisation follows: here just the output convolution
    assert [n for n, _ in net.named_parameters() if n.endswith("bias") and "head" not in n] == [
        n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) for n in [n + ".bias"]
    ]
    # nearest + conv has the transposed convolution's parameter count
    nearest = ResnetGenerator(width=8, n_blocks=3, upsampling="nearest")
    assert _n_params(nearest) == _n_params(ResnetGenerator(width=8, n_blocks=3))
    for norm, kind in (("batch", nn.BatchNorm2d), ("none", None)):
        net = ResnetGenerator(width=4, n_blocks=1, norm=norm)
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d)]
        assert all(isinstance(m, kind) for m in norms) and bool(norms) == (kind is not None)
        assert net(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_generator_channels_last_backward():
    net = ResnetGenerator(width=4, n_blocks=1).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 16, 16).to(memory_format=torch.channels_last)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


# --- PatchDiscriminator -------------------------------------------------------------------
def test_patchgan_70x70_gives_30x30_map_for_256():
    net = build_model("patchgan", width=4)
    assert isinstance(net, PatchDiscriminator) and net.n_layers == 3
    assert net.receptive_field == 70 and net.output_size(256) == 30
    with torch.no_grad():
        out = net(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 1, 30, 30)
    assert out.min() < 0 < out.max()  # raw logits: no sigmoid
    # the first convolution has no normalisation after it
    assert isinstance(net.layers[1], nn.LeakyReLU) and net.layers[1].negative_slope == 0.2
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 5
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 1]
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 3


@pytest.mark.parametrize(("n_layers", "field"), [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field_is_what_one_score_sees(n_layers, field):
    torch.manual_seed(0)
    # no normalisation: instance-norm statistics span the whole image
    net = PatchDiscriminator(width=2, n_layers=n_layers, norm="none").double()
    assert net.receptive_field == field
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    out = net(x)
    centre = out.shape[-1] // 2
    out[0, 0, centre, centre].backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(1)[0], as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == field
    assert int(cols.max() - cols.min()) + 1 == field
    assert rows.min() > 0 and rows.max() < 127  # the window lies inside: no padding involved
    assert len(rows) == field * field  # and every pixel of it matters


def test_patchgan_spectral_norm_round_trips_state_dict():
    torch.manual_seed(0)
    net = build_model("patchgan", width=4, spectral_norm=True)
    assert net.norm == "none"
    assert not any(isinstance(m, nn.InstanceNorm2d | nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 3, 64, 64)
    for _ in range(3):  # training steps update the singular-vector estimates (buffers)
        net(x).mean().backward()
    convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        assert nn.utils.parametrize.is_parametrized(conv, "weight")
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1) < 0.05  # largest singular value normalised to ~1
    state = net.state_dict()
    assert any(key.endswith("._u") for key in state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = build_model("patchgan", width=4, spectral_norm=True)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), net.eval()(x))
    with pytest.raises(RuntimeError):  # plain weights do not fit a spectrally normalised net
        build_model("patchgan", width=4).load_state_dict(state)


def test_patchgan_rejects_bad_input_and_settings():
    net = PatchDiscriminator(width=2)
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(1, 6, 64, 64))
    with pytest.raises(ValueError, match="no score for a 16x64 input"):
        net(torch.rand(1, 3, 16, 64))
    assert net(torch.rand(1, 3, 24, 24)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="positive"):
        PatchDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchDiscriminator(norm="layer")


def test_patchgan_conditional_and_batch_norm_variants():
    net = PatchDiscriminator(in_channels=6, width=4, norm="batch")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3
    out = net(torch.rand(2, 6, 64, 64).to(memory_format=torch.channels_last))
    out.mean().backward()
    assert out.shape == (2, 1, 6, 6)
    assert all(p.grad is not None for p in net.parameters())


# --- init, registry, checkpoints ----------------------------------------------------------
def test_init_weights_statistics_and_determinism():
    torch.manual_seed(3)
    a = ResnetGenerator(width=16, n_blocks=2, norm="batch")
    torch.manual_seed(3)
    b = ResnetGenerator(width=16, n_blocks=2, norm="batch")
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
    conv_weights = torch.cat(
        [m.weight.flatten() for m in a.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    )
    conv_weights = conv_weights.detach()
    assert abs(float(conv_weights.mean())) < 2e-3
    assert abs(float(conv_weights.std()) - 0.02) < 1e-3
    norm_weights = torch.cat(
        [m.weight.detach() for m in a.modules() if isinstance(m, nn.BatchNorm2d)]
    )
    assert abs(float(norm_weights.mean()) - 1) < 0.01
    assert 0.01 < float(norm_weights.std()) < 0.03
    for name, p in a.named_parameters():
        if name.endswith("bias"):
            assert not p.any(), name
    # the helper itself, with another gain; also on a spectrally normalised layer's raw weight
    disc = PatchDiscriminator(width=8, spectral_norm=True)
    assert init_weights(disc, gain=0.5) is disc
    raw = disc.layers[2].parametrizations.weight.original.detach()
    assert 0.4 < float(raw.std()) < 0.6


def test_registered_by_name_with_build_spec():
    assert MODELS["resnet_generator"] is ResnetGenerator
    assert MODELS["patchgan"] is PatchDiscriminator
    net = build_model("resnet_generator", width=4, n_blocks=2, upsampling="nearest")
    assert isinstance(net, ResnetGenerator) and net.upsampling == "nearest"
    spec = {
        "name": "resnet_generator",
        "kwargs": {"width": 4, "n_blocks": 2, "upsampling": "nearest"},
    }
    assert net.build_spec == spec


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("resnet_generator", {"in_channels": 2, "width": 4, "n_blocks": 1}, (1, 2, 32, 32)),
        ("patchgan", {"in_channels": 6, "width": 4, "spectral_norm": True}, (1, 6, 64, 64)),
        ("patchgan", {"width": 4, "n_layers": 2}, (1, 3, 64, 64)),
    ],
)
def test_checkpoint_round_trip(tmp_path, name, kwargs, shape):
    torch.manual_seed(1)
    net = build_model(name, **kwargs)
    x = torch.rand(shape)
    net(x).mean().backward()  # train-mode forward: spectral norm buffers move on
    rebuilt = build_network(network_entry(net))
    assert type(rebuilt) is type(net) and rebuilt.build_spec == net.build_spec
    with torch.no_grad():
        expected = net.eval()(x)
        assert torch.equal(rebuilt.eval()(x), expected)
    # through a file read with weights_only=True, as committed weights are
    path = save_checkpoint(weights_checkpoint({"net": net}, method="test"), tmp_path / "w.pt")
    loaded, _ = load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
