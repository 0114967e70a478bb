import numpy as np
import pytest

from nucseg.data.images import read_image, read_label_map
from nucseg.data.monuseg import load_split
from nucseg.synth.cyclegan import CycleGANConfig, train_cyclegan
from nucseg.synth.pairs import SynthError, load_synthesizer, main, synthesize_pairs

TINY = {"crop_size": 32, "batch_size": 2, "crops_per_epoch": 2, "width": 4, "n_blocks": 1,
        "disc_width": 4, "disc_layers": 2, "pool_size": 2, "device": "cpu", "threads": 1,
        "epochs": 1}  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_demo):
    demo = tiny_demo
    out = tmp_path_factory.mktemp("gan")
    return train_cyclegan(CycleGANConfig(data_dir=str(demo), out_dir=str(out), **TINY)).last_path


def test_pairs_are_written_in_a_layout_training_reads(weights, tmp_path):
    ids = synthesize_pairs(3, tmp_path, seed=5, size=48, weights=weights, device="cpu")
    assert ids == [f"synth-all-s5-{i:05d}" for i in range(3)]
    image = read_image(tmp_path / "images" / f"{ids[0]}.png")
    labels = read_label_map(tmp_path / "labels" / f"{ids[0]}.png")
    assert image.shape == (48, 48, 3) and labels.shape == (48, 48) and labels.max() >= 1
    samples = load_split(tmp_path, None)
    assert sorted(s.image_id for s in samples) == ids


def test_the_same_seed_gives_the_same_pairs(weights, tmp_path):
    synth = load_synthesizer(weights, "cpu")
    a, b, c = synth.pair("all", 40, 1, 0), synth.pair("all", 40, 1, 0), synth.pair("all", 40, 2, 0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_bad_requests_fail_before_any_pair_is_made(weights, tmp_path):
    with pytest.raises(SynthError, match="--n must be >= 1"):
        synthesize_pairs(0, tmp_path, weights=weights)
    with pytest.raises(SynthError, match="unknown organ 'spleen'; the weights know"):
        synthesize_pairs(1, tmp_path / "o", organ="spleen", weights=weights, device="cpu")
    assert not (tmp_path / "o" / "images").exists()
    with pytest.raises(SynthError, match="no generator weights"):
        synthesize_pairs(1, tmp_path, weights=tmp_path / "missing.pt")
    synthesize_pairs(1, tmp_path / "done", size=32, weights=weights, device="cpu")
    with pytest.raises(SynthError, match="already holds 2 pair files"):
        synthesize_pairs(1, tmp_path / "done", size=32, weights=weights, device="cpu")


def test_command_line(weights, tmp_path, capsys):
    args = ["--n", "2", "--out", str(tmp_path), "--size", "32", "--weights", str(weights)]
    assert main([*args, "--device", "cpu"]) == 0
    assert "2 pairs written" in capsys.readouterr().out
    assert main([*args, "--device", "tpu", "--overwrite"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
