"""Instance maps to polygons, and polygons to Aperio ImageScope XML (MoNuSeg's annotation format).

Use it to export predictions for viewing in Aperio ImageScope or other tools that read its
XML (QuPath through an ImageScope-XML import script), and to write MoNuSeg-style annotations::

    from nucseg.data.annotations import write_instances_xml
    write_instances_xml("TCGA-XX-0000.xml", instances, image_id="TCGA-XX-0000")

Coordinates follow MoNuSeg's convention: vertices are (x, y) = (column, row) in MATLAB's
1-based pixel frame, so that pixel ``instances[r, c]`` has its centre at ``(c + 1, r + 1)``.
``nucseg.data.monuseg.xml_to_instances`` reads the files back, with ids renumbered 1..n in
increasing order of the original ids; the pixels survive the round trip unchanged unless a
nucleus has holes or several pieces (every pixel of the demo tiles comes back, and all but at
most one pixel of the MoNuSeg label PNGs tried).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import approximate_polygon, find_contours

from nucseg.errors import AnnotationError
from nucseg.labels import as_label_map
from nucseg.runtime import write_bytes_atomic

__all__ = ["polygons_from_instances", "write_imagescope_xml", "write_instances_xml"]

# Region columns that ImageScope writes in every file; kept for tools that expect them.
_HEADERS = (
    (9999, "Region"),
    (9997, "Length"),
    (9996, "Area"),
    (9998, "Text"),
    (1, "Description"),
)


def polygons_from_instances(instances: np.ndarray, tolerance: float = 0.0) -> list[np.ndarray]:
    """Trace the outline of every nucleus of an instance map as a polygon.

    Each outline is the level-0.5 iso-contour of the nucleus mask (through the midpoints
    between inside and outside pixel centres; diagonal neighbours count as connected), with
    the vertices inside straight runs removed, so MATLAB ``poly2mask`` and
    ``nucseg.data.monuseg.rasterise_polygons`` fill exactly the nucleus's pixels again. A
    nucleus in several pieces (e.g. cut in two by an overlapping one) keeps its longest
    outline only, and holes are filled.

    Args:
        instances: Integer (H, W) instance map, 0 = background.
        tolerance: Optional further Douglas-Peucker simplification in pixels
            (``skimage.measure.approximate_polygon``; about 10 times slower). 0 (default)
            keeps the pixels exactly; 0.5 drops about 40% of the vertices but moves about
            0.3% of the pixels (AJI ~0.986 after a round trip on the demo tiles).

    Returns:
        One float64 (n, 2) array of (x, y) vertices per nucleus, 1-based (MoNuSeg's XML
        convention), in increasing order of instance id. The polygons are open (the last
        vertex is not a repeat of the first).

    Raises:
        LabelMapError: ``instances`` is not a 2-D integer array, or has negative ids (an
            `AnnotationError`).

    """
    instances = as_label_map(instances, "instance map")
    polygons = []
    if not instances.any():
        return polygons
    for k, box in enumerate(ndi.find_objects(instances)):
        if box is None:  # id not present
            continue
        # Zero padding closes outlines that touch the crop (or image) border.
        crop = instances[box]
        mask = np.zeros((crop.shape[0] + 2, crop.shape[1] + 2), np.float32)
        mask[1:-1, 1:-1] = crop == k + 1
        contour = _corners(max(find_contours(mask, 0.5, fully_connected="high"), key=len))
        if tolerance > 0:
            closed = approximate_polygon(np.vstack([contour, contour[:1]]), tolerance)[:-1]
            contour = closed if len(closed) >= 3 else contour
        # (row, col) in the padded crop -> 0-based image (x, y) -> MATLAB's 1-based frame.
        x = contour[:, 1] + (box[1].start - 1) + 1
        y = contour[:, 0] + (box[0].start - 1) + 1
        polygons.append(np.column_stack([x, y]))
    return polygons


def _corners(contour: np.ndarray) -> np.ndarray:
    """Drop the repeated closing point and the vertices where the outline goes straight on."""
    if np.array_equal(contour[0], contour[-1]):
        contour = contour[:-1]
    step_out = np.diff(contour, axis=0, append=contour[:1])
    step_in = np.concatenate([step_out[-1:], step_out[:-1]])
    # Contour points lie on a half-pixel grid, so the cross product is exactly 0 when straight.
    turn = step_in[:, 0] * step_out[:, 1] - step_in[:, 1] * step_out[:, 0]
    keep = turn != 0
    return contour[keep] if keep.sum() >= 3 else contour


def _number(v: float) -> str:
    """ImageScope's style: six decimals, trailing zeros dropped ("114.5", "109")."""
    text = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _region_xml(
    region_id: int, xy: np.ndarray, microns_per_pixel: float | None, lines: list[str]
) -> None:
    """Append the lines of one ``<Region>`` element."""
    x, y = xy[:, 0], xy[:, 1]
    xn, yn = np.append(x[1:], x[0]), np.append(y[1:], y[0])
    length = float(np.hypot(xn - x, yn - y).sum())
    area = 0.5 * abs(float((x * yn - xn * y).sum()))
    size = f'Length="{length:.1f}" Area="{area:.1f}"'
    if microns_per_pixel is not None:
        size += (
            f' LengthMicrons="{length * microns_per_pixel:.1f}"'
            f' AreaMicrons="{area * microns_per_pixel**2:.1f}"'
        )
    lines.append(
        f'\t\t\t<Region Id="{region_id}" Type="0" Zoom="1" Selected="0" ImageLocation="" '
        f'ImageFocus="-1" {size} Text="" NegativeROA="0" InputRegionId="0" Analyze="1" '
        f'DisplayId="{region_id}">'
    )
    lines.append("\t\t\t\t<Attributes/>")
    lines.append("\t\t\t\t<Vertices>")
    lines.extend(
        f'\t\t\t\t\t<Vertex X="{_number(a)}" Y="{_number(b)}" Z="0"/>'
        for a, b in zip(x.tolist(), y.tolist(), strict=True)
    )
    lines.append("\t\t\t\t</Vertices>")
    lines.append("\t\t\t</Region>")


