import numpy as np
import pandas as pd
import pytest

from nucseg.analysis import (
    SCORE_METRICS,
    AnalysisError,
    aji_disagreement,
    bootstrap_mean_ci,
    long_table,
    mean_intervals,
    paired_differences,
    per_organ,
    worst_images,
)
from nucseg.errors import NucsegError
from nucseg.metrics import score

IDS = ["img-a1", "img-a2", "img-b1", "img-b2", "img-b3"]
ORGANS = ["liver", "liver", "lung", "lung", "lung"]


def table(aji, aji_plus=None, ids=IDS, organs=ORGANS, n_gt=100, n_pred=100):
    aji = np.asarray(aji, dtype=float)
    aji_plus = aji if aji_plus is None else np.asarray(aji_plus, dtype=float)
    n = len(ids)
    df = pd.DataFrame({"image_id": ids, "organ": organs[:n], "aji": aji, "aji_plus": aji_plus})
    for m in ("pq", "dq", "sq", "f1", "dice"):
        df[m] = aji
    for c in ("tp", "fp", "fn"):
        df[c] = 10
    df["n_gt"] = n_gt
    df["n_pred"] = n_pred
    return df


@pytest.fixture
def scores():
    return {
        "classical": table([0.5, 0.4, 0.3, 0.2, 0.1]),
        "unet": table([0.6, 0.5, 0.2, 0.4, 0.3]),
    }


def test_bootstrap_deterministic_and_contains_mean():
    x = np.random.default_rng(1).normal(0.5, 0.1, size=14)
    a = bootstrap_mean_ci(x, n_boot=500, seed=3)
    assert a == bootstrap_mean_ci(x, n_boot=500, seed=3)
    assert a != bootstrap_mean_ci(x, n_boot=500, seed=4)
    mean, lo, hi = a
    assert mean == pytest.approx(x.mean())
    assert lo < mean < hi


def test_bootstrap_chunking_matches_single_draw(monkeypatch):
    # Chunking is an implementation detail: resamples within bounds, same count.
    import nucseg.analysis as analysis

    x = np.arange(10.0)
    monkeypatch.setattr(analysis, "_BOOT_CHUNK", 25)
    mean, lo, hi = bootstrap_mean_ci(x, n_boot=101, seed=0)
    assert mean == 4.5 and 0 <= lo <= mean <= hi <= 9


def test_bootstrap_ci_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    _, lo_s, hi_s = bootstrap_mean_ci(rng.normal(size=10), seed=0)
    _, lo_l, hi_l = bootstrap_mean_ci(rng.normal(size=1000), seed=0)
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_bootstrap_edge_cases():
    assert bootstrap_mean_ci([0.3]) == (0.3, 0.3, 0.3)
    with pytest.raises(AnalysisError, match="at least one"):
        bootstrap_mean_ci([])
    with pytest.raises(AnalysisError, match="finite"):
        bootstrap_mean_ci([0.1, np.nan])
    with pytest.raises(AnalysisError, match="ci"):
        bootstrap_mean_ci([0.1, 0.2], ci=1.0)
    with pytest.raises(AnalysisError, match="n_boot"):
        bootstrap_mean_ci([0.1, 0.2], n_boot=0)


def test_per_organ_matches_hand_computed(scores):
    t = per_organ(scores, overall=True)
    assert list(t.columns) == ["classical", "unet", "n_images"]
    assert list(t.index) == ["liver", "lung", "all"]
    assert t.loc["liver", "classical"] == pytest.approx((0.5 + 0.4) / 2)
    assert t.loc["lung", "classical"] == pytest.approx((0.3 + 0.2 + 0.1) / 3)
    assert t.loc["liver", "unet"] == pytest.approx((0.6 + 0.5) / 2)
    assert t.loc["lung", "unet"] == pytest.approx((0.2 + 0.4 + 0.3) / 3)
    assert t.loc["all", "unet"] == pytest.approx(0.4)
    assert t["n_images"].tolist() == [2, 3, 5]
    assert "all" not in per_organ(scores).index


def test_mismatched_image_sets_raise_naming_ids(scores):
    scores["unet"] = scores["unet"].iloc[1:]
    for fn in (per_organ, lambda s: paired_differences(s, "classical")):
        with pytest.raises(NucsegError, match="img-a1"):
            fn(scores)


def test_bad_tables_raise(scores):
    with pytest.raises(AnalysisError, match="lacks column"):
        per_organ({"x": scores["unet"].drop(columns="organ")})
    with pytest.raises(AnalysisError, match="repeats"):
        per_organ({"x": pd.concat([scores["unet"], scores["unet"].iloc[:1]])})
    with pytest.raises(AnalysisError, match="no score tables"):
        per_organ({})
    with pytest.raises(AnalysisError, match="unknown baseline"):
        paired_differences(scores, "hovernet")
    nan = scores["unet"].copy()
    nan.loc[2, "aji"] = np.nan
    with pytest.raises(AnalysisError, match="img-b1"):
        paired_differences({"classical": scores["classical"], "unet": nan}, "classical")


def test_long_table(scores):
    t = long_table(scores)
    assert list(t.columns) == ["method", "image_id", "organ", "metric", "value"]
    assert len(t) == 2 * len(IDS) * len(SCORE_METRICS)
    row = t[(t.method == "unet") & (t.image_id == "img-b2") & (t.metric == "aji")]
    assert row["value"].item() == 0.4 and row["organ"].item() == "lung"
    assert len(long_table(scores, metrics=["aji"])) == 10


