"""Nucleus shapes: the geometry shared by the demo tiles and random masks.

A nucleus is an ellipse whose boundary is perturbed by a few Fourier harmonics. In the
ellipse's normalised frame ``(u, v)`` (where the unperturbed ellipse is the unit circle) the
boundary lies at radius ``edge(psi) = 1 + sum_k amp_k cos(k psi + phase_k)``; ``edge`` is
tabulated on `BOUNDARY_GRID` and interpolated. The ellipse has equivalent radius ``r``
(semi-axes ``r * sqrt(ratio)`` and ``r / sqrt(ratio)``) and its major axis points along
``(cos angle, sin angle)`` in ``(x = column, y = row)`` image coordinates.

- `random_boundaries`, `boundary_table`: harmonic boundary perturbations;
- `profile_area`, `profile_solidity`: area and solidity of a perturbed boundary in the
  normalised frame (solidity is affine-invariant, so the same for every ellipse built on it);
  `solidity_table`, `scale_for_solidity`: boundaries scaled to a target solidity;
- `reach_table`: how far each nucleus extends along every image direction;
- `nucleus_footprints`, `render_instances`: rasterisation to an instance map.

`nucseg.data.placement` places these shapes; `nucseg.data.demo` paints H&E around them;
`nucseg.synth.masks` drives both from the statistics measured on annotated nuclei.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOUNDARY_GRID",
    "REACH_DIRECTIONS",
    "Footprint",
    "boundary_table",
    "nucleus_footprints",
    "profile_area",
    "profile_solidity",
    "random_boundaries",
    "reach_table",
    "render_instances",
    "scale_for_solidity",
    "solidity_table",
]

# Angles (radians) at which boundary radii are tabulated; both ends are the same direction.
BOUNDARY_GRID = np.linspace(-np.pi, np.pi, 73)
REACH_DIRECTIONS = 72  # directions of reach_table, from 0 in steps of 5 degrees


def random_boundaries(
    rng: np.random.Generator,
    n: int,
    harmonics: Sequence[int] = (2, 3, 4, 5, 6),
    strength: float = 0.1,
    spread: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random harmonic amplitudes and phases: harmonic k gets ``U(0, 1) * strength / k``.

    Args:
        rng: Random generator (consumed in a fixed order: amplitudes, scales, phases).
        n: Number of nuclei.
        harmonics: Harmonic orders k; order 2 also changes elongation, orders >= 3 do not.
        strength: Overall amplitude.
        spread: Range of a per-nucleus uniform factor on all its amplitudes.

    Returns:
        ``(amps, phases)``, each (n, len(harmonics)).
    """
    k = np.asarray(harmonics, float)
    amps = rng.uniform(0, 1, (n, k.size)) * (strength / k) * rng.uniform(*spread, (n, 1))
    phases = rng.uniform(0, 2 * np.pi, (n, k.size))
    return amps, phases


def boundary_table(amps: np.ndarray, phases: np.ndarray, harmonics: Sequence[int]) -> np.ndarray:
    """Relative boundary radius of each nucleus at the angles of `BOUNDARY_GRID`.

    Args:
        amps: (n, K) harmonic amplitudes.
        phases: (n, K) harmonic phases.
        harmonics: The K harmonic orders.

    Returns:
        (n, len(BOUNDARY_GRID)) array, 1 for an unperturbed ellipse.
    """
    k = np.asarray(harmonics)
    waves = np.cos(k[:, None] * BOUNDARY_GRID + phases[:, :, None])
    return 1.0 + (amps[:, :, None] * waves).sum(1)


