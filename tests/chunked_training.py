"""A check every training method must pass: trained in time-limited chunks, the same weights."""

import dataclasses

import torch

from nucseg import checkpoint as ckpt


def assert_chunks_reach_the_weights_of_one_go(train, config, steps: int) -> None:
    """Train ``config`` in one go, and again one step per call; compare every tensor.

    Args:
        train: The method's ``train_*(config, resume=False)`` function.
        config: A config whose ``out_dir`` is a fresh folder (a sibling ``-chunked`` is used).
        steps: The run's total steps, i.e. the number of calls the chunked run must take.

    """
    straight = train(config)
    chunked = dataclasses.replace(config, out_dir=f"{config.out_dir}-chunked", max_minutes=1e-9)
    calls = [train(chunked)]
    while calls[-1].epochs_run < straight.epochs_run:
        calls.append(train(chunked, resume=True))
    assert len(calls) == steps
    a, b = (ckpt.load_checkpoint(r.last_path) for r in (straight, calls[-1]))
    for name, entry in a["networks"].items():
        for key, value in entry["state_dict"].items():
            assert torch.equal(value, b["networks"][name]["state_dict"][key]), (name, key)
