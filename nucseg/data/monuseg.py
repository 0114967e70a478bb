"""MoNuSeg on disk: find image/annotation pairs, read XML polygons, load samples.

Three layouts are understood (see ``discover``), and any of them may hold label maps
(PNG/TIFF/NPY) or Aperio ImageScope XML polygons as annotation. XML polygons are turned
into instance maps that reproduce the organisers' MATLAB ``poly2mask`` masks.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nucseg.data.images import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label_map
from nucseg.data.organs import organ_of, read_organs_csv, split_by_organ
from nucseg.data.poly2mask import rasterise_polygons
from nucseg.errors import AnnotationError, AnnotationWarning, LayoutError, ShapeMismatchError

__all__ = [
    "Sample",
    "SampleFiles",
    "XmlStats",
    "discover",
    "load_sample",
    "load_split",
    "organ_of",
    "rasterise_polygons",
    "read_xml_regions",
    "split_by_organ",
    "xml_to_instances",
]

_REGION = re.compile(rb"<Region\b")
# The document element: after the XML declaration, comments and a doctype, if any.
_ROOT_TAG = re.compile(rb"^(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*<([A-Za-z_][\w.:-]*)", re.S)
_VERTEX = re.compile(rb'<Vertex\s+X="([^"]*)"\s+Y="([^"]*)"')


@dataclass(frozen=True)
class XmlStats:
    """Counts from one XML annotation.

    Attributes:
        n_regions: ``<Region>`` elements in the file.
        n_kept: Regions rasterised to at least one pixel (they get ids 1..n_kept).
        n_degenerate: Regions skipped: fewer than 3 distinct vertices, zero area, or no pixel
            centre inside the image (entirely outside, or too thin to cover a centre).
        n_hidden: Kept regions that earlier overlapping regions covered completely (the
            first region keeps an overlapped pixel), so their id does not occur in the map.

    """

    n_regions: int
    n_kept: int
    n_degenerate: int
    n_hidden: int = 0


@dataclass(frozen=True, eq=False)
class Sample:
    """One loaded image with its instance map (``eq=False``: arrays do not compare)."""

    image_id: str
    image: np.ndarray
    instances: np.ndarray
    organ: str
    split: str


@dataclass(frozen=True)
class SampleFiles:
    """Where one sample lives; exactly one of ``annotation`` (XML) and ``labels`` is set.

    ``organ`` is filled from an ``organs.csv`` next to the data when there is one.
    """

    image_id: str
    image: Path
    annotation: Path | None
    labels: Path | None
    split: str
    organ: str | None = None


def _fast_regions(data: bytes) -> list[np.ndarray] | None:
    """Regex reader for the usual ImageScope form; None when anything looks unusual."""
    chunks = _REGION.split(data)
    if _VERTEX.search(chunks[0]) or b"<Annotations" not in chunks[0]:
        return None
    found = [_VERTEX.findall(chunk) for chunk in chunks[1:]]
    if not found:
        return []
    counts = np.array([len(f) for f in found], dtype=np.int64)
    if counts.sum() != data.count(b"<Vertex"):  # other quoting or attribute order
        return None
    try:  # Python's float() on bytes is fast and correctly rounded
        values = np.array(list(map(float, chain.from_iterable(chain.from_iterable(found)))))
    except ValueError:
        return None
    return np.split(values.reshape(-1, 2), np.cumsum(counts)[:-1])


def _tree_regions(path: Path, data: bytes) -> list[np.ndarray]:
    """General (slower) reader through ElementTree, with precise error messages."""
    regions = list(ET.fromstring(data).iter("Region"))
    polygons = []
    for k, region in enumerate(regions):
        attrs = [v.attrib for v in region.iter("Vertex")]
        try:
            xy = np.array(
                [(a.get("X", a.get("x")), a.get("Y", a.get("y"))) for a in attrs], dtype=np.float64
            ).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise AnnotationError(
                f"{path}: region #{k + 1} (Id={region.get('Id')}) has a vertex without a "
                f"numeric X/Y ({exc})"
            ) from exc
        polygons.append(xy)
    return polygons


def read_xml_regions(path: str | Path) -> list[np.ndarray]:
    """Read the polygons of an Aperio ImageScope XML file.

    Args:
        path: XML file with ``<Region>`` elements holding ``<Vertex X=.. Y=..>`` points.

    Returns:
        One float64 array of shape (n, 2) with raw (x, y) vertex values per region, in
        document order (coordinates as written: MoNuSeg's are 1-based pixel centres).

    Raises:
        AnnotationError: The file is missing, not well-formed XML, not an ImageScope
            annotation, or a vertex lacks a finite numeric X or Y.

    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    data = path.read_bytes()
    try:  # expat without handlers: a fast well-formedness check
        expat.ParserCreate().Parse(data, True)
    except expat.ExpatError as exc:
        raise AnnotationError(f"{path}: malformed XML ({exc})") from exc
    root = _ROOT_TAG.match(data)
    tag = root.group(1).decode("utf-8", "replace") if root else "?"
    if tag != "Annotations":
        raise AnnotationError(
            f"{path}: root element <{tag}>, not <Annotations>; not an ImageScope annotation"
        )
    polygons = _fast_regions(data)
    if polygons is None:
        polygons = _tree_regions(path, data)
    for k, xy in enumerate(polygons):
        if not np.isfinite(xy).all():
            raise AnnotationError(f"{path}: region #{k + 1} has a NaN or infinite vertex")
    return polygons


def xml_to_instances(
    path: str | Path, shape: Sequence[int], require_regions: bool = True
) -> tuple[np.ndarray, XmlStats]:
    """Rasterise the polygons of an ImageScope XML file into an instance map.

    Reproduces MATLAB ``poly2mask`` on the raw (1-based) vertices, shifted to 0-based
    arrays, which is equivalent to subtracting 1 from every X and Y: vertices snap to a
    5x5 subpixel grid (MATLAB rounding), and a pixel is inside when its centre is inside
    the snapped outline (even-odd rule). Vertices exactly on pixel centres snap by +0.1
    pixel, so a square with X, Y in {4, 10} covers rows and columns 5..10 in MATLAB
    (4..9 here), as in poly2mask's documentation. Only the polygon outlines are traced,
    so the cost grows with the outline length, not with the image size.

    Ids are 1..n in document order over the kept regions. Where regions overlap, the
    **first** region keeps the pixel, as in the organisers' masks (see
    ``nucseg.data.poly2mask``); a region covered completely by earlier ones vanishes and its id is
    missing from the map (ids are not renumbered; see ``XmlStats.n_hidden``). Degenerate
    regions are skipped, counted, and reported in an :class:`AnnotationWarning`.

    Args:
        path: Aperio ImageScope XML file.
        shape: Image shape; only ``(H, W)`` (the first two entries) is used.
        require_regions: Refuse a file without regions, as ground truth must have nuclei;
            False reads one back (e.g. predict's XML of an image without nuclei).

    Returns:
        ``(instances, stats)``: int32 (H, W) map with 0 as background, and the counts.

    Raises:
        AnnotationError: The file is missing or malformed, has no region, or a vertex lies
            absurdly far outside the image (message names the file).

    """
    regions = read_xml_regions(path)
    if require_regions and not regions:
        raise AnnotationError(
            f"{path}: no <Region> in the annotation; ground truth without nuclei cannot be scored"
        )
    labels, kept = rasterise_polygons(regions, shape, name=str(path))
    n_kept = int(kept.sum())
    ids = np.unique(labels)
    stats = XmlStats(
        n_regions=len(regions),
        n_kept=n_kept,
        n_degenerate=len(regions) - n_kept,
        n_hidden=n_kept - int((ids > 0).sum()),
    )
    if stats.n_degenerate:
        warnings.warn(
            f"{path}: skipped {stats.n_degenerate} of {stats.n_regions} regions (fewer than 3 "
            "vertices, zero area, or no pixel centre inside the image)",
            AnnotationWarning,
            stacklevel=2,
        )
    return labels, stats


def _split_of(folder: Path) -> str:
    """Split of a folder that is not a ``<root>/<split>/images`` folder: test if so named."""
    return "test" if "test" in folder.name.lower() else "train"


def _listed(folder: Path | None, suffixes: Sequence[str]) -> dict[str, list[Path]]:
    """Visible files of a folder with the given suffixes, grouped by stem."""
    out: dict[str, list[Path]] = {}
    if folder is None or not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes:
            out.setdefault(p.stem, []).append(p)
    return out


def _source(folder: Path, top: Path) -> tuple[str, Path, Path | None, Path | None] | None:
    """Recognise one split folder: ``(split, image_dir, xml_dir, label_dir)`` or None."""
    dirs = {p.name: p for p in folder.iterdir() if p.is_dir()}
    if "images" in dirs:
        split = folder.name.lower() if folder != top else _split_of(folder)
        return split, dirs["images"], dirs.get("annotations"), dirs.get("labels")
    if "Tissue Images" in dirs:
        return _split_of(folder), dirs["Tissue Images"], dirs.get("Annotations"), None
    if _listed(folder, (".xml",)) and _listed(folder, IMAGE_SUFFIXES):
        return _split_of(folder), folder, folder, None
    return None


def _pair(
    split: str, image_dir: Path, xml_dir: Path | None, label_dir: Path | None
) -> list[SampleFiles]:
    """Pair the images of one split folder with their labels (preferred) or XML."""
    images = _listed(image_dir, IMAGE_SUFFIXES)
    xmls = _listed(xml_dir, (".xml",))
    labels = _listed(label_dir, LABEL_SUFFIXES)
    for kind, table in (("images", images), ("label maps", labels)):
        for stem, paths in table.items():
            if len(paths) > 1:
                raise LayoutError(f"two {kind} for id {stem!r}: {', '.join(map(str, paths))}")
    lonely = [images[s][0] for s in images if s not in labels and s not in xmls]
    lonely += [p[0] for s, p in {**xmls, **labels}.items() if s not in images]
    if lonely:
        shown = "\n  ".join(map(str, lonely[:10]))
        more = f"\n  ... and {len(lonely) - 10} more" if len(lonely) > 10 else ""
        raise LayoutError(
            f"{len(lonely)} file(s) without their partner (an image needs an XML annotation "
            f"or a label map with the same name, and vice versa):\n  {shown}{more}"
        )
    return [
        SampleFiles(
            stem, images[stem][0], None if stem in labels else xmls[stem][0],
            labels[stem][0] if stem in labels else None, split,
        )
        for stem in images
    ]  # fmt: skip


def discover(root: str | Path, split: str | None = None) -> list[SampleFiles]:
    """Find MoNuSeg images and their annotations under ``root``.

    Layouts (``root`` may hold several, or be one of the split folders itself):

    (a) ``root/<split>/images/`` with ``annotations/`` (XML) and/or ``labels/`` (PNG, TIFF
        or NPY instance maps); the split is the folder name (``train``, ``test``, ...);
    (b) the official training zip, ``MoNuSeg 2018 Training Data/Tissue Images/*.tif`` with
        ``Annotations/*.xml`` (split ``train``);
    (c) the official test zip, ``MoNuSegTestData/`` with ``*.tif`` next to ``*.xml``
        (split ``test``).

    A split folder given directly as ``root`` (or a folder of layout (b) or (c)) is
    ``test`` when its name contains "test", else ``train``. When an image has both a label
    map and an XML file, the label map is used. Hidden files (``.*``) are ignored. Organs
    come from an ``organs.csv`` in ``root`` or its parent when present.

    Args:
        root: Dataset folder.
        split: Keep only this split (e.g. ``"train"``, ``"test"``); None keeps all.

    Returns:
        The samples' files, sorted by image id.

    Raises:
        LayoutError: ``root`` is missing or of no known layout, an image lacks its
            annotation or an annotation its image, an id occurs twice, or no image
            belongs to ``split``.

    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: dataset folder does not exist")
    sources = [_source(root, root)]
    if sources[0] is None:
        subdirs = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name[0] not in "._"]
        sources = [_source(p, root) for p in subdirs]
    sources = [s for s in sources if s is not None]
    if not sources:
        raise LayoutError(
            f"{root}: no MoNuSeg layout found; looked for [<split>/]images/ with annotations/ "
            "or labels/, 'Tissue Images/' with 'Annotations/' (official training zip), and "
            "image files next to .xml files (official test zip)"
        )
    organs_csv = next(
        (p for p in (root / "organs.csv", root.parent / "organs.csv") if p.is_file()), None
    )
    table = read_organs_csv(organs_csv) if organs_csv else {}
    found: dict[tuple[str, str], SampleFiles] = {}
    for source in sources:
        for f in _pair(*source):
            if (f.split, f.image_id) in found:
                other = found[(f.split, f.image_id)].image
                raise LayoutError(f"image id {f.image_id!r} found twice: {other} and {f.image}")
            found[(f.split, f.image_id)] = SampleFiles(
                f.image_id, f.image, f.annotation, f.labels, f.split, table.get(f.image_id)
            )
    files = sorted(found.values(), key=lambda f: (f.image_id, f.split))
    if split is not None:
        splits = sorted({f.split for f in files})
        files = [f for f in files if f.split == split]
        if not files:
            raise LayoutError(f"{root}: no images of split {split!r} (found splits: {splits})")
    return files


def load_sample(files: SampleFiles) -> Sample:
    """Read one image and its instance map.

    Args:
        files: As returned by ``discover``.

    Returns:
        The sample; ``organ`` comes from ``files.organ`` or else ``organ_of``.

    Raises:
        ImageReadError: The image cannot be used.
        AnnotationError: The label map or XML cannot be used.
        ShapeMismatchError: The label map's shape differs from the image's.

    """
    if files.labels is None and files.annotation is None:
        raise LayoutError(f"{files.image}: no annotation or label map given")
    image = read_image(files.image)
    if files.labels is not None:
        instances = read_label_map(files.labels)
        if instances.shape != image.shape[:2]:
            raise ShapeMismatchError(
                f"{files.labels}: label map of shape {instances.shape} does not match image "
                f"{files.image} of shape {image.shape[:2]}"
            )
    else:
        instances, _ = xml_to_instances(files.annotation, image.shape)
    organ = files.organ or organ_of(files.image_id)
    return Sample(files.image_id, image, instances, organ, files.split)


def load_split(root: str | Path, split: str | None) -> list[Sample]:
    """Discover and load all samples of a split (None: all splits), sorted by image id.

    Args:
        root: Dataset folder (see ``discover``).
        split: Split name, or None for every split.

    Returns:
        The loaded samples.

    Raises:
        NucsegError: Any error of ``discover`` or ``load_sample``.

    """
    files = discover(root, split)
    return [load_sample(f) for f in tqdm(files, desc=f"loading {split or 'all'}", leave=False)]
