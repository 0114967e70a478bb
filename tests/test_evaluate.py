import numpy as np
import pandas as pd
import pytest

from nucseg.data.images import write_label_map
from nucseg.errors import LayoutError
from nucseg.evaluate import (
    evaluate_folders,
    evaluate_predictions,
    format_table,
    load_ground_truth,
    load_method_scores,
    markdown_table,
    results_table,
    save_method_scores,
)


def _blobs(offset=0):
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    labels[20:30, 20 + offset : 30 + offset] = 2
    return labels


def test_evaluate_predictions_perfect_and_shifted():
    gt = {"a": _blobs(), "b": _blobs()}
    pred = {"a": _blobs(), "b": _blobs(offset=3)}
    table = evaluate_predictions(gt, pred)
    assert list(table.image_id) == ["a", "b"]
    assert table.loc[0, "aji"] == pytest.approx(1.0)
    assert table.loc[1, "aji"] < 1.0


def test_missing_or_extra_prediction_is_an_error():
    with pytest.raises(LayoutError, match="no prediction for \\['b'\\]"):
        evaluate_predictions({"a": _blobs(), "b": _blobs()}, {"a": _blobs()})
    with pytest.raises(LayoutError, match="no ground truth for \\['c'\\]"):
        evaluate_predictions({"a": _blobs()}, {"a": _blobs(), "c": _blobs()})


def test_evaluate_label_folders(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_label_map(tmp_path / "gt" / "x.png", _blobs())
    write_label_map(tmp_path / "pred" / "x.npy", _blobs())
    assert set(load_ground_truth(tmp_path / "gt").instances) == {"x"}
    table = evaluate_folders(tmp_path / "gt", tmp_path / "pred")
    assert table.loc[0, "aji"] == pytest.approx(1.0)
    text = format_table(table)
    assert "mean" in text and "1.0000" in text


def test_duplicate_prediction_stems_are_an_error(tmp_path):
    write_label_map(tmp_path / "x.png", _blobs())
    write_label_map(tmp_path / "x.npy", _blobs())
    with pytest.raises(LayoutError, match="two label maps"):
        evaluate_folders(tmp_path, tmp_path)


def test_method_scores_round_trip_and_results_table(tmp_path):
    table = evaluate_predictions({"a": _blobs()}, {"a": _blobs(offset=2)})
    save_method_scores(tmp_path, "classical", table)
    loaded = load_method_scores(tmp_path)
    assert list(loaded) == ["classical"]
    pd.testing.assert_frame_equal(loaded["classical"], table, check_dtype=False)
    results = results_table(loaded)
    assert results.loc[0, "method"] == "classical"
    assert results.loc[0, "aji"] == pytest.approx(table.loc[0, "aji"])
    md = markdown_table(results)
    assert md.splitlines()[0].startswith("| method | images | aji")
    assert len(md.splitlines()) == 3


def test_annotation_readings_cost_of_each_pitfall(tmp_path):
    from nucseg.evaluate import READINGS, annotation_readings

    squares = [[(2, 2), (12, 2), (12, 12), (2, 12)], [(8, 8), (20, 8), (20, 20), (8, 20)]]
    regions = "".join(
        "<Region><Vertices>"
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in sq)
        + "</Vertices></Region>"
        for sq in squares
    )
    path = tmp_path / "a.xml"
    path.write_text(
        f"<Annotations><Annotation><Regions>{regions}</Regions></Annotation></Annotations>"
    )
    scores = annotation_readings(path, (24, 24))
    assert list(scores) == list(READINGS)
    assert scores["nucseg (exact)"] == 1.0
    assert scores["one-pixel shift"] < 0.9
    assert scores["later region wins"] < 1.0  # the overlap of 4x4 pixels changes owner
