"""Placing nuclei on a canvas: the placer shared by the demo tiles and random masks.

`place_nuclei` draws clustered candidate positions and accepts nuclei greedily, in one of two
modes: a minimum centre separation (nuclei may overlap; the demo tiles), or contact (a target
fraction of nuclei touch a neighbour, the others keep clear, checked on the pixels; random
masks). `smooth_field` makes the smooth random maps it can take: where nuclei may lie, and
how they are turned so that neighbours align. Shapes are those of `nucseg.data.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nucseg.data.shapes import REACH_DIRECTIONS, Footprint, nucleus_footprints, reach_table

__all__ = ["Placement", "place_nuclei", "smooth_field"]


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit variance (blobs of about ``sigma`` pixels).

    Made on a grid coarser by ``sigma // 4`` and upsampled (the field is smooth anyway).
    """
    f = max(1, int(sigma // 4))
    coarse = rng.standard_normal((shape[0] // f + 2, shape[1] // f + 2))
    coarse = ndi.gaussian_filter(coarse, sigma / f, mode="wrap")
    field = (
        ndi.zoom(coarse, f, order=1)[: shape[0], : shape[1]]
        if f > 1
        else coarse[: shape[0], : shape[1]]
    )
    return (field - field.mean()) / (field.std() + 1e-12)


@dataclass(frozen=True)
class Placement:
    """Where `place_nuclei` put the nuclei.

    Attributes:
        centres: (m, 2) float (row, column) centres, in acceptance (drawing) order.
        index: (m,) index of each placed nucleus among the candidates passed in.
        touching: (m,) whether the placement put the nucleus in contact with another (all
            False in minimum-separation mode, where contact is left to overlap).
        turns: (m,) rotation (radians, a multiple of 5 degrees) to add to each nucleus's
            angle, from ``rotation`` at its centre (zeros without one).
    """

    centres: np.ndarray
    index: np.ndarray
    touching: np.ndarray
    turns: np.ndarray


def _positions(
    rng: np.random.Generator, shape: tuple[int, int], n: int, n_clusters: int,
    clustering: float, spread: float,
) -> np.ndarray:  # fmt: skip
    """A mixture of a Thomas cluster process and uniform points (may fall off the canvas)."""
    h, w = shape
    centres = rng.uniform((0, 0), (h, w), (n_clusters, 2))
    which = rng.integers(0, n_clusters, n)
    spreads = spread * rng.uniform(0.6, 1.4, n_clusters)
    clustered = centres[which] + rng.normal(0, 1, (n, 2)) * spreads[which, None]
    uniform = rng.uniform((0, 0), (h, w), (n, 2))
    return np.where((rng.random(n) < clustering)[:, None], clustered, uniform)


def _on_canvas(pos: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    h, w = allowed.shape
    valid = (pos >= 0).all(1) & (pos[:, 0] < h) & (pos[:, 1] < w)
    valid[valid] = allowed[pos[valid, 0].astype(int), pos[valid, 1].astype(int)]
    return valid


def place_nuclei(
    rng: np.random.Generator,
    allowed: np.ndarray,
    radii: np.ndarray,
    n_target: int,
    *,
    clustering: float,
    spread: float,
    cluster_size: int = 12,
    min_sep: tuple[float, float] = (0.65, 0.9),
    shapes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    touching: float | None = None,
    overlap: tuple[float, float] = (1.0, 3.0),
    tries: int = 30,
    rotation: np.ndarray | None = None,
) -> Placement:
    """Place nuclei on a canvas: clustered candidates, accepted greedily.

    Candidate positions mix a cluster process (``n_target // cluster_size`` cluster centres,
    Gaussian scatter of about ``spread`` pixels) with uniform points, in proportion
    ``clustering``; only positions where ``allowed`` is true count. Two modes:

    - minimum separation (``touching`` is None, the demo tiles): candidate ``i`` has radius
      ``radii[i]`` and one position; it is accepted unless its centre is closer than
      ``f * (r_i + r_j)`` to an accepted one (``f ~ U(*min_sep)``; ``f < 1`` lets nuclei
      overlap). Rejected candidates are dropped, so big nuclei are kept a little less often.
    - contact (``touching`` and ``shapes`` given): candidates are accepted in order, each
      trying up to ``tries`` positions. While fewer than ``touching`` of the placed nuclei
      touch another, a candidate is moved against the placed nucleus nearest its position,
      overlapping it by ``U(*overlap)`` pixels along the line of centres; otherwise it must
      not touch any. Touching is checked on the pixels (4-neighbourhood, as
      `nucseg.data.stats.touching_ids`) after a quick test on the shapes' reach.

    Args:
        rng: Random generator.
        allowed: (H, W) bool map of where centres may fall; its shape is the canvas.
        radii: (n,) equivalent radii of the candidates, in the order they are tried.
        n_target: Stop after placing this many.
        clustering: Fraction of candidate positions drawn from the cluster process.
        spread: Mean cluster scatter (pixels).
        cluster_size: Candidates per cluster centre (sets the number of clusters).
        min_sep: Separation factor range of the minimum-separation mode.
        shapes: ``(ratios, angles, edges)`` of the candidates (contact mode; see
            `nucleus_footprints`).
        touching: Target fraction of placed nuclei in contact with another (contact mode).
        overlap: Overlap range (pixels) of nuclei placed in contact (contact mode).
        tries: Positions tried per candidate before it is skipped (contact mode).
        rotation: (H, W) angle (radians) by which a nucleus centred there is turned, e.g. a
            smooth field that aligns neighbours (contact mode).

    Returns:
        The `Placement`; fewer than ``n_target`` nuclei when the candidates run out.
    """
    n_cand = len(radii)
    n_clusters = max(1, n_target // cluster_size)
    if touching is None:
        pos = _positions(rng, allowed.shape, n_cand, n_clusters, clustering, spread)
        # Allowing centres closer than r_i + r_j gives overlapping/touching nuclei.
        factor = rng.uniform(*min_sep, n_cand)
        valid = _on_canvas(pos, allowed)
        index = np.flatnonzero(valid)
        pos, radii, factor = pos[valid], radii[valid], factor[valid]
        keep = np.zeros(len(pos), bool)
        acc_pos, acc_r = np.empty((n_target, 2)), np.empty(n_target)
        n = 0
        for i in range(len(pos)):
            if n >= n_target:
                break
            d2 = ((acc_pos[:n] - pos[i]) ** 2).sum(1)
            if n and (d2 < (factor[i] * (acc_r[:n] + radii[i])) ** 2).any():
                continue
            acc_pos[n], acc_r[n], keep[i] = pos[i], radii[i], True
            n += 1
        m = int(keep.sum())
        return Placement(pos[keep], index[keep], np.zeros(m, bool), np.zeros(m))
    if shapes is None:
        raise ValueError("contact placement (touching=...) needs the candidates' shapes")
    if rotation is None:
        rotation = np.zeros(allowed.shape)
    # Enough positions for ``tries`` per nucleus once those outside ``allowed`` are dropped.
    n_pos = int((tries * n_target + 10) / max(float(allowed.mean()), 0.05))
    pos = _positions(rng, allowed.shape, n_pos, n_clusters, clustering, spread)
    pos = pos[_on_canvas(pos, allowed)]
    return _Contacts(allowed, radii, *shapes, rotation, n_target).place(
        pos, rng.uniform(*overlap, len(pos)), touching, overlap[1], tries
    )


class _Contacts:
    """The contact mode of `place_nuclei`: the state of a placement in progress."""

    def __init__(
        self, allowed: np.ndarray, radii: np.ndarray, ratios: np.ndarray, angles: np.ndarray,
        edges: np.ndarray, rotation: np.ndarray, n_target: int,
    ) -> None:  # fmt: skip
        self.allowed, self.rotation = allowed, rotation
        self.radii, self.ratios, self.angles, self.edges = radii, ratios, angles, edges
        self.reach = reach_table(radii, ratios, angles, edges)
        self.outer = self.reach.max(1)
        self.labels = np.zeros(allowed.shape, np.int32)  # placed nuclei, first one wins
        self.centres, self.index = np.empty((n_target, 2)), np.empty(n_target, int)
        self.turn = np.empty(n_target, int)  # in reach-table steps
        self.touches = np.zeros(n_target, bool)
        self.n = 0

    def along(self, rows: np.ndarray, turns: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Reach of nuclei turned by ``turns`` steps along direction steps ``d``."""
        return self.reach[rows, (d - turns) % REACH_DIRECTIONS]

    def contacts(self, j: int, c: np.ndarray, turn: int) -> tuple[Footprint, np.ndarray] | None:
        """Footprint of nucleus j at c and the placed ids it would touch; None if off canvas."""
        angle = self.angles[j : j + 1] + turn * (2 * np.pi / REACH_DIRECTIONS)
        one = slice(j, j + 1)
        fp = next(nucleus_footprints(self.labels.shape, c[None], self.radii[one],
                                     self.ratios[one], angle, self.edges[one]))  # fmt: skip
        inside = fp.depth > 0
        if not inside.any():
            return None
        grown = inside.copy()  # its pixels and their 4-neighbours
        grown[1:] |= inside[:-1]
        grown[:-1] |= inside[1:]
        grown[:, 1:] |= inside[:, :-1]
        grown[:, :-1] |= inside[:, 1:]
        return fp, np.unique(self.labels[fp.box][grown])

    def place(
        self, pos: np.ndarray, dips: np.ndarray, touching: float, deepest: float, tries: int
    ) -> Placement:
        """Try the candidates in order at the given positions (see `place_nuclei`)."""
        to_index, half = REACH_DIRECTIONS / (2 * np.pi), REACH_DIRECTIONS // 2
        h, w = self.labels.shape
        p = touched = 0
        for j in range(len(self.radii)):
            if self.n >= len(self.centres) or p >= len(pos):
                break
            for _ in range(tries):
                if p >= len(pos):
                    break
                c, dip, n = pos[p], dips[p], self.n
                p += 1
                # A turned nucleus reaches along d as far as the unturned one along d - turn.
                turn = int(round(self.rotation[int(c[0]), int(c[1])] * to_index))
                # Contact is wanted while the placed nuclei touch less often than the target.
                contact = n > 0 and touched < touching * (n + 1)
                if contact:
                    anchor = int(np.argmin(((self.centres[:n] - c) ** 2).sum(1)))
                    dy, dx = c - self.centres[anchor]
                    theta = np.arctan2(dy, dx)  # from the anchor towards c
                    d = np.array([int(round(theta * to_index))])
                    dist = (self.along(self.index[[anchor]], self.turn[[anchor]], d)
                            + self.along(np.array([j]), turn, d + half) - dip)[0]  # fmt: skip
                    c = self.centres[anchor] + dist * np.array([np.sin(theta), np.cos(theta)])
                    if not (0 <= c[0] < h and 0 <= c[1] < w and self.allowed[int(c[0]), int(c[1])]):
                        continue
                diff = self.centres[:n] - c
                dist = np.hypot(diff[:, 0], diff[:, 1])
                near = np.flatnonzero(dist < self.outer[self.index[:n]] + self.outer[j] + 2)
                if near.size:
                    # Quick test along the lines of centres: no overlap, or a shallow one.
                    d = np.rint(np.arctan2(diff[near, 0], diff[near, 1]) * to_index).astype(int)
                    slack = (dist[near] - self.along(self.index[near], self.turn[near], d + half)
                             - self.along(np.full(near.size, j), turn, d))  # fmt: skip
                    if (slack < (-deepest - 1.0 if contact else 0.0)).any():
                        continue
                found = self.contacts(j, c, turn)
                if found is None:
                    continue
                fp, ids = found
                ids = ids[ids > 0] - 1
                if ids.size and not contact:
                    continue
                region = self.labels[fp.box]
                region[(fp.depth > 0) & (region == 0)] = n + 1
                self.centres[n], self.index[n], self.turn[n] = c, j, turn
                touched += int((~self.touches[ids]).sum()) + (ids.size > 0)
                self.touches[ids] = True
                self.touches[n] = ids.size > 0
                self.n += 1
                break
        n = self.n
        turns = self.turn[:n] * (2 * np.pi / REACH_DIRECTIONS)
        return Placement(
            self.centres[:n].copy(), self.index[:n].copy(), self.touches[:n].copy(), turns
        )
