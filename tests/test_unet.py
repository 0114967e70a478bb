import pytest
import torch

from nucseg.errors import NucsegError
from nucseg.models import MODELS, build_model
from nucseg.models.unet import UNet


@pytest.mark.parametrize("upsampling", ["bilinear", "transpose"])
@pytest.mark.parametrize("size", [(32, 32), (37, 53), (5, 3), (1, 1)])
def test_unet_output_shape_for_any_size(size, upsampling):
    model = UNet(width=4, depth=2, upsampling=upsampling).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_unet_pads_bottom_right_and_crops_back():
    torch.manual_seed(0)
    model = UNet(width=4, depth=2).eval()
    x = torch.rand(1, 3, 37, 38)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="reflect")  # to multiples of 4
    with torch.no_grad():
        out = model(x)
        expected = model(padded)[..., :37, :38]
    assert out.shape == (1, 3, 37, 38)
    assert torch.allclose(out, expected, atol=1e-6)


def test_unet_rejects_bad_input_and_settings():
    with pytest.raises(ValueError, match="expects"):
        UNet(width=4, depth=2)(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="upsampling"):
        UNet(upsampling="nearest")
    with pytest.raises(ValueError, match="positive"):
        UNet(depth=0)


def test_unet_trains_in_channels_last():
    model = UNet(width=4, depth=2).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 24, 24).to(memory_format=torch.channels_last)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_build_model_by_name():
    assert "unet" in MODELS
    model = build_model("unet", width=4, depth=2)
    assert isinstance(model, UNet) and model.width == 4 and model.depth == 2
    assert model.build_spec == {"name": "unet", "kwargs": {"width": 4, "depth": 2}}


def test_build_model_errors():
    with pytest.raises(NucsegError, match="unknown model 'nope'.*unet"):
        build_model("nope")
    with pytest.raises(NucsegError, match="bad arguments"):
        build_model("unet", widht=4)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_bounds_what_an_output_pixel_sees(depth):
    torch.manual_seed(0)
    model = UNet(width=2, depth=depth).eval()
    for name, module in list(model.named_modules()):  # GroupNorm's statistics are image-wide
        if isinstance(module, torch.nn.GroupNorm):
            parent = model.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], torch.nn.Identity())
    side = 2 * model.receptive_field + 16
    x = torch.rand(1, 3, side, side, requires_grad=True)
    model(x)[0, :, side // 2, side // 2].sum().backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    seen = int(rows.max() - rows.min() + 1)
    assert seen <= model.receptive_field
    assert seen >= model.receptive_field - 2 ** (depth + 1)  # tight, up to pooling phase


def test_unet_batch_norm_option_and_its_build_spec():
    from nucseg.checkpoint import build_network, network_entry

    group = build_model("unet", width=4, depth=2)
    assert group.norm == "group" and "norm" not in group.build_spec["kwargs"]  # old specs hold
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in group.modules())
    torch.manual_seed(0)
    model = build_model("unet", width=4, depth=2, norm="batch")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm)]
    assert len(norms) == 2 * (1 + 2 * 2) and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
    assert model.build_spec == {"name": "unet", "kwargs": {"width": 4, "depth": 2, "norm": "batch"}}
    model(torch.rand(4, 3, 16, 16)).sum().backward()  # train mode: updates the running stats
    assert all(p.grad is not None for p in model.parameters())
    assert float(norms[0].running_var.sub(1).abs().max()) > 0
    rebuilt = build_network(network_entry(model)).eval()
    assert isinstance(rebuilt, UNet) and rebuilt.norm == "batch"
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=1e-6)
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(norm="instance")
    with pytest.raises(NucsegError, match="bad arguments"):
        build_model("unet", normalisation="batch")
