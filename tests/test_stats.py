import numpy as np
import pytest

from nucseg.data.stats import (
    dataset_nuclei,
    image_summary,
    nucleus_properties,
    shape_statistics,
    touching_ids,
    xml_overlaps,
)


def _labels():
    labels = np.zeros((40, 40), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:16] = 2  # touches 1
    labels[20:30, 20:26] = 5  # alone
    return labels


def test_touching_ids():
    assert list(touching_ids(_labels())) == [1, 2]
    assert touching_ids(np.zeros((5, 5), np.int32)).size == 0


def test_nucleus_properties_and_summaries():
    table = nucleus_properties(_labels())
    assert list(table.nucleus_id) == [1, 2, 5]
    assert list(table.area) == [64, 48, 60]
    assert list(table.touching) == [True, True, False]

    class S:
        image_id, split, organ, instances = "img", "train", "kidney", _labels()

    nuclei = dataset_nuclei([S()])
    per_image = image_summary(nuclei, {"img": 1600})
    assert per_image.loc[0, "nuclei"] == 3
    assert per_image.loc[0, "per_megapixel"] == pytest.approx(3 / 1600 * 1e6)
    assert per_image.loc[0, "touching_fraction"] == pytest.approx(2 / 3)
    stats = shape_statistics(nuclei)
    assert stats["kidney"]["n"] == 3
    assert stats["all"]["log_area_mean"] == pytest.approx(np.log([64, 48, 60]).mean())


def _xml(path, polygons):
    regions = "".join(
        "<Region><Vertices>"
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        + "</Vertices></Region>"
        for poly in polygons
    )
    path.write_text(
        f"<Annotations><Annotation><Regions>{regions}</Regions></Annotation></Annotations>"
    )
    return path


def test_xml_overlaps_counts_overlapping_regions(tmp_path):
    square = lambda x0, y0, s: [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]  # noqa: E731
    path = _xml(tmp_path / "a.xml", [square(2, 2, 8), square(6, 6, 8), square(30, 30, 5)])
    stats = xml_overlaps(path, (50, 50))
    assert stats["regions"] == 3
    assert stats["overlapping_regions"] == 2
    assert stats["overlap_pixels"] > 0
    apart = _xml(tmp_path / "b.xml", [square(2, 2, 5), square(20, 20, 5)])
    assert xml_overlaps(apart, (50, 50))["overlap_pixels"] == 0
