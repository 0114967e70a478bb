import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nucseg import checkpoint as ckpt
from nucseg.data.dataset import CropDataset
from nucseg.data.demo import write_demo_dataset
from nucseg.data.monuseg import load_split
from nucseg.losses import LossConfig
from nucseg.train import LossTargets, TrainConfig, TrainConfigError, main, train

TINY = {
    "width": 4,
    "depth": 2,
    "crop_size": 64,
    "batch_size": 2,
    "crops_per_epoch": 4,
    "elastic": False,
    "num_workers": 0,
    "threads": 1,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # 5 training tiles: organ demo-a has two, so one is held out for validation.
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=5, n_test=1, size=96)


def _config(demo, out, **changes):
    return TrainConfig(data_dir=str(demo), out_dir=str(out), **{**TINY, "epochs": 2, **changes})


def _history(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_two_epochs_write_history_and_checkpoints(demo, tmp_path):
    result = train(_config(demo, tmp_path))
    assert result.epochs_run == 2 and not result.stopped_early
    assert result.best_path.is_file() and result.last_path.is_file()
    rows = _history(result.history_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"loss", "ce", "dice", "val_aji", "lr", "seconds"} <= set(rows[0])
    assert 0.0 <= result.best_val_aji <= 1.0
    assert result.best_val_aji == max(float(r["val_aji"]) for r in rows)
    model, state = ckpt.load_model(result.best_path)
    assert state["best"] == {
        "monitor": "val_aji",
        "value": result.best_val_aji,
        "epoch": result.best_epoch,
    }
    assert state["method"] == "unet" and ckpt.network_names(state) == ["net"]
    assert state["postprocess"] is not None and state["meta"]["config"]["width"] == 4
    assert model(torch.rand(1, 3, 40, 40)).shape == (1, 3, 40, 40)


def test_the_distance_head_trains_and_predicts_a_fourth_channel(demo, tmp_path):
    from nucseg.infer import UNetPredictor

    result = train(_config(demo, tmp_path, epochs=1, loss=LossConfig(distance_weight=2.0)))
    rows = _history(result.history_path)
    assert float(rows[0]["distance"]) > 0  # logged with the other loss parts
    state = ckpt.load_checkpoint(result.best_path)
    assert state["networks"]["net"]["spec"]["kwargs"]["num_classes"] == 4
    predict = UNetPredictor(result.best_path, device="cpu", tile=64, overlap=16)
    sample = load_split(demo, "test")[0]
    probs = predict.probabilities(sample.image)
    assert probs.shape == (4, *sample.instances.shape)
    assert 0 <= probs[3].min() and probs[3].max() <= 1
    assert predict(sample.image).shape == sample.instances.shape


def test_crops_carry_the_targets_the_loss_asks_for(demo):
    loss = LossConfig(distance_weight=1.0, use_distance_weights=True)
    crops = CropDataset(load_split(demo, "train"), crop_size=64, target="instances")
    image, target, extras = LossTargets(crops, loss, boundary_width=2)[0]
    assert set(extras) == {"weight_map", "distance"}
    assert extras["distance"].shape == target.shape == extras["weight_map"].shape
    assert ((extras["distance"] > 0) == (target > 0)).all()
    plain = CropDataset(load_split(demo, "train"), crop_size=64, target="three_class")
    assert LossTargets(plain, LossConfig(), boundary_width=2)[0][2] == {}


def test_resume_reproduces_an_uninterrupted_run(demo, tmp_path):
    straight = train(_config(demo, tmp_path / "straight"))
    chunked = _config(demo, tmp_path / "chunked")
    first = train(chunked, until_epoch=1)
    assert first.epochs_run == 1
    resumed = train(chunked, resume=True)
    assert resumed.epochs_run == 2
    a = ckpt.load_checkpoint(straight.last_path)
    b = ckpt.load_checkpoint(resumed.last_path)
    assert a["step"] == b["step"] == 4
    for key, value in a["networks"]["net"]["state_dict"].items():
        assert torch.allclose(value, b["networks"]["net"]["state_dict"][key], atol=1e-6), key
    assert [r["loss"] for r in a["history"]] == pytest.approx([r["loss"] for r in b["history"]])


def test_the_weight_average_is_validated_kept_and_loaded_for_inference(demo, tmp_path):
    result = train(_config(demo, tmp_path, ema_decay=0.9))
    rows = _history(result.history_path)
    assert {"val_aji", "val_aji_raw"} <= set(rows[0])  # the average, and the trained weights
    assert result.best_val_aji == max(float(r["val_aji"]) for r in rows)
    state = ckpt.load_checkpoint(result.best_path)
    assert ckpt.network_names(state) == ["net", "ema"] and state["inference_network"] == "ema"
    averaged, trained = (state["networks"][n]["state_dict"] for n in ("ema", "net"))
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    model, _ = ckpt.load_model(result.best_path)  # inference takes the average
    for key, value in model.state_dict().items():
        assert torch.equal(value, averaged[key]), key
    exported = ckpt.load_checkpoint(ckpt.export_weights(result.best_path, tmp_path / "w.pt"))
    assert ckpt.network_names(exported) == ["ema"]


def test_the_weight_average_follows_its_decay(demo, tmp_path):
    from nucseg.engine import Engine
    from nucseg.train import UNetMethod

    config = _config(demo, tmp_path, ema_decay=0.9)
    method = UNetMethod(config)
    engine = Engine(method, config.engine_settings())
    average, trained = method.networks["ema"], method.networks["net"]
    assert not any(p.requires_grad for p in average.parameters())
    for step, expected_decay in ((0, 0.1), (100, 0.9)):  # (1 + 0) / 10, then ema_decay
        with torch.no_grad():
            for a, t in zip(average.parameters(), trained.parameters(), strict=True):
                a.fill_(0.0), t.fill_(1.0)
        engine.step = step
        method._update_average()
        for a in average.parameters():
            assert torch.allclose(a, torch.full_like(a, 1 - expected_decay))


def test_resume_with_a_weight_average_reproduces_an_uninterrupted_run(demo, tmp_path):
    straight = train(_config(demo, tmp_path / "straight", ema_decay=0.5))
    chunked = _config(demo, tmp_path / "chunked", ema_decay=0.5)
    train(chunked, until_epoch=1)
    resumed = train(chunked, resume=True)
    a, b = (ckpt.load_checkpoint(r.last_path)["networks"] for r in (straight, resumed))
    for name in ("net", "ema"):
        for key, value in a[name]["state_dict"].items():
            assert torch.allclose(value, b[name]["state_dict"][key], atol=1e-6), (name, key)
    with pytest.raises(TrainConfigError, match="ema_decay"):
        train(_config(demo, tmp_path / "chunked", ema_decay=0.6), resume=True)


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_weight_average_decay_outside_0_1_is_refused(demo, tmp_path, decay):
    with pytest.raises(TrainConfigError, match=r"ema_decay must be in \[0, 1\)"):
        _config(demo, tmp_path, ema_decay=decay)


def test_resume_with_other_settings_is_refused(demo, tmp_path):
    train(_config(demo, tmp_path, epochs=1))
    with pytest.raises(TrainConfigError, match="epochs: 1 in the checkpoint, 3 now"):
        train(_config(demo, tmp_path, epochs=3), resume=True)
    with pytest.raises(TrainConfigError, match=r"lr: 0\.001 in the checkpoint, 0\.002 now"):
        train(_config(demo, tmp_path, epochs=1, lr=0.002), resume=True)
    with pytest.raises(TrainConfigError, match="loss.boundary_weight: 5.0 in the checkpoint"):
        train(_config(demo, tmp_path, epochs=1, loss={"boundary_weight": 2.0}), resume=True)
    # Settings that change neither data nor optimisation may differ.
    changed = {"max_minutes": 30.0, "threads": 2, "num_workers": 0}
    assert train(_config(demo, tmp_path, epochs=1, **changed), resume=True).epochs_run == 1


def test_resume_on_other_data_is_refused_even_under_the_same_path(tmp_path):
    data = tmp_path / "data"
    write_demo_dataset(data, n_train=5, n_test=1, size=96, seed=0)
    train(_config(data, tmp_path / "run", epochs=1))
    write_demo_dataset(tmp_path / "other", n_train=5, n_test=1, size=96, seed=1)
    (data).rename(tmp_path / "first")
    (tmp_path / "other").rename(data)
    with pytest.raises(TrainConfigError, match="data.train: "):
        train(_config(data, tmp_path / "run", epochs=1), resume=True)


def test_an_existing_run_is_never_silently_replaced(demo, tmp_path):
    first = train(_config(demo, tmp_path, epochs=1))
    before = first.last_path.read_bytes()
    with pytest.raises(TrainConfigError, match="already holds a run .*--resume.*--overwrite"):
        train(_config(demo, tmp_path, epochs=1, seed=3))
    assert first.last_path.read_bytes() == before
    # A folder with best.pt but no last.pt cannot be resumed: it would mix two runs.
    first.last_path.unlink()
    with pytest.raises(TrainConfigError, match="holds no last.pt to resume from"):
        train(_config(demo, tmp_path, epochs=1), resume=True)
    again = train(_config(demo, tmp_path, epochs=1, seed=3), overwrite=True)
    state = ckpt.load_checkpoint(again.best_path)
    assert state["meta"]["config"]["seed"] == 3 and again.last_path.is_file()
    assert len(_history(again.history_path)) == 1


def test_time_budget_never_counts_a_cut_short_epoch(demo, tmp_path):
    loss = LossConfig(use_distance_weights=True)
    result = train(_config(demo, tmp_path, epochs=5, max_minutes=1e-9, loss=loss))
    assert result.stopped_early and result.epochs_run == 0 and result.epoch_step == 1
    state = ckpt.load_checkpoint(result.last_path)
    assert (state["epoch"], state["step"], state["epoch_step"]) == (0, 1, 1)
    assert state["history"] == [] and not result.history_path.exists()


def test_training_in_chunks_reaches_the_weights_of_one_go(demo, tmp_path):
    straight = train(_config(demo, tmp_path / "straight", epochs=3, validate_every=2))
    chunked = _config(demo, tmp_path / "chunked", epochs=3, validate_every=2, max_minutes=1e-9)
    calls = [train(chunked)]
    while calls[-1].epochs_run < 3:  # every call stops after one step of 2 per epoch
        calls.append(train(chunked, resume=True))
    assert len(calls) == 6 and [c.epoch_step for c in calls] == [1, 0] * 3
    a = ckpt.load_checkpoint(straight.last_path)
    b = ckpt.load_checkpoint(calls[-1].last_path)
    assert a["step"] == b["step"] == 6
    for key, value in a["networks"]["net"]["state_dict"].items():
        assert torch.equal(value, b["networks"]["net"]["state_dict"][key]), key
    assert a["optimizers"]["net"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert b["optimizers"]["net"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    drop = ("seconds",)
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in s["history"]] for s in (a, b)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("minutes", [0, -1, 0.0])
def test_a_time_budget_of_zero_or_less_is_refused(demo, tmp_path, minutes):
    with pytest.raises(TrainConfigError, match="max_minutes must be > 0"):
        _config(demo, tmp_path, max_minutes=minutes)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("width=abc", "setting width='abc': needs int, got str"),
        ("width=2.5", "setting width=2.5: needs int, got float"),
        ("device=tpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ("loss.w0=x", "setting loss.w0='x': needs float"),
    ],
)
def test_cli_names_a_bad_setting_in_one_line(capsys, tmp_path, setting, message):
    assert main(["--out", str(tmp_path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_validation_set_keeps_last_as_best(demo, tmp_path):
    result = train(_config(demo, tmp_path, epochs=1, val_fraction=0.0))
    assert result.best_val_aji is None and result.best_epoch == 1
    assert ckpt.load_checkpoint(result.best_path)["epoch"] == 1


KILL_SCRIPT = """
import sys, time
from nucseg import engine, train as t
original = engine.Engine.train_one_epoch
def slow(self, *args):
    time.sleep(0.3)  # leave time to be killed in the middle of the run
    return original(self, *args)
engine.Engine.train_one_epoch = slow
t.train(t.TrainConfig(**eval(sys.argv[1])))
"""


def test_resume_after_kill_9(demo, tmp_path):
    config = _config(demo, tmp_path, epochs=12, validate_every=4)
    fields = {**TINY, "epochs": 12, "validate_every": 4}
    fields.update(data_dir=str(demo), out_dir=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, repr(fields)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "last.pt").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "training never wrote last.pt"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt.load_checkpoint(tmp_path / "last.pt")["epoch"]
    assert 1 <= killed_at < 12
    result = train(config, resume=True)
    assert result.epochs_run == 12
    rows = _history(result.history_path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert [int(r["step"]) for r in rows] == list(range(2, 26, 2))
    assert [r["val_aji"] != "" for r in rows] == [e % 4 == 0 for e in range(1, 13)]


def test_cli_reports_bad_settings(capsys, tmp_path):
    assert main(["--out", str(tmp_path), "--set", "loss.nope=1"]) == 2
    assert "unknown training setting 'loss.nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes(demo, tmp_path, torchrun):
    args = ["--nproc_per_node", "2", "-m", "nucseg.train", "--data", demo, "--out", tmp_path,
            "--epochs", "1", "--set", "device=cpu"]  # fmt: skip
    for key, value in {**TINY, "crops_per_epoch": 8}.items():
        args += ["--set", f"{key}={value}"]
    stdout = torchrun(args)
    state = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert state["meta"]["world_size"] == 2
    assert state["step"] == 2  # 8 crops / (2 processes x batch 2)
    assert "best val AJI" in stdout


def test_a_format_1_training_checkpoint_resumes(demo, tmp_path):
    # Write the first epoch as format 1 did (one network, "optimizer"/"scheduler" keys), resume.
    config = _config(demo, tmp_path)
    straight = train(_config(demo, tmp_path / "straight"))
    train(config, until_epoch=1)
    state = ckpt.load_checkpoint(tmp_path / "last.pt")
    old = {
        "format": 1,
        "model": state["networks"]["net"]["spec"],
        "state_dict": state["networks"]["net"]["state_dict"],
        "optimizer": state["optimizers"]["net"],
        "scheduler": state["schedulers"]["net"],
        "best": {"val_aji": state["best"]["value"], "epoch": state["best"]["epoch"]},
        **{k: state[k] for k in ("scaler", "epoch", "step", "rng", "history", "postprocess")},
        "meta": {"config": state["meta"]["config"], "total_steps": 4},
    }
    torch.save(old, tmp_path / "last.pt")
    resumed = train(config, resume=True)
    assert resumed.epochs_run == 2
    a = ckpt.load_checkpoint(straight.last_path)["networks"]["net"]["state_dict"]
    b = ckpt.load_checkpoint(resumed.last_path)["networks"]["net"]["state_dict"]
    for key, value in a.items():
        assert torch.allclose(value, b[key], atol=1e-6), key