def _polygon_area(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shoelace area of closed polygons given as rows of vertex coordinates."""
    return 0.5 * (x * np.roll(y, -1, -1) - y * np.roll(x, -1, -1)).sum(-1)


def profile_area(edges: np.ndarray) -> np.ndarray:
    """Area of boundaries tabulated by `boundary_table`, in the normalised frame.

    A nucleus of equivalent radius ``r`` built on the boundary has area ``r**2`` times this
    (``pi`` for an unperturbed ellipse, up to the polygon approximation).

    Args:
        edges: (n, len(BOUNDARY_GRID)) relative boundary radii.

    Returns:
        (n,) areas.
    """
    psi = BOUNDARY_GRID[:-1]
    return _polygon_area(edges[:, :-1] * np.cos(psi), edges[:, :-1] * np.sin(psi))


def profile_solidity(edges: np.ndarray, n_directions: int = 96) -> np.ndarray:
    """Solidity (area over convex-hull area) of boundaries tabulated by `boundary_table`.

    Solidity is invariant under affine maps, so it is the same for every ellipse built on the
    boundary. The hull is the polygon through the boundary's support points in
    ``n_directions`` directions (a hull vertex between two directions is missed, which makes
    the hull a little small; 96 directions are plenty for harmonics up to about 8).

    Args:
        edges: (n, len(BOUNDARY_GRID)) relative boundary radii.
        n_directions: Directions at which support points are found.

    Returns:
        (n,) solidity in (0, 1]; 1 for convex boundaries.
    """
    psi = BOUNDARY_GRID[:-1]
    x, y = edges[:, :-1] * np.cos(psi), edges[:, :-1] * np.sin(psi)
    phi = np.linspace(0, 2 * np.pi, n_directions, endpoint=False)
    # The vertex furthest along each direction; consecutive repeats add no area.
    support = np.argmax(
        x[:, None, :] * np.cos(phi)[:, None] + y[:, None, :] * np.sin(phi)[:, None], -1
    )
    hx, hy = np.take_along_axis(x, support, 1), np.take_along_axis(y, support, 1)
    return np.minimum(_polygon_area(x, y) / _polygon_area(hx, hy), 1.0)


@functools.lru_cache(maxsize=8)
def solidity_table(
    harmonics: tuple[int, ...], n: int = 160, steps: int = 13, seed: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed random boundaries with their solidity at increasing amplitude scales.

    Solidity is affine-invariant, so one table serves every nucleus: a nucleus picks a row,
    turns it (adds ``k * turn`` to the phases) and scales its amplitudes by
    `scale_for_solidity` to reach a target solidity. Cached; the arrays are read-only.

    Args:
        harmonics: Harmonic orders (see `random_boundaries`, strength 0.1, no spread).
        n: Number of boundaries.
        steps: Number of scales, from 0 to where the boundary comes within 0.35 of the centre.
        seed: Seed of the boundaries.

    Returns:
        ``(amps, phases, scales, solidity)``: (n, K), (n, K), (n, steps), (n, steps); the
        solidity is made non-increasing along the scales.
    """
    amps, phases = random_boundaries(np.random.default_rng(seed), n, harmonics, 0.1, (1.0, 1.0))
    scales = np.linspace(0.0, 1.0, steps)[None, :] * (0.65 / amps.sum(1))[:, None]
    edges = boundary_table(np.repeat(amps, steps, 0) * scales.reshape(-1, 1),
                           np.repeat(phases, steps, 0), harmonics)  # fmt: skip
    solidity = profile_solidity(edges).reshape(n, steps)
    solidity[:, 0] = 1.0
    out = amps, phases, scales, np.minimum.accumulate(solidity, axis=1)
    for a in out:
        a.flags.writeable = False
    return out


def scale_for_solidity(solidity: np.ndarray, scales: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Largest amplitude scale whose solidity is still at least ``target``, row by row.

    Solidity is 1 up to the scale where a boundary first turns concave and falls beyond, so
    a target of 1 gives the most irregular boundary that stays convex.

    Args:
        solidity: (n, S) solidity, non-increasing along each row (rows of `solidity_table`).
        scales: (n, S) the increasing scales it was computed at.
        target: (n,) target solidity, at most 1.

    Returns:
        (n,) scales, linearly interpolated (the last scale where even that is solid enough).
    """
    k = (solidity >= target[:, None]).sum(1) - 1
    last = k >= scales.shape[1] - 1
    k = np.clip(k, 0, scales.shape[1] - 2)
    rows = np.arange(len(k))
    s0, s1 = solidity[rows, k], solidity[rows, k + 1]
    frac = np.clip((s0 - target) / np.maximum(s0 - s1, 1e-12), 0.0, 1.0)
    scale = scales[rows, k] + frac * (scales[rows, k + 1] - scales[rows, k])
    return np.where(last, scales[:, -1], scale)


def reach_table(
    radii: np.ndarray, ratios: np.ndarray, angles: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Distance in pixels from each nucleus's centre to its boundary along image directions.

    Args:
        radii: (n,) equivalent radii.
        ratios: (n,) major over minor axis, >= 1.
        angles: (n,) major-axis angles (radians, ``(cos, sin)`` along ``(x, y)``).
        edges: (n, len(BOUNDARY_GRID)) relative boundary radii.

    Returns:
        (n, 72) distances along the directions ``2 pi d / 72`` (angle in the same convention).
    """
    theta = np.linspace(0, 2 * np.pi, REACH_DIRECTIONS, endpoint=False)
    a = (radii * np.sqrt(ratios))[:, None]
    b = (radii / np.sqrt(ratios))[:, None]
    local = theta[None, :] - angles[:, None]
    u, v = np.cos(local) / a, np.sin(local) / b  # a unit step along theta, in the (u, v) frame
    pos = (np.arctan2(v, u) + np.pi) / (2 * np.pi) * (BOUNDARY_GRID.size - 1)
    i = np.minimum(pos.astype(int), BOUNDARY_GRID.size - 2)
    frac = pos - i
    edge = np.take_along_axis(edges, i, 1) * (1 - frac) + np.take_along_axis(edges, i + 1, 1) * frac
    return edge / np.hypot(u, v)


@dataclass(frozen=True)
class Footprint:
    """One nucleus rasterised inside its bounding box (see `nucleus_footprints`).

    Attributes:
        index: The nucleus's position in the arrays passed in.
        box: ``(rows, columns)`` slices of the box in the image.
        dy: (h, 1) row offsets of the box's pixels from the centre.
        dx: (1, w) column offsets.
        depth: (h, w) roughly the distance (pixels) inside the boundary; > 0 inside.
    """

    index: int
    box: tuple[slice, slice]
    dy: np.ndarray
    dx: np.ndarray
    depth: np.ndarray


def nucleus_footprints(
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    ratios: np.ndarray,
    angles: np.ndarray,
    edges: np.ndarray,
) -> Iterator[Footprint]:
    """Rasterise nuclei one by one, each inside its own bounding box.

    Args:
        shape: Image (H, W).
        centres: (n, 2) (row, column) centres.
        radii: (n,) equivalent radii.
        ratios: (n,) major over minor axis, >= 1.
        angles: (n,) major-axis angles.
        edges: (n, len(BOUNDARY_GRID)) relative boundary radii.

    Yields:
        A `Footprint` per nucleus, in order.
    """
    h, w = shape
    for k in range(len(radii)):
        r, (cy, cx) = radii[k], centres[k]
        a, b = r * np.sqrt(ratios[k]), r / np.sqrt(ratios[k])
        ext = int(np.ceil(a * edges[k].max())) + 2
        y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        cos, sin = np.cos(angles[k]), np.sin(angles[k])
        u, v = (dx * cos + dy * sin) / a, (dy * cos - dx * sin) / b
        rho = np.sqrt(u * u + v * v)
        edge = np.interp(np.arctan2(v, u), BOUNDARY_GRID, edges[k])
        depth = (edge - rho) * r  # roughly the distance to the boundary in pixels, > 0 inside
        yield Footprint(k, (slice(y0, y1), slice(x0, x1)), dy, dx, depth)


def render_instances(
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    ratios: np.ndarray,
    angles: np.ndarray,
    edges: np.ndarray,
    overlap: str = "deeper",
) -> np.ndarray:
    """Instance map of nuclei: nucleus ``k`` gets id ``k + 1`` where it owns pixels.

    Args:
        shape: Image (H, W).
        centres: (n, 2) (row, column) centres.
        radii: (n,) equivalent radii.
        ratios: (n,) major over minor axis, >= 1.
        angles: (n,) major-axis angles.
        edges: (n, len(BOUNDARY_GRID)) relative boundary radii.
        overlap: Who owns a pixel inside two nuclei: ``"deeper"`` the one it lies deeper in
            (overlapping nuclei meet along a flat shared boundary, as pressed nuclei do), or
            ``"last"`` the later one (it lies on top).

    Returns:
        int32 (H, W) map, 0 = background. Ids of nuclei that own no pixel are absent.
    """
    if overlap not in ("deeper", "last"):
        raise ValueError(f"overlap must be 'deeper' or 'last', got {overlap!r}")
    labels = np.zeros(shape, np.int32)
    best = np.zeros(shape, np.float32)
    for fp in nucleus_footprints(shape, centres, radii, ratios, angles, edges):
        inside = fp.depth > 0
        if overlap == "deeper":
            inside &= fp.depth > best[fp.box]
            best[fp.box][inside] = fp.depth[inside]
        labels[fp.box][inside] = fp.index + 1
    return labels
