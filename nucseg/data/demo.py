"""Procedural H&E-like tiles with instance masks, so everything runs without a download.

Tiles are rendered in optical-density (OD) space, following Beer-Lambert: each pixel's OD is
a sum of stain concentrations times unit stain vectors (Ruifrok & Johnston hematoxylin and
eosin, perturbed per pseudo-organ and per tile), and RGB = 255 * 10**(-OD). Colour
deconvolution (``skimage.color.rgb2hed``, Macenko) therefore behaves as on real H&E.

A tile has eosin-pink stroma with wavy fibres, paler cytoplasm around nuclear clusters, white
lumen regions, a few red blood cells, and hematoxylin-dark nuclei: irregular ellipses (a
Fourier-perturbed boundary) with chromatin texture, of three kinds (dense lymphocyte-like,
ordinary, vesicular with a dark rim and nucleoli). Nuclei may overlap: the later-drawn nucleus
lies on top in the image and so wins in the instance map, and touching boundaries exist.
Instance ids are relabelled to 1..n after drawing (fully hidden nuclei vanish). Placement and
shapes are those of `nucseg.data.placement` and `nucseg.data.shapes` (minimum-separation mode),
which `nucseg.synth.masks` drives from measured statistics instead of these styles.

Four pseudo-organs differ in stain vectors and strengths, nucleus size and density; like
MoNuSeg's lung and brain, "demo-d" (small, round, very dark, densely packed nuclei with blue
hematoxylin) occurs only in the test split. As in MoNuSeg, test tiles and half the training
tiles are annotated with ImageScope XML polygons (``nucseg.data.annotations``; they reproduce
the instance maps exactly), the other training tiles with label PNGs. All deterministic per seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from nucseg.data.annotations import write_instances_xml
from nucseg.data.images import write_image, write_label_map
from nucseg.data.placement import place_nuclei
from nucseg.data.shapes import boundary_table, nucleus_footprints, random_boundaries
from nucseg.runtime import write_bytes_atomic

__all__ = ["DEMO_VERSION", "ORGANS", "TEST_ORGANS", "TRAIN_ORGANS", "demo_root", "make_tile",
           "write_demo_dataset"]  # fmt: skip

# Bump whenever the generator's output changes: it keys the on-disk cache of demo_root().
DEMO_VERSION = "v2"
ORGANS = ("demo-a", "demo-b", "demo-c", "demo-d")
TRAIN_ORGANS = ORGANS[:3]
# Test tiles cycle in this order, so the default 6 are a, d, b, c, a, d: a third of the test
# set is an organ never seen in training (MoNuSeg: lung and brain, 4 of 14).
TEST_ORGANS = ("demo-a", "demo-d", "demo-b", "demo-c")

_RUIFROK_D = (0.27, 0.57, 0.78)  # Ruifrok & Johnston's DAB vector, as in skimage.color.rgb2hed
_HARMONICS = (2, 3, 4, 5, 6)  # boundary harmonics of the demo nuclei


@dataclass(frozen=True)
class _Style:
    """How one pseudo-organ looks; radii in pixels at a 40x-like scale."""

    hema: tuple[float, float, float]  # hematoxylin OD vector (R, G, B)
    eosin: tuple[float, float, float]
    h_conc: float  # mean hematoxylin OD inside an ordinary nucleus
    e_conc: float  # mean eosin OD in stroma
    radius: float  # mean nucleus radius
    radius_sd: float
    elongation: float  # largest axis ratio of an ordinary nucleus
    coverage: float  # target fraction of tissue covered by nuclei
    clustering: float  # fraction of nuclei placed in clusters
    dense: float  # fraction of small dark lymphocyte-like nuclei
    vesicular: float  # fraction of pale nuclei with a dark rim and nucleoli
    lumen: float  # mean fraction of white background


_STYLES = {
    # Typical MoNuSeg stain vectors (Macenko estimates), mid-sized nuclei in clusters.
    "demo-a": _Style(
        hema=(0.58, 0.72, 0.38), eosin=(0.27, 0.81, 0.52), h_conc=1.0, e_conc=0.42, radius=7.0,
        radius_sd=1.5, elongation=1.8, coverage=0.3, clustering=0.6, dense=0.15, vesicular=0.25,
        lumen=0.10,
    ),
    # Bluer hematoxylin (near Ruifrok), pale eosin, many small dark nuclei, more lumen.
    "demo-b": _Style(
        hema=(0.68, 0.67, 0.30), eosin=(0.36, 0.82, 0.45), h_conc=1.0, e_conc=0.28, radius=5.0,
        radius_sd=1.0, elongation=1.5, coverage=0.22, clustering=0.4, dense=0.45, vesicular=0.1,
        lumen=0.25,
    ),
    # Purplish hematoxylin, strong red eosin, large vesicular nuclei in tight clusters.
    "demo-c": _Style(
        hema=(0.50, 0.76, 0.42), eosin=(0.22, 0.76, 0.61), h_conc=0.9, e_conc=0.48, radius=9.5,
        radius_sd=2.0, elongation=2.2, coverage=0.28, clustering=0.8, dense=0.05, vesicular=0.5,
        lumen=0.05,
    ),
    # Test-only: small, round, very dark, densely packed nuclei, blue hematoxylin, pale eosin.
    "demo-d": _Style(
        hema=(0.78, 0.60, 0.18), eosin=(0.20, 0.88, 0.43), h_conc=1.5, e_conc=0.2, radius=5.0,
        radius_sd=0.6, elongation=1.15, coverage=0.45, clustering=0.5, dense=0.35, vesicular=0.0,
        lumen=0.04,
    ),
}  # fmt: skip


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise; large sigmas are made at low resolution."""
    h, w = shape
    f = max(1, int(sigma // 3))  # filtering a coarse grid then upsampling is much cheaper
    small = rng.standard_normal((h // f + 2, w // f + 2), dtype=np.float32)
    small = ndi.gaussian_filter(small, sigma / f, mode="wrap")
    field = ndi.zoom(small, f, order=1)[:h, :w] if f > 1 else small[:h, :w]
    return (field - field.mean()) / (field.std() + 1e-6)


def _fibres(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Wavy collagen-like fibres: anisotropic noise sampled along a rotated, warped grid."""
    h, w = shape
    n = int(np.hypot(h, w)) + 16
    # Noise is stored at 1/4 resolution along the fibres, where it is smooth anyway.
    noise = rng.standard_normal((n, n // 4 + 2), dtype=np.float32)
    noise = ndi.gaussian_filter(noise, (rng.uniform(0.8, 1.3), rng.uniform(1.2, 2.5)))
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy -= h / 2
    xx -= w / 2
    warp = _smooth_noise(rng, shape, 16.0) * rng.uniform(2.0, 6.0)  # bends the fibres
    along = (xx * np.cos(theta) + yy * np.sin(theta) + n / 2) / 4
    across = yy * np.cos(theta) - xx * np.sin(theta) + warp + n / 2
    fib = ndi.map_coordinates(noise, [across, along], order=1, mode="wrap")
    fib /= fib.std() + 1e-6
    # Zero crossings of anisotropic noise are long thin wavy lines: the fibre edges.
    return 0.6 * np.clip(fib, -1.0, 2.0) + np.exp(-((fib / 0.35) ** 2))


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run on a downsampled copy (the result is smooth anyway)."""
    f = int(sigma // 2)
    if f < 2:
        return ndi.gaussian_filter(field, sigma)
    small = ndi.gaussian_filter(ndi.zoom(field, 1 / f, order=1), sigma / f)
    return ndi.zoom(small, np.divide(field.shape, small.shape), order=1)


def _stroma(
    rng: np.random.Generator, shape: tuple[int, int], style: _Style
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue fraction (0 in lumen, 1 in tissue) and stromal eosin OD with wavy fibres."""
    lumen_frac = float(np.clip(style.lumen * rng.uniform(0.0, 2.0), 0.0, 0.6))
    # Coarse blobs with a ragged edge from finer noise.
    field = _smooth_noise(rng, shape, 18.0) + 0.2 * _smooth_noise(rng, shape, 3.0)
    thr = np.quantile(field, 1.0 - lumen_frac) if lumen_frac > 0.01 else np.inf
    tissue = np.clip((thr - field) / 0.15, 0.0, 1.0)
    patch = _smooth_noise(rng, shape, 10.0)
    fibre_amp = 0.3 / (1.0 + np.exp(-2.0 * _smooth_noise(rng, shape, 20.0)))  # smooth patches
    eosin = style.e_conc * (0.8 + fibre_amp * _fibres(rng, shape)) * (1.0 + 0.2 * patch)
    return tissue, np.clip(eosin, 0.02, None)


def _place_nuclei(
    rng: np.random.Generator, tissue: np.ndarray, style: _Style
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (n, 2), radii (n,) and kinds (n,: 0 ordinary, 1 dense, 2 vesicular), draw order."""
    kind_p = [1.0 - style.dense - style.vesicular, style.dense, style.vesicular]
    mean_area = np.pi * style.radius**2
    n_target = int(style.coverage * rng.uniform(0.7, 1.3) * tissue.sum() / mean_area)
    n_cand = 6 * n_target + 10
    kinds = rng.choice(3, size=n_cand, p=kind_p)
    radii = rng.normal(style.radius, style.radius_sd, n_cand)
    radii = np.where(kinds == 1, 0.7 * radii, radii).clip(3.0, 14.0)
    # Only candidates on tissue compete; centres closer than r_i + r_j overlap or touch.
    placed = place_nuclei(rng, tissue >= 0.5, radii, n_target, clustering=style.clustering,
                          spread=3.5 * style.radius, min_sep=(0.65, 0.9))  # fmt: skip
    return placed.centres, radii[placed.index], kinds[placed.index]


def _draw_nuclei(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    kinds: np.ndarray,
    style: _Style,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render nuclei one by one inside their bounding boxes (`nucseg.data.shapes`).

    Returns:
        Hematoxylin OD inside nuclei, nucleus opacity (anti-aliased), and the instance map.

    """
    hema = np.zeros(shape, np.float32)
    alpha = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    # Chromatin texture: fine speckle plus coarser clumps, shared by all nuclei.
    chromatin = 0.6 * _smooth_noise(rng, shape, 0.8) + 0.5 * _smooth_noise(rng, shape, 2.0)
    n = len(radii)
    ratio = np.where(kinds == 1, rng.uniform(1.0, 1.2, n), rng.uniform(1.0, style.elongation, n))
    angles = rng.uniform(0, np.pi, n)
    # Boundary irregularity: harmonic k gets amplitude ~ 0.1 / k, scaled per nucleus.
    edges = boundary_table(*random_boundaries(rng, n, _HARMONICS), _HARMONICS)
    conc = style.h_conc * rng.uniform(0.75, 1.25, n) * np.array([1.0, 1.35, 0.6])[kinds]
    for fp in nucleus_footprints(shape, centres, radii, ratio, angles, edges):
        k, r, dy, dx, depth = fp.index, radii[fp.index], fp.dy, fp.dx, fp.depth
        inside = depth > 0
        opacity = np.clip(depth + 0.5, 0.0, 1.0)
        tex = chromatin[fp.box]
        rim = style.h_conc * np.exp(-((depth / 1.4) ** 2))  # darker nuclear membrane
        if kinds[k] == 1:
            value = conc[k] * (1.0 + 0.1 * tex)
        elif kinds[k] == 2:  # pale nucleoplasm, dark membrane, one or two nucleoli
            value = conc[k] * (1.0 + 0.25 * tex) + 0.5 * rim
            for _ in range(rng.integers(1, 3)):
                oy, ox = rng.normal(0, 0.3 * r, 2)
                d2 = (dy - oy) ** 2 + (dx - ox) ** 2
                value = value + 0.9 * style.h_conc * np.exp(-d2 / (2 * (0.12 * r + 0.5) ** 2))
        else:
            value = conc[k] * (1.0 + 0.35 * tex) + 0.2 * rim
        box_h, box_a = hema[fp.box], alpha[fp.box]
        box_h += opacity * (np.maximum(value, 0.1) - box_h)  # later nucleus on top
        np.maximum(box_a, opacity, out=box_a)
        labels[fp.box][inside] = k + 1
    return hema, alpha, labels


def make_tile(seed: int, size: int = 256, organ: str = "demo-a") -> tuple[np.ndarray, np.ndarray]:
    """Generate one H&E-like tile and its instance map.

    Args:
        seed: Random seed; the same (seed, size, organ) always gives identical arrays.
        size: Side of the square tile in pixels (nucleus sizes do not scale with it).
        organ: One of ``ORGANS``; sets stain colours, nucleus size and density.

    Returns:
        ``(image, instances)``: uint8 (size, size, 3) RGB and int32 (size, size) instance ids,
        0 = background, ids 1..n.

    Raises:
        ValueError: If ``organ`` is unknown or ``size`` is below 32.

    """
    if organ not in _STYLES:
        raise ValueError(f"unknown demo organ {organ!r}; expected one of {ORGANS}")
    if int(size) < 32:
        raise ValueError(f"demo tile size must be at least 32 pixels, got {size}")
    size = int(size)
    style = _STYLES[organ]
    rng = np.random.default_rng([int(seed), ORGANS.index(organ)])
    shape = (size, size)
    # Per-tile stain variation: jittered stain vectors and overall strengths.
    v_h = _unit(np.asarray(style.hema) + rng.normal(0, 0.03, 3))
    v_e = _unit(np.asarray(style.eosin) + rng.normal(0, 0.03, 3))
    v_d = _unit(np.asarray(_RUIFROK_D))
    tissue, eosin = _stroma(rng, shape, style)
    centres, radii, kinds = _place_nuclei(rng, tissue, style)
    hema_nuc, alpha, labels = _draw_nuclei(rng, shape, centres, radii, kinds, style)
    # Cytoplasm: a paler, purplish zone around nuclei that replaces fibrous stroma.
    cyto = np.clip(_blur(alpha, 1.2 * style.radius) * 2.5, 0.0, 1.0) * tissue
    cyto_e = 0.7 * style.e_conc * (1 + 0.1 * _smooth_noise(rng, shape, 2.0))
    eosin = eosin * (1 - cyto) + cyto_e * cyto
    hema = (0.1 + 0.12 * cyto) * style.h_conc * (1 + 0.3 * _smooth_noise(rng, shape, 3.0))
    eosin = eosin * tissue + 0.03
    hema = hema * tissue
    _add_red_cells(rng, eosin, hema_nuc)
    hema = hema * (1 - alpha) + hema_nuc
    eosin = eosin * (1 - 0.5 * alpha)
    s_h, s_e = rng.uniform(0.85, 1.15, 2)
    sigma = rng.uniform(0.7, 1.2)  # focus blur
    hema = ndi.gaussian_filter(hema * s_h, sigma)
    eosin = ndi.gaussian_filter(eosin * s_e, sigma)
    stains = np.stack([v_h, v_e, 0.02 * v_d]).astype(np.float32)
    od = hema[..., None] * stains[0] + eosin[..., None] * stains[1] + stains[2]
    rgb = 255.0 * np.exp(-np.log(10.0) * od) + 2.0 * rng.standard_normal(od.shape, np.float32)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return image, relabel_sequential(labels)[0]  # ids 1..n in draw order


def _add_red_cells(rng: np.random.Generator, eosin: np.ndarray, hema_nuc: np.ndarray) -> None:
    """Paint a few unlabelled red blood cells (bright eosin discs) where there is no nucleus."""
    h, w = eosin.shape
    for _ in range(rng.poisson(3.0 * h * w / 256**2)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3.0, 4.5)
        y0, y1 = max(0, int(cy - r - 2)), min(h, int(cy + r + 3))
        x0, x1 = max(0, int(cx - r - 2)), min(w, int(cx + r + 3))
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        disc = np.clip(r - np.sqrt(dy**2 + dx**2) + 0.5, 0, 1) * (hema_nuc[y0:y1, x0:x1] < 0.05)
        eosin[y0:y1, x0:x1] += 0.9 * disc


def write_demo_dataset(
    out: str | os.PathLike[str], n_train: int = 12, n_test: int = 6, size: int = 256, seed: int = 0
) -> Path:
    """Write a demo dataset in the shared MoNuSeg layout.

    Writes ``out/{train,test}/images/<id>.tif`` (RGB), ``out/organs.csv`` (``image_id,split,
    organ``) and, as in MoNuSeg, ImageScope XML ``out/<split>/annotations/<id>.xml`` for every
    test tile and odd-numbered training tile, 16-bit ``out/train/labels/<id>.png`` for the
    even-numbered ones. Training tile ``i`` has organ ``TRAIN_ORGANS[i % 3]``, test tile ``j``
    ``TEST_ORGANS[j % 4]`` ("demo-d" is test-only). Ids are ``DEMO-<letter>-<iii>``, ``iii``
    counted over train then test (``DEMO-a-000``, ``DEMO-b-001``, ...).

    Args:
        out: Output folder (created if needed; files with the same ids are replaced).
        n_train: Number of training tiles.
        n_test: Number of test tiles.
        size: Tile side in pixels.
        seed: Dataset seed; the same arguments always write identical files.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: If a count is negative or ``size`` is below 32.

    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"tile counts must be >= 0, got n_train={n_train}, n_test={n_test}")
    out = Path(out)
    rows = []
    plan = [("train", TRAIN_ORGANS[i % 3], i % 2 == 1) for i in range(n_train)]
    plan += [("test", TEST_ORGANS[j % 4], True) for j in range(n_test)]
    for index, (split, organ, as_xml) in enumerate(plan):
        image_id = f"DEMO-{organ.removeprefix('demo-')}-{index:03d}"
        tile_seed = int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])
        image, labels = make_tile(tile_seed, size=size, organ=organ)
        write_image(out / split / "images" / f"{image_id}.tif", image)
        xml = out / split / "annotations" / f"{image_id}.xml"
        png = out / split / "labels" / f"{image_id}.png"
        # Remove the other kind left by an earlier run: discover() would prefer a stale PNG.
        (png if as_xml else xml).unlink(missing_ok=True)
        if as_xml:
            write_instances_xml(xml, labels, image_id=image_id)
        else:
            write_label_map(png, labels)
        rows.append(f"{image_id},{split},{organ}\n")
    out.mkdir(parents=True, exist_ok=True)
    organs = "image_id,split,organ\n" + "".join(rows)
    write_bytes_atomic(out / "organs.csv", organs.encode("utf-8"))
    return out


_MARKER = "demo.json"


def demo_root(
    cache_dir: str | os.PathLike[str] | None = None, *, n_train: int = 12, n_test: int = 6,
    size: int = 256, seed: int = 0,
) -> Path:  # fmt: skip
    """Return a cached demo dataset folder, generating it on first use.

    The folder is ``<cache>/demo-<DEMO_VERSION>`` for the default arguments (with a suffix
    naming any non-default ones), where ``<cache>`` is ``cache_dir``, else ``$NUCSEG_CACHE``,
    else ``~/.cache/nucseg``. It is written into a temporary sibling and renamed into place, so
    a half-written dataset is never returned, and concurrent callers are safe.

    Args:
        cache_dir: Base cache folder (see above).
        n_train: Number of training tiles.
        n_test: Number of test tiles.
        size: Tile side in pixels.
        seed: Dataset seed.

    Returns:
        The dataset root, in the layout written by ``write_demo_dataset``.

    """
    if cache_dir is None:
        cache_dir = os.environ.get("NUCSEG_CACHE") or Path.home() / ".cache" / "nucseg"
    base = Path(cache_dir).expanduser()
    args = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
    name = f"demo-{DEMO_VERSION}"
    if args != {"n_train": 12, "n_test": 6, "size": 256, "seed": 0}:
        name += f"-n{n_train}-{n_test}-s{size}-seed{seed}"
    final = base / name
    marker = {"version": DEMO_VERSION, **args}
    if _marker_ok(final, marker):
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        write_demo_dataset(tmp, **args)
        (tmp / _MARKER).write_text(json.dumps(marker))
        if final.exists() and not _marker_ok(final, marker):
            shutil.rmtree(final)  # stale or damaged cache entry of ours
        try:
            os.rename(tmp, final)
        except OSError:
            if not _marker_ok(final, marker):  # not a concurrent writer that won: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _marker_ok(folder: Path, marker: dict[str, object]) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False
