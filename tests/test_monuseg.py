"""Tests of nucseg.data.monuseg and nucseg.data.organs with fixtures built under tmp_path."""

import time

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucseg.data.images import write_label_map
from nucseg.data.monuseg import (
    Sample,
    SampleFiles,
    XmlStats,
    discover,
    load_sample,
    load_split,
    rasterise_polygons,
    read_xml_regions,
    xml_to_instances,
)
from nucseg.errors import (
    AnnotationError,
    AnnotationWarning,
    ImageReadError,
    LayoutError,
    ShapeMismatchError,
)


def xml_text(polygons, quote='"', y_first=False):
    """ImageScope-style XML with one Region per polygon of (x, y) vertices."""
    q = quote
    regions = []
    for k, poly in enumerate(polygons):
        verts = "".join(
            f"<Vertex Y={q}{y}{q} X={q}{x}{q} Z={q}0{q}/>\n"
            if y_first
            else f"<Vertex X={q}{x}{q} Y={q}{y}{q} Z={q}0{q}/>\n"
            for x, y in poly
        )
        regions.append(
            f'<Region Id="{k + 1}" Type="0"><Attributes/><Vertices>\n{verts}</Vertices></Region>'
        )
    return (
        '<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
        '<RegionAttributeHeaders><AttributeHeader Id="9999"/></RegionAttributeHeaders>\n'
        + "\n".join(regions)
        + "</Regions></Annotation></Annotations>"
    )


def write_xml(path, polygons, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml_text(polygons, **kw))
    return path


def raster(polygons, shape):
    labels, _ = rasterise_polygons([np.asarray(p, float) for p in polygons], shape)
    return labels


def square(lo, hi):
    return [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]


def test_overlap_first_region_wins_and_hidden(tmp_path):
    path = write_xml(tmp_path / "o.xml", [square(2, 8), square(5, 7), square(4.5, 12)])
    labels, stats = xml_to_instances(path, (16, 16, 3))
    assert labels.dtype == np.int32 and labels.shape == (16, 16)
    assert stats == XmlStats(n_regions=3, n_kept=3, n_degenerate=0, n_hidden=1)
    assert set(np.unique(labels)) == {0, 1, 3}  # region 2 lies fully inside region 1
    # MATLAB (6, 6) is in regions 1 and 3: the first keeps it; region 3 keeps only the rest
    assert labels[5, 5] == 1 and labels[2, 2] == 1 and labels[10, 10] == 3
    assert (labels == 3).sum() == 8 * 8 - 4 * 4  # MATLAB 5..12 squared, minus 5..8 (region 1)


def test_overlap_order_decides_the_owner(tmp_path):
    # The same two squares in the other order: the pixels they share change owner.
    first, _ = xml_to_instances(
        write_xml(tmp_path / "a.xml", [square(2, 8), square(5, 12)]), (16, 16)
    )
    swapped, _ = xml_to_instances(
        write_xml(tmp_path / "b.xml", [square(5, 12), square(2, 8)]), (16, 16)
    )
    np.testing.assert_array_equal(first > 0, swapped > 0)
    assert first[6, 6] == 1 and swapped[6, 6] == 1  # shared pixel: always the first region
    assert first[10, 10] == 2 and swapped[10, 10] == 1


def test_degenerate_regions_skipped_and_counted(tmp_path):
    polys = [
        square(2, 6),  # kept -> id 1
        [(1, 1), (5, 5)],  # two vertices
        [(1, 1), (3, 3), (6, 6)],  # collinear: zero area
        [],  # no vertices at all
        square(-40, -30),  # entirely outside (above/left)
        square(100, 120),  # entirely outside (below/right)
        [(10.2, 10.2), (10.4, 10.2), (10.3, 10.4)],  # covers no pixel centre
        [(8.5, 8.5), (12.5, 8.5), (12.5, 12.5), (8.5, 12.5), (8.5, 8.5)],  # closed: kept -> id 2
    ]
    path = write_xml(tmp_path / "d.xml", polys)
    with pytest.warns(AnnotationWarning, match=r"d\.xml: skipped 6 of 8 regions"):
        labels, stats = xml_to_instances(path, (16, 16))
    assert stats == XmlStats(n_regions=8, n_kept=2, n_degenerate=6, n_hidden=0)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 2).sum() == 16


