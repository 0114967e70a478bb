"""Tests of instance map -> polygons -> ImageScope XML, and the round trip through the reader."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from nucseg.data import annotations
from nucseg.data.annotations import (
    polygons_from_instances,
    write_imagescope_xml,
    write_instances_xml,
)
from nucseg.data.demo import ORGANS, make_tile
from nucseg.data.monuseg import rasterise_polygons, read_xml_regions, xml_to_instances
from nucseg.errors import AnnotationError, NucsegError
from nucseg.metrics import aji, pixel_dice


@pytest.fixture(scope="module")
def tiles():
    return {organ: make_tile(seed, organ=organ)[1] for seed, organ in enumerate(ORGANS)}


@pytest.mark.parametrize("organ", ORGANS)
def test_demo_round_trip_through_xml_is_exact(tiles, tmp_path, organ):
    labels = tiles[organ]
    path = write_instances_xml(tmp_path / f"{organ}.xml", labels, image_id=organ)
    back, stats = xml_to_instances(path, labels.shape)
    assert stats.n_regions == stats.n_kept == labels.max() and stats.n_degenerate == 0
    np.testing.assert_array_equal(back, labels)  # demo ids are 1..n, so even ids match


@pytest.mark.parametrize("organ", ORGANS)
def test_simplified_round_trip_stays_close(tiles, tmp_path, organ):
    labels = tiles[organ]
    exact = polygons_from_instances(labels)
    simple = polygons_from_instances(labels, tolerance=0.5)
    assert sum(map(len, simple)) < 0.8 * sum(map(len, exact))
    path = write_imagescope_xml(tmp_path / "s.xml", simple)
    back, _ = xml_to_instances(path, labels.shape)
    dice, score = pixel_dice(labels, back), aji(labels, back)
    assert dice >= 0.97 and score >= 0.9, (dice, score)  # measured: ~0.993 and ~0.986


def test_vertices_are_matlab_one_based_pixel_outlines():
    labels = np.zeros((6, 8), np.int32)
    labels[2, 5] = 1  # one pixel, centre (x, y) = (6, 3) in MATLAB's frame
    (poly,) = polygons_from_instances(labels)
    assert poly.dtype == np.float64 and poly.shape == (4, 2)
    assert sorted(map(tuple, poly.tolist())) == [(5.5, 3.0), (6.0, 2.5), (6.0, 3.5), (6.5, 3.0)]


@pytest.mark.parametrize(
    "mask",
    [
        np.eye(5, dtype=bool),  # diagonal neighbours only
        np.pad(np.ones((3, 4), bool), ((0, 3), (3, 0))),  # touches the image border
        np.ones((1, 7), bool),  # one pixel thick
        np.array([[1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], bool),
    ],
)
def test_awkward_shapes_are_reproduced(mask):
    labels = mask.astype(np.int32) * 4  # id 4: gaps in the ids are fine
    back, kept = rasterise_polygons(polygons_from_instances(labels), labels.shape)
    assert kept.all()
    np.testing.assert_array_equal(back > 0, mask)


def test_polygons_follow_id_order_and_skip_missing_ids():
    labels = np.zeros((20, 20), np.int32)
    labels[2:5, 2:5] = 7
    labels[10:14, 10:13] = 3
    labels[15:18, 2:4] = 5
    polys = polygons_from_instances(labels)
    centres = [p.mean(0) for p in polys]  # (x, y), 1-based
    np.testing.assert_allclose(centres, [(12, 12.5), (3.5, 17), (4, 4)])


def test_piecewise_nucleus_keeps_its_largest_piece_and_holes_are_filled():
    labels = np.zeros((12, 12), np.int32)
    labels[1:8, 1:8] = 1
    labels[4, 4] = 0  # a hole
    labels[10, 10] = 1  # a detached speck
    back, _ = rasterise_polygons(polygons_from_instances(labels), labels.shape)
    expected = np.zeros_like(labels)
    expected[1:8, 1:8] = 1
    np.testing.assert_array_equal(back, expected)


def test_xml_structure_matches_imagescope(tmp_path):
    polys = [np.array([[1.5, 2.0], [10.25, 2.0], [10.0, 8.0]]), np.array([[3, 3], [9, 3], [9, 9]])]
    path = write_imagescope_xml(
        tmp_path / "a.xml", polys, image_id='id "<&>"', microns_per_pixel=0.25
    )
    root = ET.parse(path).getroot()
    assert root.tag == "Annotations" and root.get("MicronsPerPixel") == "0.250000"
    (annotation,) = root.findall("Annotation")
    assert annotation.get("Name") == 'id "<&>"'
    regions = annotation.findall("Regions/Region")
    assert [r.get("Id") for r in regions] == ["1", "2"]
    assert float(regions[1].get("Area")) == pytest.approx(18.0)
    assert float(regions[1].get("AreaMicrons")) == pytest.approx(18.0 * 0.25**2, abs=0.05)
    vertices = regions[0].findall("Vertices/Vertex")
    assert [v.attrib for v in vertices][:2] == [
        {"X": "1.5", "Y": "2", "Z": "0"},
        {"X": "10.25", "Y": "2", "Z": "0"},
    ]
    read = read_xml_regions(path)
    assert len(read) == 2
    for got, want in zip(read, polys, strict=True):
        np.testing.assert_array_equal(got, want)


def test_empty_map_gives_xml_without_regions(tmp_path):
    labels = np.zeros((16, 16), np.int32)
    assert polygons_from_instances(labels) == []
    path = write_instances_xml(tmp_path / "empty.xml", labels)
    assert ET.parse(path).getroot().findall("Annotation/Regions/Region") == []
    assert read_xml_regions(path) == []
    back, stats = xml_to_instances(path, labels.shape, require_regions=False)
    assert not back.any() and stats.n_regions == 0
    with pytest.raises(AnnotationError, match="no <Region> in the annotation"):
        xml_to_instances(path, labels.shape)  # as ground truth: refused


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "a.xml"
    square = [np.array([[1, 1], [4, 1], [4, 4], [1, 4]])]
    write_imagescope_xml(path, square)  # creates the folder
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(annotations.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_imagescope_xml(path, square * 2)
    assert path.read_bytes() == before  # old file untouched
    assert os.listdir(path.parent) == ["a.xml"]  # temp file removed
    monkeypatch.undo()
    write_imagescope_xml(path, square * 2)  # overwrites in place
    assert len(read_xml_regions(path)) == 2 and os.listdir(path.parent) == ["a.xml"]


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(AnnotationError, match="2-D integer"):
        polygons_from_instances(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(AnnotationError, match="2-D integer"):
        polygons_from_instances(np.zeros((4, 4), np.float32))
    with pytest.raises(AnnotationError, match="negative"):
        polygons_from_instances(-np.ones((4, 4), np.int32))
    path = tmp_path / "bad.xml"
    with pytest.raises(NucsegError, match=r"bad\.xml: polygon #2 .*shape \(2, 2\)"):
        write_imagescope_xml(path, [np.ones((3, 2)), np.ones((2, 2))])
    with pytest.raises(AnnotationError, match="finite"):
        write_imagescope_xml(path, [np.array([[1, 1], [np.nan, 2], [3, 3]])])
    assert not path.exists()
