import csv
import os
import sys
from pathlib import Path

import pytest
import torch
from adversarial_toy import ToyGAN, train_toy

from nucseg import checkpoint as ckpt
from nucseg.engine import Engine, EngineError, EngineSettings

TOY = Path(__file__).with_name("adversarial_toy.py")


def _weights(path):
    state = ckpt.load_checkpoint(path)
    return {name: entry["state_dict"] for name, entry in state["networks"].items()}, state


def test_two_networks_train_checkpoint_and_log(tmp_path):
    result = train_toy(tmp_path, epochs=2)
    assert result.epochs_run == 2 and result.monitor == "val_l1"
    assert result.best_val_aji is None and result.best_value is not None
    weights, state = _weights(result.last_path)
    assert state["method"] == "toy-gan" and set(weights) == {"G", "D"}
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"G", "D"}
    assert state["extra"]["pool"].shape == (3, 3, 16, 16)
    with open(result.history_path) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["4", "8"]
    assert {"G", "D", "val_l1", "lr_G", "lr_D", "seconds"} <= set(rows[0])
    # linear decay per epoch: the scheduler stepped once per epoch, not per batch
    assert float(rows[1]["lr_G"]) == pytest.approx(2e-3 * (1 - 2 / 3))
    best = min(rows, key=lambda r: float(r["val_l1"]))  # monitor_mode "min"
    assert state["best"]["value"] == pytest.approx(float(best["val_l1"]))
    assert _weights(result.best_path)[1]["epoch"] == int(best["epoch"]) == result.best_epoch


def test_resume_reproduces_both_networks_and_the_pool(tmp_path):
    straight = train_toy(tmp_path / "a", epochs=3)
    train_toy(tmp_path / "b", epochs=3, until_epoch=1)
    resumed = train_toy(tmp_path / "b", epochs=3, resume=True)
    assert resumed.epochs_run == 3
    a, state_a = _weights(straight.last_path)
    b, state_b = _weights(resumed.last_path)
    for name in ("G", "D"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)
    assert torch.equal(state_a["extra"]["pool"], state_b["extra"]["pool"])
    assert state_a["history"][-1]["G"] == pytest.approx(state_b["history"][-1]["G"])


def test_resume_refuses_another_method(tmp_path):
    train_toy(tmp_path, epochs=1)
    other = ToyGAN(epochs=1)
    other.name = "other-gan"
    engine = Engine(other, EngineSettings(out_dir=tmp_path, epochs=1, device="cpu"))
    with pytest.raises(EngineError, match="method 'toy-gan'"):
        engine.run(resume=True)


def test_toy_gan_trained_in_chunks_matches_one_go(tmp_path):
    straight = train_toy(tmp_path / "a", epochs=2)
    calls = [train_toy(tmp_path / "b", epochs=2, max_minutes=1e-9)]
    while calls[-1].epochs_run < 2:
        calls.append(train_toy(tmp_path / "b", epochs=2, resume=True, max_minutes=1e-9))
    assert len(calls) == 8  # 4 steps per epoch, one per call
    a, state_a = _weights(straight.last_path)
    b, state_b = _weights(calls[-1].last_path)
    for name in ("G", "D"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), (name, key)
    assert torch.equal(state_a["extra"]["pool"], state_b["extra"]["pool"])
    assert [r["G"] for r in state_a["history"]] == [r["G"] for r in state_b["history"]]


def test_a_run_folder_is_claimed_once(tmp_path):
    train_toy(tmp_path, epochs=1)
    with pytest.raises(EngineError, match="already holds a run"):
        train_toy(tmp_path, epochs=1)
    assert train_toy(tmp_path, epochs=1, overwrite=True).epochs_run == 1
    with pytest.raises(EngineError, match="epochs: 1 in the checkpoint, 2 now"):
        train_toy(tmp_path, epochs=2, resume=True)


@pytest.mark.slow
def test_ddp_two_cpu_processes_adversarial(tmp_path, torchrun):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOY.parent), *sys.path])}
    torchrun(["--nproc_per_node", "2", TOY, tmp_path, "2"], env=env)
    weights, state = _weights(tmp_path / "last.pt")
    assert state["meta"]["world_size"] == 2 and set(weights) == {"G", "D"}
    assert state["step"] == 4  # 8 pairs / (2 processes x batch 2) x 2 epochs