def test_float_coordinates_and_formats_agree(tmp_path):
    rng = np.random.default_rng(3)
    polys = [np.round(rng.uniform(1, 30, (12, 2)), 4) for _ in range(6)]
    polys = [
        p[np.argsort(np.arctan2(p[:, 1] - p[:, 1].mean(), p[:, 0] - p[:, 0].mean()))] for p in polys
    ]
    fast, _ = xml_to_instances(write_xml(tmp_path / "a.xml", polys), (32, 32))
    tree1, _ = xml_to_instances(write_xml(tmp_path / "b.xml", polys, quote="'"), (32, 32))
    tree2, _ = xml_to_instances(write_xml(tmp_path / "c.xml", polys, y_first=True), (32, 32))
    np.testing.assert_array_equal(fast, tree1)
    np.testing.assert_array_equal(fast, tree2)
    regions = read_xml_regions(tmp_path / "a.xml")
    assert len(regions) == 6 and np.allclose(regions[0], polys[0])


def test_an_annotation_without_regions_is_refused_as_ground_truth(tmp_path):
    path = tmp_path / "e.xml"
    path.write_text("<Annotations><Annotation Id='1'><Regions/></Annotation></Annotations>")
    with pytest.raises(AnnotationError, match=r"e\.xml: no <Region> in the annotation"):
        xml_to_instances(path, (5, 6))
    labels, stats = xml_to_instances(path, (5, 6), require_regions=False)
    assert labels.shape == (5, 6) and not labels.any()
    assert stats == XmlStats(0, 0, 0, 0)


@pytest.mark.parametrize(
    "text",
    [
        "<Regions><Region><Vertices><Vertex X='1' Y='1'/></Vertices></Region></Regions>",
        "<?xml version='1.0'?><!-- c --><Annotation><Regions/></Annotation>",
    ],
)
def test_a_root_other_than_annotations_is_refused(tmp_path, text):
    path = tmp_path / "r.xml"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"r\.xml: root element <\w+>, not <Annotations>"):
        read_xml_regions(path)


@pytest.mark.parametrize("value", ["1e9", "1e7", "-30000"])
def test_an_absurd_vertex_is_refused_before_any_memory_is_spent(tmp_path, value):
    polys = [square(2, 6), [(2, 2), (float(value), 3), (3, 8)]]
    path = write_xml(tmp_path / "far.xml", polys)
    with pytest.raises(AnnotationError, match=r"far\.xml: region #2 has vertex .*far outside"):
        xml_to_instances(path, (16, 16))


def test_a_vertex_just_outside_the_image_is_clipped(tmp_path):
    path = write_xml(tmp_path / "edge.xml", [[(10, 10), (40, 10), (40, 40), (10, 40)]])
    labels, stats = xml_to_instances(path, (16, 16))
    assert stats.n_kept == 1 and labels[10:, 10:].all() and not labels[:10].any()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "this is not xml",
        xml_text([square(2, 6)])[:-40],  # truncated download
        "<Annotations><Region><Vertices><Vertex X='abc' Y='1'/></Vertices></Region></Annotations>",
        "<Annotations><Region><Vertices><Vertex X='1'/></Vertices></Region></Annotations>",
        "<Annotations><Region><Vertices><Vertex X='nan' Y='1'/></Vertices></Region></Annotations>",
        "<svg><path d='M 0 0'/></svg>",
    ],
)
def test_malformed_xml_names_file(tmp_path, text):
    path = tmp_path / "bad_annotation.xml"
    path.write_text(text)
    with pytest.raises(AnnotationError) as info:
        xml_to_instances(path, (8, 8))
    assert str(path) in str(info.value)


