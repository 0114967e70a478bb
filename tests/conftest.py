"""Shared pytest fixtures."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# the real data sits beside the repository: ../shared/monuseg
MONUSEG_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "monuseg"


@pytest.fixture
def torchrun():
    """Run ``python -m torch.distributed.run ARGS...`` in its own session; returns its stdout.

    A hang kills the whole session, torchrun's workers included; a failure shows stderr.
    """

    def run(args, env=None, timeout=180):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", *map(str, args)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, env=env)  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        assert proc.returncode == 0, stderr[-3000:]
        return stdout

    return run


@pytest.fixture(scope="session")
def monuseg_root() -> Path:
    """Path of the local MoNuSeg copy; skips the test when it is absent."""
    if not (MONUSEG_ROOT / "train").is_dir():
        pytest.skip(f"MoNuSeg data not found at {MONUSEG_ROOT}")
    return MONUSEG_ROOT


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A demo dataset of five 64-pixel training tiles and one test tile (for GAN trainings)."""
    from nucseg.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("tiny_demo"), n_train=5, n_test=1, size=64)
