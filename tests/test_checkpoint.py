import random

import numpy as np
import pytest
import torch

from nucseg import checkpoint as ckpt
from nucseg.models import build_model
from nucseg.postprocess import PostprocessParams


def _checkpoint(seed=0, width=4):
    torch.manual_seed(seed)
    model = build_model("unet", width=width, depth=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    model(torch.rand(1, 3, 16, 16)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, {
        "format": ckpt.FORMAT,
        "method": "unet",
        "networks": {"net": ckpt.network_entry(model)},
        "optimizers": {"net": optimizer.state_dict()},
        "schedulers": {"net": scheduler.state_dict()},
        "epoch": 3,
        "step": 12,
        "rng": ckpt.capture_rng(),
        "best": {"monitor": "val_aji", "value": 0.5, "epoch": 2},
        "history": [{"epoch": 1, "loss": 1.0, "val_aji": None}],
        "postprocess": ckpt.postprocess_to_dict(PostprocessParams(min_size=12)),
        "meta": {"config": {"lr": 1e-3, "out_dir": "runs/x"}},
    }


def test_round_trip(tmp_path):
    model, state = _checkpoint()
    path = ckpt.save_checkpoint(state, tmp_path / "sub" / "last.pt")
    loaded = ckpt.load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["step"] == 12 and loaded["history"] == state["history"]
    assert loaded["schedulers"] == state["schedulers"]
    for key, value in state["networks"]["net"]["state_dict"].items():
        assert torch.equal(loaded["networks"]["net"]["state_dict"][key], value)
    assert ckpt.postprocess_from(loaded) == PostprocessParams(min_size=12)
    rebuilt, _ = ckpt.load_model(path)
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))
    assert not rebuilt.training
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left


def test_rng_round_trip():
    state = ckpt.capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    _, old = _checkpoint(seed=0)
    ckpt.save_checkpoint(old, path)
    before = path.read_bytes()

    def crash(obj, target):
        with open(target, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(_checkpoint(seed=1)[1], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert ckpt.load_checkpoint(path)["epoch"] == 3


def test_load_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="junk.pt: cannot read"):
        ckpt.load_checkpoint(junk)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a nucseg checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")
    _, state = _checkpoint()
    state["networks"]["net"]["spec"]["kwargs"]["width"] = 8  # weights no longer fit
    ckpt.save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(ckpt.CheckpointError, match="cannot rebuild"):
        ckpt.load_model(tmp_path / "bad.pt")
    with pytest.raises(ckpt.CheckpointError, match="no network 'D'"):
        ckpt.load_model(tmp_path / "bad.pt", network="D")
    del state["networks"]
    ckpt.save_checkpoint(state, tmp_path / "empty.pt")
    with pytest.raises(ckpt.CheckpointError, match="lacks 'networks'"):
        ckpt.load_checkpoint(tmp_path / "empty.pt")


def test_export_weights_half_precision(tmp_path):
    model, state = _checkpoint()
    source = ckpt.save_checkpoint(state, tmp_path / "best.pt")
    out = ckpt.export_weights(source, tmp_path / "unet.pt")
    exported = ckpt.load_checkpoint(out)
    assert set(exported) == {"format", "method", "networks", "postprocess", "meta"}
    weights = exported["networks"]["net"]["state_dict"]
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    assert exported["meta"]["best"] == {"monitor": "val_aji", "value": 0.5, "epoch": 2}
    assert out.stat().st_size < source.stat().st_size / 2
    rebuilt, _ = ckpt.load_model(out)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x), atol=5e-2)
    with pytest.raises(ckpt.CheckpointError, match="MB"):
        ckpt.export_weights(source, tmp_path / "tiny.pt", max_mb=0.001)
    assert not (tmp_path / "tiny.pt").exists()


def test_a_re_export_of_unchanged_weights_is_told_from_new_weights(tmp_path):
    _, state = _checkpoint()
    source = ckpt.save_checkpoint(state, tmp_path / "best.pt")
    published = tmp_path / "unet.pt"
    assert not ckpt.exports_same_weights(source, published)  # nothing published yet
    ckpt.export_weights(source, published, meta={"note": "other facts do not matter"})
    assert ckpt.exports_same_weights(source, published)
    weights = state["networks"]["net"]["state_dict"]
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = weights[first] + 1e-2  # a change that survives float16
    retrained = ckpt.save_checkpoint(state, tmp_path / "retrained.pt")
    assert not ckpt.exports_same_weights(retrained, published)


