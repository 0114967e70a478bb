"""Integration tests on the real MoNuSeg copy in ../shared/monuseg (skipped without it)."""

import numpy as np
import pytest

from nucseg.data.images import read_label_map
from nucseg.data.monuseg import (
    discover,
    load_split,
    organ_of,
    rasterise_polygons,
    read_xml_regions,
    xml_to_instances,
)
from nucseg.data.organs import read_organs_csv
from nucseg.metrics import aji

pytestmark = pytest.mark.monuseg


@pytest.fixture(scope="module")
def samples(monuseg_root):
    return {s.image_id: s for s in load_split(monuseg_root, None)}


def test_all_images_load(monuseg_root, samples):
    table = read_organs_csv(monuseg_root / "organs.csv")
    assert len(table) == 44 and set(samples) == set(table)
    splits = [s.split for s in samples.values()]
    assert splits.count("train") == 30 and splits.count("test") == 14
    for image_id, s in samples.items():
        assert s.image.dtype == np.uint8 and s.image.shape == (1000, 1000, 3)
        assert s.instances.dtype == np.int32 and s.instances.shape == (1000, 1000)
        n = len(np.unique(s.instances)) - 1
        assert 100 <= n <= 3000, (image_id, n)
        assert s.organ == table[image_id] == organ_of(image_id)


def test_test_xml_maps(monuseg_root):
    for f in discover(monuseg_root, "test"):
        labels, stats = xml_to_instances(f.annotation, (1000, 1000))
        assert labels.dtype == np.int32
        assert 200 <= stats.n_kept <= 1000 and stats.n_degenerate <= 3, (f.image_id, stats)
        assert stats.n_hidden <= 3 and labels.max() == stats.n_kept


def _offset(dark, mask):
    """Sub-pixel shift of ``mask`` that best matches the nuclear stain (correlation peak)."""
    f = mask.astype(np.float32) - mask.mean()
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(f)) * np.fft.rfft2(dark), s=f.shape)
    score = np.roll(corr, (2, 2), (0, 1))[:5, :5]  # circular shifts -2..2 in y and x
    i, j = np.unravel_index(score.argmax(), score.shape)
    out = []
    for a, b, c, k in [(*score[i - 1 : i + 2, j], i), (*score[i, j - 1 : j + 2], j)]:
        out.append(k - 2 + (0.5 * (a - c) / (a - 2 * b + c) if 0 < k < 4 else 0))
    return np.array(out)


def test_xml_convention_matches_label_pngs(monuseg_root, samples):
    # The 17 training label PNGs and the 13 training XMLs come from the same annotation
    # effort, so masks from either should sit the same way on the stained nuclei. With the
    # "subtract 1" convention the mean offsets agree within a fraction of a pixel; without
    # it the XML masks are about one pixel off in x and y.
    png, xml, raw = [], [], []
    for f in discover(monuseg_root, "train"):
        s = samples[f.image_id]
        dark = -np.log((s.image[..., 0].astype(np.float32) + 1) / 256)  # hematoxylin-ish
        dark -= dark.mean()
        if f.labels is not None:
            png.append(_offset(dark, s.instances > 0))
            continue
        xml.append(_offset(dark, s.instances > 0))
        unshifted, _ = rasterise_polygons(
            [r + 1 for r in read_xml_regions(f.annotation)], (1000, 1000)
        )
        raw.append(_offset(dark, unshifted > 0))
    assert len(png) == 17 and len(xml) == 13
    png, xml, raw = np.mean(png, 0), np.mean(xml, 0), np.mean(raw, 0)
    print(f"mean offsets (y, x): png {png}, xml {xml}, xml without shift {raw}")
    assert np.abs(png - xml).max() < 0.3, (png, xml)
    assert np.abs(png - raw).min() > 0.7, (png, raw)


def test_xml_and_png_statistics_agree(monuseg_root, samples):
    areas = {"xml": [], "png": []}
    for f in discover(monuseg_root, "train"):
        inst = samples[f.image_id].instances
        sizes = np.bincount(inst.ravel())[1:]
        areas["png" if f.labels is not None else "xml"].append(sizes[sizes > 0].mean())
    ratio = np.median(areas["xml"]) / np.median(areas["png"])
    assert 0.67 < ratio < 1.5, areas


def _partition_differences(ours, reference):
    """(foreground pixels that differ, id pairs that break a one-to-one map of the ids)."""
    fg = ours > 0
    differ = int((fg != (reference > 0)).sum())
    pairs = np.unique(np.stack([ours[fg], reference[fg]]), axis=1)
    n_ours, n_ref = len(np.unique(pairs[0])), len(np.unique(pairs[1]))
    return differ, pairs.shape[1] - min(n_ours, n_ref) + abs(n_ours - n_ref)


def test_xml_rasterisation_matches_matlab_masks(monuseg_root):
    # The organisers' masks: MATLAB poly2mask on the raw vertices, first region keeps overlaps.
    folder = monuseg_root / "train" / "matlab_masks"
    files = [f for f in discover(monuseg_root, "train") if f.annotation is not None]
    assert len(files) == 13 and len(list(folder.glob("*.png"))) == 13
    later_wins_broken = 0
    for f in files:
        reference = read_label_map(folder / f"{f.image_id}.png")
        ours, _ = xml_to_instances(f.annotation, reference.shape)
        differ, broken = _partition_differences(ours, reference)
        assert differ == 0, f"{f.image_id}: {differ} foreground pixels differ from MATLAB"
        assert broken == 0, f"{f.image_id}: ids are not one-to-one with MATLAB's ({broken})"
        assert len(np.unique(ours)) == len(np.unique(reference))
        assert aji(reference, ours) == 1.0
        # The test can fail: the opposite overlap rule breaks the partition.
        regions = read_xml_regions(f.annotation)
        reversed_order, _ = rasterise_polygons(regions[::-1], reference.shape)
        later_wins_broken += _partition_differences(reversed_order, reference)[1] > 0
    assert later_wins_broken >= 10, later_wins_broken


def test_nucseg_evaluate_scores_rasterised_xml_against_matlab_masks_as_one(monuseg_root, tmp_path):
    import pandas as pd

    from nucseg.cli import main
    from nucseg.data.images import write_label_map

    files = [f for f in discover(monuseg_root, "train") if f.annotation is not None]
    for f in files:
        write_label_map(
            tmp_path / f"{f.image_id}.tif", xml_to_instances(f.annotation, (1000, 1000))[0]
        )
    csv = tmp_path / "scores.csv"
    folder = monuseg_root / "train" / "matlab_masks"
    assert main(["evaluate", str(folder), str(tmp_path), "--csv", str(csv)]) == 0
    scores = pd.read_csv(csv)
    assert len(scores) == 13
    assert (scores[["aji", "aji_plus", "pq", "f1", "dice"]] == 1.0).all().all()
