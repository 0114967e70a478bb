"""Tests of the procedural demo data: determinism, realism checks, on-disk layout, cache."""

from __future__ import annotations

import csv
import re
from collections import Counter

import numpy as np
import pytest
from skimage.color import rgb2hed

from nucseg.data.demo import (
    DEMO_VERSION,
    ORGANS,
    TEST_ORGANS,
    TRAIN_ORGANS,
    demo_root,
    make_tile,
    write_demo_dataset,
)
from nucseg.data.images import read_image, read_label_map
from nucseg.data.monuseg import discover, load_split


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct instance ids that share a 4-connected pixel edge."""
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= {(min(p), max(p)) for p in zip(a[m].tolist(), b[m].tolist(), strict=True)}
    return pairs


@pytest.mark.parametrize("organ", ORGANS)
def test_make_tile_is_deterministic_per_seed(organ):
    image1, labels1 = make_tile(7, organ=organ)
    image2, labels2 = make_tile(7, organ=organ)
    np.testing.assert_array_equal(image1, image2)
    np.testing.assert_array_equal(labels1, labels2)


def test_different_seeds_and_organs_differ():
    image0, labels0 = make_tile(0)
    image1, labels1 = make_tile(1)
    image_b, _ = make_tile(0, organ="demo-b")
    assert not np.array_equal(image0, image1)
    assert not np.array_equal(labels0, labels1)
    assert not np.array_equal(image0, image_b)


@pytest.mark.parametrize("size", [64, 256, 300])
def test_shapes_dtypes_and_contiguous_ids(size):
    image, labels = make_tile(3, size=size, organ="demo-b")
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.shape == (size, size) and labels.dtype == np.int32
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0 plus 1..n, no gaps


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown demo organ 'liver'"):
        make_tile(0, organ="liver")
    with pytest.raises(ValueError, match="at least 32"):
        make_tile(0, size=16)
    with pytest.raises(ValueError, match="n_train"):
        write_demo_dataset("unused", n_train=-1)


@pytest.mark.parametrize("organ", ORGANS)
def test_nuclei_counts_coverage_and_touching_are_sane(organ):
    for seed in range(3):
        _, labels = make_tile(seed, organ=organ)
        n = int(labels.max())
        assert 30 <= n <= 350, f"{organ} seed {seed}: {n} nuclei"
        assert 0.05 <= (labels > 0).mean() <= 0.45
        areas = np.bincount(labels.ravel())[1:]
        assert 50 <= np.median(areas) <= 450  # radii of roughly 4-12 px
        assert len(_touching_pairs(labels)) >= 3  # clusters with shared boundaries exist


def test_pseudo_organs_differ_in_mean_colour():
    means = {o: np.mean([make_tile(s, organ=o)[0].reshape(-1, 3).mean(0) for s in range(4)], 0)
             for o in ORGANS}  # fmt: skip
    for i, a in enumerate(ORGANS):
        for b in ORGANS[i + 1 :]:
            assert np.linalg.norm(means[a] - means[b]) > 10, (a, b, means[a], means[b])


@pytest.mark.parametrize("organ", ORGANS)
def test_hematoxylin_channel_is_higher_inside_nuclei(organ):
    image, labels = make_tile(5, organ=organ)
    hema = rgb2hed(image)[..., 0]
    inside, outside = hema[labels > 0].mean(), hema[labels == 0].mean()
    assert inside > 2 * outside, (inside, outside)
    # Eosin-dominated stroma: pink/red pixels (R > G) are the majority outside nuclei.
    assert (image[labels == 0][:, 0] > image[labels == 0][:, 1]).mean() > 0.8


def test_organ_assignment_puts_demo_d_in_test_only():
    assert set(TRAIN_ORGANS) == set(ORGANS) - {"demo-d"} and set(TEST_ORGANS) == set(ORGANS)
    default_test = [TEST_ORGANS[j % 4] for j in range(6)]
    assert default_test == ["demo-a", "demo-d", "demo-b", "demo-c", "demo-a", "demo-d"]


def _rows(root):
    with open(root / "organs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_write_demo_dataset_layout(tmp_path):
    root = write_demo_dataset(tmp_path / "demo", n_train=4, n_test=3, size=64, seed=3)
    assert root == tmp_path / "demo"
    rows = _rows(root)
    assert [r["split"] for r in rows] == ["train"] * 4 + ["test"] * 3
    assert [r["organ"] for r in rows] == [*TRAIN_ORGANS, "demo-a", "demo-a", "demo-d", "demo-b"]
    for r in rows:
        assert re.fullmatch(r"DEMO-[abcd]-\d{3}", r["image_id"])
        assert r["organ"] == "demo-" + r["image_id"][5]
    ids = [r["image_id"] for r in rows]

    def stems(folder, suffix):
        return sorted(p.stem for p in folder.glob(f"*{suffix}")) if folder.exists() else []

    # Like MoNuSeg: test tiles and odd training tiles as XML, the other training tiles as PNG.
    assert stems(root / "train" / "images", ".tif") == sorted(ids[:4])
    assert stems(root / "train" / "labels", ".png") == sorted(ids[0:4:2])
    assert stems(root / "train" / "annotations", ".xml") == sorted(ids[1:4:2])
    assert stems(root / "test" / "images", ".tif") == sorted(ids[4:])
    assert stems(root / "test" / "annotations", ".xml") == sorted(ids[4:])
    assert not (root / "test" / "labels").exists()
    first = ids[0]
    image = read_image(root / "train" / "images" / f"{first}.tif")
    labels = read_label_map(root / "train" / "labels" / f"{first}.png")
    assert image.shape == (64, 64, 3) and labels.shape == (64, 64)
    # Same arguments, same files.
    again = write_demo_dataset(tmp_path / "again", n_train=4, n_test=3, size=64, seed=3)
    np.testing.assert_array_equal(read_image(again / "train" / "images" / f"{first}.tif"), image)
    for name in (f"train/labels/{first}.png", f"test/annotations/{ids[-1]}.xml"):
        assert (again / name).read_bytes() == (root / name).read_bytes()


def test_default_dataset_loads_through_the_monuseg_reader(tmp_path):
    """discover()/load_split() read it: right counts and organs, XML maps equal the tiles'."""
    root = write_demo_dataset(tmp_path, size=48)  # default counts, small tiles for speed
    files = discover(root)
    assert len(files) == 18
    assert sum(f.annotation is not None for f in files) == 6 + 6
    train, test = load_split(root, "train"), load_split(root, "test")
    assert len(train) == 12 and len(test) == 6
    assert Counter(s.organ for s in train) == {"demo-a": 4, "demo-b": 4, "demo-c": 4}
    assert Counter(s.organ for s in test) == {"demo-a": 2, "demo-d": 2, "demo-b": 1, "demo-c": 1}
    assert all(s.split == "test" for s in test) and all(s.split == "train" for s in train)
    for sample in train + test:
        assert sample.image.shape == (48, 48, 3) and sample.instances.dtype == np.int32
    # Instance maps read back from XML equal the generated ones (exact polygon round trip).
    by_id = {s.image_id: s for s in train + test}
    for r in _rows(root):
        index = int(r["image_id"][-3:])
        seed = int(np.random.SeedSequence([0, index]).generate_state(1)[0])
        image, labels = make_tile(seed, size=48, organ=r["organ"])
        np.testing.assert_array_equal(by_id[r["image_id"]].image, image)
        np.testing.assert_array_equal(by_id[r["image_id"]].instances, labels)


