"""Smoke test of the metrics benchmark (output format only, no timing assertions)."""

from __future__ import annotations

import re

import pytest

from nucseg import bench


def test_metrics_bench_prints_figures(capsys):
    assert bench.main(["metrics", "--repeats", "1", "--size", "300", "--nuclei", "60"]) == 0
    out = capsys.readouterr().out
    figures = r": +\d+\.\d+ ms median wall, +\d+\.\d+ ms median CPU"
    assert re.search(r"fast score\(\) all metrics" + figures, out)
    assert re.search(r"fast aji\+aji_plus\+pq" + figures, out)
    assert re.search(r"reference aji\+aji_plus\+pq" + figures, out)
    assert re.search(r"speed ratio reference / fast aji\+aji_plus\+pq: \d+\.\d+x", out)
    assert re.search(r"target .*: by CPU (met|NOT met), by wall (met|NOT met)", out)


def test_synthetic_pair_is_deterministic():
    gt1, pred1 = bench.synthetic_pair(120, 20, seed=3)
    gt2, pred2 = bench.synthetic_pair(120, 20, seed=3)
    assert (gt1 == gt2).all() and (pred1 == pred2).all()
    assert gt1.dtype == pred1.dtype == "int32" and gt1.shape == (120, 120)
    assert 15 <= len(set(gt1.ravel().tolist())) - 1 <= 20


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        bench.main(["metrics", "--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.main([])


# --- predict ---------------------------------------------------------------------------


_PREDICT_SMALL = ["predict", "--size", "128", "--big", "256", "--repeats", "1"]
_STAGES = ("read image", "tiling/network", "post-processing", "total")


def _check_stage_lines(out):
    for stage in _STAGES:
        assert re.search(rf"^{re.escape(stage)}: +\d+\.\d+ s median of 1$", out, re.M), stage
    assert "target: total <= 3 s at 1000x1000" in out


def test_predict_bench_prints_stages_and_memory(capsys, monkeypatch, tmp_path):
    from nucseg import _bench_predict, infer

    # no packaged weights: the bench must build the untrained net it names
    monkeypatch.setattr(infer, "DEFAULT_UNET_WEIGHTS", tmp_path / "absent.pt")
    peaks = iter([321.5, "failed (exit 1): boom"])
    monkeypatch.setattr(_bench_predict, "_child_peak", lambda args, image, size: next(peaks))
    assert bench.main([*_PREDICT_SMALL, "--width", "4", "--depth", "2", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "untrained U-Net (width 4, depth 2)" in out
    _check_stage_lines(out)
    assert re.search(r"peak RSS 128x128: +321\.5 MB \(target < 2000 MB at 1000x1000: n/a", out)
    assert "peak RSS 256x256: failed (exit 1): boom" in out


def test_predict_peak_reports_this_process(tmp_path, capsys):
    from nucseg.data.demo import make_tile
    from nucseg.data.images import write_image

    image = write_image(tmp_path / "x.png", make_tile(0, size=64)[0])
    args = ["predict-peak", "--image", str(image), "--size", "96", "--width", "4", "--depth", "2"]
    assert bench.main(args) == 0
    assert re.fullmatch(r"peak_rss_mb=\d+\.\d\n", capsys.readouterr().out)


def test_predict_bench_missing_weights_is_an_error(tmp_path, capsys):
    assert bench.main([*_PREDICT_SMALL, "--weights", str(tmp_path / "none.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_bench_end_to_end_with_subprocesses(capsys):
    assert bench.main(_PREDICT_SMALL) == 0
    out = capsys.readouterr().out
    _check_stage_lines(out)
    for side, target in (("128x128", 2000), ("256x256", 4000)):
        assert re.search(rf"peak RSS {side}: +\d+\.\d MB \(target < {target} MB", out), side