def test_missing_xml(tmp_path):
    with pytest.raises(AnnotationError, match="no such"):
        xml_to_instances(tmp_path / "nope.xml", (8, 8))


def test_xml_speed_on_monuseg_sized_image(tmp_path):
    # 900 nuclei, ~90k vertices on a 0.2 px grid: the largest MoNuSeg XML has 90k vertices
    rng = np.random.default_rng(0)
    polys = []
    for _ in range(900):
        cx, cy, r = rng.uniform(10, 990), rng.uniform(10, 990), rng.uniform(4, 12)
        theta = np.linspace(0, 2 * np.pi, int(2 * np.pi * r / 0.5), endpoint=False)
        polys.append(np.round(np.c_[cx + r * np.cos(theta), cy + r * np.sin(theta)] * 5) / 5)
    path = write_xml(tmp_path / "big.xml", polys)
    best = np.inf
    for _ in range(2):
        start = time.process_time()
        labels, stats = xml_to_instances(path, (1000, 1000))
        best = min(best, time.process_time() - start)
    assert stats.n_kept == 900 and sum(map(len, polys)) > 80_000
    assert best < 0.5, f"xml_to_instances took {best:.2f} s CPU"


# --- layouts -------------------------------------------------------------------------------

IDS = ["TCGA-A7-A13E-01Z-00-DX1", "TCGA-B0-5698-01Z-00-DX1", "TCGA-G9-6336-01Z-00-DX1"]