def test_rewriting_removes_stale_annotations_of_the_other_kind(tmp_path):
    root = write_demo_dataset(tmp_path, n_train=2, n_test=1, size=40)
    stale_png = root / "test" / "labels" / "DEMO-a-002.png"
    stale_xml = root / "train" / "annotations" / "DEMO-a-000.xml"
    stale_png.parent.mkdir()
    stale_png.write_bytes(b"old")  # e.g. left by a demo-v1 dataset in the same folder
    stale_xml.write_bytes(b"old")
    write_demo_dataset(tmp_path, n_train=2, n_test=1, size=40)
    assert not stale_png.exists() and not stale_xml.exists()
    assert len(load_split(root, None)) == 3


def test_demo_root_is_cached_and_keyed(tmp_path, monkeypatch):
    root = demo_root(tmp_path, n_train=2, n_test=1, size=64)
    assert root.parent == tmp_path and DEMO_VERSION in root.name
    marker = root / "train" / "images"
    stamp = [p.stat().st_mtime_ns for p in sorted(marker.iterdir())]
    assert demo_root(tmp_path, n_train=2, n_test=1, size=64) == root
    assert [p.stat().st_mtime_ns for p in sorted(marker.iterdir())] == stamp  # not rewritten
    other = demo_root(tmp_path, n_train=2, n_test=1, size=64, seed=1)
    assert other != root and other.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    monkeypatch.setenv("NUCSEG_CACHE", str(tmp_path / "env"))
    assert demo_root(n_train=2, n_test=1, size=64).parent == tmp_path / "env"


@pytest.mark.slow
def test_tiny_model_trained_on_demo_data_beats_untrained(tmp_path):
    """The demo data is learnable: a tiny CNN trained for seconds segments it (Dice ~0.85-0.9)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    root = write_demo_dataset(tmp_path, n_train=9, n_test=6, size=256, seed=0)

    def load(split):
        samples = load_split(root, split)  # label PNGs and XML alike
        x = np.stack([s.image for s in samples])
        y = np.stack([s.instances > 0 for s in samples])
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5, torch.from_numpy(y)

    x_train, y_train = load("train")
    x_test, y_test = load("test")

    def tiny_net():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(16, 2, 1),
        )  # fmt: skip

    def dice(model):
        with torch.no_grad():
            pred = model(x_test).argmax(1).bool()
        return float(2 * (pred & y_test).sum() / (pred.sum() + y_test.sum()).clamp(min=1))

    threads = torch.get_num_threads()
    # One thread: on a shared, busy CPU, extra threads spin and make this many times slower.
    torch.set_num_threads(1)
    try:
        untrained = dice(tiny_net())
        model = tiny_net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        crop = 64
        for _ in range(80):
            idx = torch.randint(0, len(x_train), (8,), generator=gen)
            oy, ox = torch.randint(0, 256 - crop + 1, (2,), generator=gen).tolist()
            xb = x_train[idx, :, oy : oy + crop, ox : ox + crop]
            yb = y_train[idx, oy : oy + crop, ox : ox + crop].long()
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained = dice(model)
    finally:
        torch.set_num_threads(threads)
    assert trained > 0.75, (trained, untrained)
    assert trained > untrained + 0.3, (trained, untrained)
