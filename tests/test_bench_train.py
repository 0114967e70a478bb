"""Smoke tests of the training benchmark (output format and wiring, no timing assertions)."""

from __future__ import annotations

import re

import pytest
import torch

from nucseg import _bench_train, bench, runtime

_SMALL = ["train", "--steps", "2", "--warmup", "1", "--width", "4", "--depth", "2",
          "--batch", "2", "--crop", "64", "--val-size", "96", "--threads", "1"]  # fmt: skip
_ROW = r" +\d+\.\d{3}" * 5 + r" +\d+\.\d{2} +\d+\.\d{2}  n/a at these settings$"


def test_train_bench_without_native_bf16_runs_fp32_only(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    assert bench.main(_SMALL) == 0
    out = capsys.readouterr().out
    assert "bf16 on this CPU: NOT native" in out
    assert re.search(r"^fp32 group" + _ROW, out, re.M)
    assert re.search(r"^fp32 batch" + _ROW, out, re.M)
    assert re.search(r"^bf16 group += fp32 group \(bf16 not native", out, re.M)
    assert not re.search(r"^bf16 (group|batch) +\d", out, re.M)
    assert re.search(r"^fp32 group +loss \d+\.\d{4}$", out, re.M)
    assert "7 images / (96 steps per epoch x every 4 epochs)" in out  # monuseg-cpu: 192 crops
    assert re.search(
        r"^CPU use while training: \d+\.\d\d cores busy on average, 1 asked$", out, re.M
    )
    assert re.search(r"^target <= 0\.75 s/step .*: best fp32 (group|batch) \d+\.\d{3} s/step, "
                     r"n/a at these settings$", out, re.M)  # fmt: skip


def test_train_bench_with_native_bf16_compares_losses(capsys, monkeypatch):
    # Pretend this CPU has native bf16: the engine itself must then choose bf16 autocast.
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    assert bench.main([*_SMALL, "--steps-per-epoch", "3", "--val-every", "2"]) == 0
    out = capsys.readouterr().out
    assert "bf16 on this CPU: native" in out
    for name in ("fp32 group", "bf16 group", "fp32 batch", "bf16 batch"):
        assert re.search(rf"^{name}" + _ROW, out, re.M), name
    assert "7 images / (3 steps per epoch x every 2 epochs)" in out
    for norm in ("group", "batch"):
        found = re.search(rf"^bf16 {norm} +loss (\S+)  \|d\| mean (\S+)  max (\S+)", out, re.M)
        assert found, norm
        assert float(found.group(2)) < 0.05  # bf16 trains like fp32 over 3 steps


def test_train_bench_emulated_bf16_is_marked_and_not_a_target(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    assert bench.main([*_SMALL, "--emulated-bf16"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^bf16\* batch" + _ROW, out, re.M)
    assert re.search(r"^\* emulated bf16", out, re.M)
    assert re.search(r"best fp32 (group|batch) ", out)


def test_bench_method_has_the_norm_and_the_same_conv_weights(tmp_path):
    args = bench.build_parser().parse_args(_SMALL)
    config = _bench_train._config(args, str(tmp_path))
    assert (config.width, config.batch_size, config.crop_size, config.data_dir) == (4, 2, 64, None)
    assert config.crops_per_epoch == 2 * args.steps_per_epoch
    group, batch = (_bench_train._method(config, norm) for norm in ("group", "batch"))
    assert group.networks["net"].norm == "group" and batch.networks["net"].norm == "batch"
    net = batch.networks["net"]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net.build_spec["kwargs"]["norm"] == "batch"
    owned = {id(p) for p in net.parameters()}
    assert {id(p) for p in batch.optimizers["net"].param_groups[0]["params"]} == owned
    assert torch.equal(group.networks["net"].stem[0].weight, net.stem[0].weight)


def test_default_batch_is_the_targets_not_the_profiles(tmp_path):
    args = bench.build_parser().parse_args(["train", "--width", "4"])  # monuseg-cpu: 4
    config = _bench_train._config(args, str(tmp_path))
    assert config.batch_size == _bench_train.TARGET_SETTINGS["batch"]
    args = bench.build_parser().parse_args(["train", "--profile", "demo", "--batch", "4"])
    assert _bench_train._config(args, str(tmp_path)).batch_size == 4


def test_target_applies_only_at_the_target_settings():
    args = bench.build_parser().parse_args(["train", "--threads", "2"])
    config = type("C", (), {"width": 16, "batch_size": 8, "crop_size": 256})
    assert _bench_train._verdict(0.7, args, config) == "met"
    assert _bench_train._verdict(0.8, args, config) == "NOT met"
    config.width = 32
    assert _bench_train._verdict(0.7, args, config) == "n/a at these settings"


def test_train_bench_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["train", "--steps", "0"])