def test_export_weights_takes_tuned_postprocess_and_meta(tmp_path):
    from nucseg.checkpoint import export_weights, load_checkpoint, save_checkpoint
    from nucseg.models import build_model

    model = build_model("unet", width=4, depth=2)
    source = save_checkpoint(
        _format_1(model),
        tmp_path / "best.pt",
    )
    out = export_weights(
        source, tmp_path / "w.pt", postprocess={"min_size": 10}, meta={"test_aji": 0.7}
    )
    exported = load_checkpoint(out)
    assert exported["postprocess"] == {"min_size": 10}
    assert exported["meta"]["test_aji"] == 0.7 and exported["meta"]["profile"] == "x"


def _two_networks():
    torch.manual_seed(0)
    return {
        "G": build_model("unet", width=2, depth=1),
        "D": build_model("unet", in_channels=6, num_classes=1, width=2, depth=1),
    }


def test_several_networks_load_and_export_by_name(tmp_path):
    nets = _two_networks()
    path = ckpt.save_checkpoint(ckpt.weights_checkpoint(nets, method="gan"), tmp_path / "g.pt")
    assert ckpt.network_names(ckpt.load_checkpoint(path)) == ["G", "D"]
    with pytest.raises(ckpt.CheckpointError, match="name the one you want"):
        ckpt.load_model(path)
    disc, _ = ckpt.load_model(path, network="D")
    x = torch.rand(1, 6, 8, 8)
    with torch.no_grad():
        assert torch.equal(disc(x), nets["D"].eval()(x))
    out = ckpt.export_weights(path, tmp_path / "generator.pt", network="G", half=False)
    exported = ckpt.load_checkpoint(out)
    assert ckpt.network_names(exported) == ["G"] and exported["meta"]["network"] == "G"
    generator, _ = ckpt.load_model(out)  # the only network: no name needed
    y = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(generator(y), nets["G"].eval()(y))


def test_inference_takes_the_declared_network_else_the_only_one_else_net(tmp_path):
    nets = _two_networks()
    declared = ckpt.weights_checkpoint(nets, method="gan")
    declared["inference_network"] = "D"
    path = ckpt.save_checkpoint(declared, tmp_path / "declared.pt")
    assert ckpt.inference_network(ckpt.load_checkpoint(path)) == "D"
    exported = ckpt.load_checkpoint(ckpt.export_weights(path, tmp_path / "e.pt"))
    assert ckpt.network_names(exported) == ["D"]
    with_net = ckpt.weights_checkpoint({"net": nets["G"], "D": nets["D"]})  # pix2pix's layout
    assert ckpt.inference_network(with_net) == "net"
    assert ckpt.inference_network(ckpt.weights_checkpoint({"G": nets["G"]})) == "G"
    assert ckpt.inference_network(ckpt.weights_checkpoint(nets)) is None


def _format_1(model):
    """A checkpoint as format 1 wrote it: one network under "model" / "state_dict"."""
    return {
        "format": 1,
        "model": {"name": "unet", "kwargs": {"width": 4, "depth": 2}},
        "state_dict": model.state_dict(),
        "postprocess": {"min_size": 30},
        "meta": {"profile": "x"},
        "best": {"val_aji": 0.5, "epoch": 3},
    }


def test_format_1_files_still_load(tmp_path):
    model = build_model("unet", width=4, depth=2)
    torch.save(_format_1(model), tmp_path / "v1.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "v1.pt")
    assert loaded["format"] == 2 and ckpt.network_names(loaded) == ["net"]
    assert "plan" not in loaded["meta"]  # an export: nothing to resume
    assert loaded["best"] == {"monitor": "val_aji", "value": 0.5, "epoch": 3}
    rebuilt, _ = ckpt.load_model(tmp_path / "v1.pt")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_committed_unet_weights_still_load():
    from nucseg.infer import DEFAULT_UNET_WEIGHTS

    if not DEFAULT_UNET_WEIGHTS.is_file():
        pytest.skip("no committed U-Net weights")
    model, state = ckpt.load_model(DEFAULT_UNET_WEIGHTS)
    assert ckpt.postprocess_from(state) is not None
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