def write_imagescope_xml(
    path: str | os.PathLike[str],
    polygons: Sequence[np.ndarray],
    image_id: str | None = None,
    microns_per_pixel: float | None = None,
) -> Path:
    """Write polygons as an Aperio ImageScope XML annotation, in MoNuSeg's structure.

    The file holds one ``<Annotation>`` (named ``image_id``) whose ``<Regions>`` list one
    ``<Region Id="k">`` per polygon, k = 1..n in the given order, each with
    ``<Vertex X=.. Y=.. Z="0"/>`` points. ``nucseg.data.monuseg.read_xml_regions`` reads
    them back in the same order (and ``xml_to_instances`` lets the first region keep a
    pixel where they overlap). The file is written to a temporary sibling and renamed into place, so
    readers never see a partial file; missing parent folders are created.

    Args:
        path: Output ``.xml`` file.
        polygons: (n, 2) arrays of (x, y) vertices in MoNuSeg's 1-based frame, e.g. from
            ``polygons_from_instances``. An empty list gives a valid file with no regions.
        image_id: Stored as the annotation's name (ImageScope shows it); optional.
        microns_per_pixel: Pixel size, written as ``MicronsPerPixel`` with each region's
            length and area in microns when given (MoNuSeg's 40x images: about 0.2527).

    Returns:
        ``path`` as a Path.

    Raises:
        AnnotationError: A polygon is not an (n, 2) array of finite numbers with n >= 3.

    """
    path = Path(path)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    mpp = "" if microns_per_pixel is None else f' MicronsPerPixel="{microns_per_pixel:.6f}"'
    name = quoteattr(image_id or "")
    lines += [
        f"<Annotations{mpp}>",
        f'\t<Annotation Id="1" Name={name} ReadOnly="0" NameReadOnly="0" '
        'LineColorReadOnly="0" Incremental="0" Type="4" LineColor="65280" Visible="1" '
        'Selected="1" MarkupImagePath="" MacroName="">',
        "\t\t<Attributes>",
        '\t\t\t<Attribute Name="Description" Id="0" Value=""/>',
        "\t\t</Attributes>",
        "\t\t<Regions>",
        "\t\t\t<RegionAttributeHeaders>",
        *(f'\t\t\t\t<AttributeHeader Id="{i}" Name="{n}" ColumnWidth="-1"/>' for i, n in _HEADERS),
        "\t\t\t</RegionAttributeHeaders>",
    ]
    for k, xy in enumerate(polygons):
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 3 or not np.isfinite(xy).all():
            raise AnnotationError(
                f"{path}: polygon #{k + 1} must be an (n, 2) array of finite (x, y) with "
                f"n >= 3, got shape {xy.shape}"
            )
        _region_xml(k + 1, xy, microns_per_pixel, lines)
    lines += ["\t\t</Regions>", "\t\t<Plots/>", "\t</Annotation>", "</Annotations>", ""]
    write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))
    return path


def write_instances_xml(
    path: str | os.PathLike[str],
    instances: np.ndarray,
    image_id: str | None = None,
    microns_per_pixel: float | None = None,
    tolerance: float = 0.0,
) -> Path:
    """Export an instance map (e.g. a prediction) as an ImageScope XML annotation.

    Shorthand for ``write_imagescope_xml(path, polygons_from_instances(instances,
    tolerance), image_id, microns_per_pixel)``; regions follow increasing instance id.

    Args:
        path: Output ``.xml`` file.
        instances: Integer (H, W) instance map, 0 = background.
        image_id: Stored as the annotation's name; optional.
        microns_per_pixel: Pixel size, if known (see ``write_imagescope_xml``).
        tolerance: Outline simplification in pixels (see ``polygons_from_instances``).

    Returns:
        ``path`` as a Path.

    Raises:
        LabelMapError: ``instances`` is not a 2-D integer array with ids >= 0.

    """
    polygons = polygons_from_instances(instances, tolerance=tolerance)
    return write_imagescope_xml(path, polygons, image_id, microns_per_pixel)