def test_paired_differences(scores):
    scores["third"] = scores["classical"].iloc[::-1].reset_index(drop=True)  # row order irrelevant
    t = paired_differences(scores, "classical", n_boot=1000, seed=0)
    assert t["method"].tolist() == ["unet", "third"]
    u = t.iloc[0]
    diff = np.array([0.1, 0.1, -0.1, 0.2, 0.2])
    assert u["mean_diff"] == pytest.approx(diff.mean())
    assert u["mean_method"] - u["mean_baseline"] == pytest.approx(diff.mean())
    assert u["ci_lo"] <= u["mean_diff"] <= u["ci_hi"]
    assert u["frac_improved"] == pytest.approx(0.8) and u["frac_worse"] == pytest.approx(0.2)
    assert 0 < u["wilcoxon_p"] <= 1
    same = t.iloc[1]  # identical scores: zero differences, no test possible
    assert same["mean_diff"] == 0 and same["ci_lo"] == same["ci_hi"] == 0
    assert np.isnan(same["wilcoxon_p"]) and same["frac_improved"] == 0
    pd.testing.assert_frame_equal(t, paired_differences(scores, "classical", n_boot=1000, seed=0))


def test_paired_differences_single_image():
    one = {"a": table([0.5], ids=["x"]), "b": table([0.7], ids=["x"])}
    r = paired_differences(one, "a").iloc[0]
    assert r["mean_diff"] == pytest.approx(0.2) and np.isnan(r["wilcoxon_p"])


def test_aji_disagreement_sign_and_reason():
    t = table([0.5, 0.5, 0.5, 0.5, 0.5], aji_plus=[0.4, 0.55, 0.5, 0.6, 0.505])
    t.loc[3, "n_pred"] = 70
    d = aji_disagreement({"m": t, "other": table([0.5] * 5)}, method="m")
    assert d["image_id"].tolist() == ["img-b2", "img-a2", "img-b3", "img-b1", "img-a1"]
    assert d["delta"].tolist() == pytest.approx([0.1, 0.05, 0.005, 0.0, -0.1])
    assert d["reason"][0].startswith("AJI over-penalises")
    assert "under-segmentation" in d["reason"][0]
    assert "under-segmentation" not in d["reason"][1]
    assert d["reason"][2] == d["reason"][3] == "agree"
    assert d["reason"][4].startswith("AJI+ drops")
    assert len(aji_disagreement({"m": t, "other": table([0.5] * 5)})) == 10
    with pytest.raises(AnalysisError, match="unknown method"):
        aji_disagreement({"m": t}, method="nope")


def _rects(*boxes):
    a = np.zeros((30, 30), np.int32)
    for i, (c0, c1) in enumerate(boxes, 1):
        a[5:15, c0:c1] = i
    return a


@pytest.mark.parametrize(
    ("pred", "sign"),
    [
        (_rects((5, 25)), -1),  # clean merge of both GT nuclei
        (_rects((5, 18)), 1),  # spill-over onto 30 % of the neighbour
        (_rects((5, 10), (10, 15), (15, 25)), 0),  # split: AJI and AJI+ agree
    ],
)
def test_disagreement_sign_matches_real_metrics(pred, sign):
    gt = _rects((5, 15), (15, 25))
    s = score(gt, pred)
    t = table([s.aji], aji_plus=[s.aji_plus], ids=["x"], n_gt=s.n_gt, n_pred=s.n_pred)
    d = aji_disagreement({"m": t})
    assert np.sign(round(d["delta"][0], 9)) == sign
    expected = {-1: "AJI+ drops", 1: "AJI over-penalises", 0: "agree"}[sign]
    assert d["reason"][0].startswith(expected)


def test_worst_images(scores):
    w = worst_images(scores, "unet", k=2)
    assert w["image_id"].tolist() == ["img-b1", "img-b3"]
    assert list(w.columns) == list(scores["unet"].columns)
    assert len(worst_images(scores, "unet", k=99)) == 5
    assert worst_images(scores, "unet", metric="aji_plus", k=1)["image_id"].item() == "img-b1"
    with pytest.raises(AnalysisError, match="k must"):
        worst_images(scores, "unet", k=0)
    with pytest.raises(AnalysisError, match="unknown method"):
        worst_images(scores, "x")
    with pytest.raises(AnalysisError, match="not numeric"):
        worst_images(scores, "unet", metric="organ")


def test_mean_intervals_bracket_each_mean_and_count_images(scores):
    few = {**scores, "pix2pix": table([0.2, 0.9], ids=IDS[:2])}  # image sets may differ
    out = mean_intervals(few, metrics=("aji", "pq"), n_boot=500)
    assert list(out.method) == ["classical", "unet", "pix2pix"]
    assert list(out.n_images) == [5, 5, 2]
    assert out.aji.tolist() == pytest.approx([0.3, 0.4, 0.55])
    assert (out.aji_lo <= out.aji).all() and (out.aji <= out.aji_hi).all()
    assert out.loc[2, "aji_hi"] - out.loc[2, "aji_lo"] > out.loc[0, "aji_hi"] - out.loc[0, "aji_lo"]
    with pytest.raises(AnalysisError, match="lacks column"):
        mean_intervals(scores, metrics=("nope",))