def tiny_tiff(path, compression="lzw", shape=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(len(path.name)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", compression=compression)
    return path


def tiny_labels(path, shape=(16, 16)):
    labels = np.zeros(shape, np.int32)
    labels[2:6, 2:6] = 1
    labels[8:12, 9:14] = 2
    return write_label_map(path, labels)


def build_shared(root):
    """Layout (a): train with XML + labels, test with XML, and an organs.csv."""
    tiny_tiff(root / "train/images" / f"{IDS[0]}.tif")
    write_xml(root / "train/annotations" / f"{IDS[0]}.xml", [square(3, 9)])
    tiny_tiff(root / "train/images" / f"{IDS[1]}.tif", "packbits")
    tiny_labels(root / "train/labels" / f"{IDS[1]}.png")
    write_xml(root / "train/annotations" / f"{IDS[1]}.xml", [square(3, 9)])  # labels win
    tiny_tiff(root / "test/images" / f"{IDS[2]}.tif", "packbits")
    write_xml(root / "test/annotations" / f"{IDS[2]}.xml", [square(3, 9), square(10, 14)])
    (root / "organs.csv").write_text(f"image_id,split,organ\n{IDS[0]},train,custom-organ\n")
    return root


def test_discover_shared_layout(tmp_path):
    root = build_shared(tmp_path / "monuseg")
    files = discover(root)
    assert [f.image_id for f in files] == IDS
    assert [f.split for f in files] == ["train", "train", "test"]
    assert files[0].annotation.name.endswith(".xml") and files[0].labels is None
    assert files[1].labels.name.endswith(".png") and files[1].annotation is None
    assert files[0].organ == "custom-organ" and files[1].organ is None
    assert [f.image_id for f in discover(root, "test")] == [IDS[2]]
    bare = discover(root / "train")  # a split folder given directly
    assert [f.split for f in bare] == ["train", "train"] and bare[0].organ == "custom-organ"
    samples = load_split(root, "train")
    assert [s.organ for s in samples] == ["custom-organ", "kidney"]
    assert samples[1].instances.max() == 2 and samples[0].instances.dtype == np.int32
    test = load_sample(discover(root, "test")[0])
    assert isinstance(test, Sample) and test.organ == "prostate" and test.split == "test"
    assert test.image.shape == (16, 16, 3) and set(np.unique(test.instances)) == {0, 1, 2}


def test_discover_official_zips(tmp_path):
    train = tmp_path / "MoNuSeg 2018 Training Data"
    tiny_tiff(train / "Tissue Images" / f"{IDS[0]}.tif")
    write_xml(train / "Annotations" / f"{IDS[0]}.xml", [square(3, 9)])
    test = tmp_path / "MoNuSegTestData"
    tiny_tiff(test / f"{IDS[2]}.tif", "packbits")
    write_xml(test / f"{IDS[2]}.xml", [square(3, 9)])
    (tmp_path / "__MACOSX").mkdir()  # zip debris is ignored
    (test / "._junk.tif").write_bytes(b"\x00")
    (test / ".DS_Store").write_bytes(b"\x00")
    both = discover(tmp_path)
    assert [(f.image_id, f.split) for f in both] == [(IDS[0], "train"), (IDS[2], "test")]
    assert [f.split for f in discover(train)] == ["train"]
    only_test = discover(test)
    assert [f.split for f in only_test] == ["test"] and only_test[0].annotation.parent == test
    sample = load_sample(only_test[0])
    assert sample.organ == "prostate" and sample.instances.max() == 1


def test_image_without_annotation_and_reverse(tmp_path):
    root = build_shared(tmp_path / "a")
    tiny_tiff(root / "test/images/TCGA-XX-0000-lonely.tif")
    with pytest.raises(LayoutError, match="TCGA-XX-0000-lonely.tif"):
        discover(root)
    root = build_shared(tmp_path / "b")
    write_xml(root / "test/annotations/orphan.xml", [square(2, 5)])
    with pytest.raises(LayoutError, match="orphan.xml"):
        discover(root)
    root = build_shared(tmp_path / "c")
    tiny_labels(root / "train/labels/orphan.npy")
    with pytest.raises(LayoutError, match="orphan.npy"):
        discover(root)


def test_layout_errors(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        discover(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("hi")
    with pytest.raises(LayoutError, match="looked for"):
        discover(tmp_path / "empty")
    root = build_shared(tmp_path / "dup")
    tiny_tiff(root / "test/images" / f"{IDS[2]}.png".replace(".png", ".tiff"))
    with pytest.raises(LayoutError, match="two images"):
        discover(root)
    root = build_shared(tmp_path / "nosplit")
    with pytest.raises(LayoutError, match="validation"):
        discover(root, "validation")
    # the same id twice in one split (official zip and shared layout side by side)
    root = build_shared(tmp_path / "twice")
    tiny_tiff(root / "MoNuSegTestData" / f"{IDS[2]}.tif")
    write_xml(root / "MoNuSegTestData" / f"{IDS[2]}.xml", [square(3, 9)])
    with pytest.raises(LayoutError, match="found twice"):
        discover(root)


def test_load_sample_errors(tmp_path):
    root = build_shared(tmp_path / "m")
    tiny_labels(root / "train/labels" / f"{IDS[1]}.png", shape=(16, 15))
    files = discover(root, "train")
    with pytest.raises(ShapeMismatchError) as info:
        load_sample(files[1])
    assert f"{IDS[1]}.png" in str(info.value) and f"{IDS[1]}.tif" in str(info.value)
    (root / "train/images" / f"{IDS[0]}.tif").write_bytes(b"II*\x00 corrupt")
    with pytest.raises(ImageReadError, match=IDS[0]):
        load_sample(files[0])
    (root / "test/annotations" / f"{IDS[2]}.xml").write_text("<Annotations><Region>")
    with pytest.raises(AnnotationError, match=IDS[2]):
        load_sample(discover(root, "test")[0])
    with pytest.raises(LayoutError):
        load_sample(SampleFiles("x", files[0].image, None, None, "train"))


def test_png_rgba_images_in_layout(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 255
    (tmp_path / "train/images").mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "train/images/DEMO-a-000.png")
    tiny_labels(tmp_path / "train/labels/DEMO-a-000.tif")
    sample = load_split(tmp_path, "train")[0]
    assert sample.image.shape == (16, 16, 3) and sample.organ == "unknown"


# --- organs --------------------------------------------------------------------------------
