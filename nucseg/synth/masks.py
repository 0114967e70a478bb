"""Random nucleus instance masks whose statistics follow annotated ones, per organ.

Measure annotated nuclei (`measure_nuclei`), fit a `MaskStatistics` per organ
(`fit_mask_statistics`), sample masks (`random_mask`) with the placer of
`nucseg.data.placement` and the shapes of `nucseg.data.shapes`, and compare generated with
real nuclei feature by feature (`compare_statistics`); measuring and comparing live in
`nucseg.synth.mask_features` and are re-exported here.

The sampler is hierarchical, because images differ (MoNuSeg kidney: 350 nuclei of about
300 px in some images, 1800 of 80 px in others). A mask first takes the density, mean log
area, touching fraction and Clark-Evans ratio of one measured image, jittered (a smoothed
bootstrap, which keeps their correlation), and a dominant orientation. Each nucleus then
draws its log area around that mean, its eccentricity and solidity from the measured
distributions, and its orientation around the dominant one, turned further by a smooth
random field so that neighbours align as in the data. Placement puts the drawn fraction of
nuclei in contact with a neighbour; where it comes out more regular than the drawn
Clark-Evans ratio, it is redone with the nuclei confined to part of the canvas (lumen and
stroma elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from skimage.segmentation import relabel_sequential

from nucseg.data.placement import Placement, place_nuclei, smooth_field
from nucseg.data.shapes import (
    boundary_table,
    profile_area,
    render_instances,
    scale_for_solidity,
    solidity_table,
)
from nucseg.synth.mask_features import (
    SynthError,
    compare_statistics,
    expected_nn_distance,
    image_features,
    measure_nuclei,
)

__all__ = [
    "QUANTILE_LEVELS",
    "MaskStatistics",
    "SynthError",
    "compare_statistics",
    "fit_mask_statistics",
    "image_features",
    "measure_nuclei",
    "random_mask",
    "random_masks",
    "statistics_for",
]

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 41)  # levels of the stored quantile tables
_ORIENTATION_BINS = 18
_HARMONICS = (3, 4, 5, 6, 7, 8)  # no 2nd harmonic: it would change the sampled elongation
# Rendered unperturbed ellipses have skimage solidity P = 1 - c * area**p * (minor/major)**q
# (staircase edges; fitted on 1500 ellipses of 20-3000 px). A boundary of solidity s renders
# to about s * P + b * (1 - s) + d (fitted on 2000 nuclei); the sampler inverts this.
_PIXEL_SOLIDITY = (0.125, -0.258, -0.44)
_RENDER_SOLIDITY = (0.077, -0.003)
_SPREAD = 3.5  # cluster scatter in median nucleus radii, as in the demo tiles
_CLUSTERING = 0.5  # fraction of candidate positions from the cluster process
_OPEN_SCALE = 40.0  # pixels; smoothing of the field whose low part is open to nuclei
_OPEN_EXPONENT = 0.25  # the Clark-Evans ratio falls about as open_fraction**0.25
_TURN_SCALE = 30.0  # pixels; smoothing of the orientation field


@dataclass(frozen=True)
class MaskStatistics:
    """Measured statistics of annotated nuclei of one organ (or "all"); see `fit_mask_statistics`.

    Areas are in pixels, orientations in radians as ``skimage.measure.regionprops`` gives
    them (from the row axis, in [-pi/2, pi/2]), densities in nuclei per 10**6 pixels.
    Quantile tables are at `QUANTILE_LEVELS`; per-image tuples have one value per image.

    Attributes:
        organ: Organ name, or "all".
        n_images: Images measured.
        n_nuclei: Nuclei measured.
        log_area_mean: Mean log area over all nuclei.
        log_area_std: Its standard deviation.
        log_area_residual_quantiles: Quantiles of log area minus its image's mean.
        eccentricity_quantiles: Quantiles of the eccentricity.
        solidity_quantiles: Quantiles of the solidity.
        orientation_histogram: Fractions of nuclei in 18 equal orientation bins.
        orientation_coherence: Mean over images of the resultant length of doubled
            orientations (0: no preferred direction in an image), its ``1 / n`` bias removed.
        neighbour_alignment: Mean ``cos(2 * angle difference)`` of nuclei and their nearest
            neighbours, both with eccentricity above 0.6 (0: unrelated, 1: parallel).
        density_mean: Mean nuclei per megapixel over images.
        density_std: Its standard deviation over images.
        touching_fraction: Fraction of nuclei sharing an edge with another (all nuclei).
        clark_evans_mean: Mean over images of the Clark-Evans ratio (see `image_features`;
            < 1 clustered, > 1 regular).
        clark_evans_std: Its standard deviation over images.
        nn_distance_quantiles: Quantiles of centroid nearest-neighbour distances (pixels).
        image_densities: Nuclei per megapixel of each image.
        image_log_area_means: Mean log area of each image.
        image_touching_fractions: Touching fraction of each image.
        image_clark_evans: Clark-Evans ratio of each image.
    """

    organ: str
    n_images: int
    n_nuclei: int
    log_area_mean: float
    log_area_std: float
    log_area_residual_quantiles: tuple[float, ...]
    eccentricity_quantiles: tuple[float, ...]
    solidity_quantiles: tuple[float, ...]
    orientation_histogram: tuple[float, ...]
    orientation_coherence: float
    neighbour_alignment: float
    density_mean: float
    density_std: float
    touching_fraction: float
    clark_evans_mean: float
    clark_evans_std: float
    nn_distance_quantiles: tuple[float, ...]
    image_densities: tuple[float, ...]
    image_log_area_means: tuple[float, ...]
    image_touching_fractions: tuple[float, ...]
    image_clark_evans: tuple[float, ...]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                v = np.asarray(value, float)
                want = {"_quantiles": QUANTILE_LEVELS.size, "_histogram": _ORIENTATION_BINS}
                size = next((n for end, n in want.items() if f.name.endswith(end)), self.n_images)
                if v.shape != (size,) or not np.isfinite(v).all():
                    raise SynthError(f"{self.organ}: {f.name} needs {size} finite numbers")
                if f.name.endswith("_quantiles") and (np.diff(v) < 0).any():
                    raise SynthError(f"{self.organ}: {f.name} must be non-decreasing")
            elif isinstance(value, float) and not np.isfinite(value):
                raise SynthError(f"{self.organ}: {f.name} is {value}")
        if self.n_images < 1 or min(self.image_densities) <= 0:
            raise SynthError(f"{self.organ}: needs at least one image, with nuclei")

    def to_dict(self) -> dict[str, object]:
        """Plain types only (lists for tuples), for JSON or YAML."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MaskStatistics:
        """Inverse of `to_dict`.

        Raises:
            SynthError: If keys are missing or unknown, or a value is malformed.
        """
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise SynthError(f"mask statistics: missing keys {missing}, unknown keys {unknown}")
        try:
            return cls(**{k: tuple(map(float, v)) if isinstance(v, (list, tuple)) else v
                          for k, v in data.items()})  # fmt: skip
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SynthError):
                raise
            raise SynthError(f"mask statistics: {exc}") from exc


def _quantiles(values: pd.Series) -> tuple[float, ...]:
    v = values.dropna().to_numpy(float)
    return (
        tuple(np.quantile(v, QUANTILE_LEVELS).tolist()) if v.size else (0.0,) * len(QUANTILE_LEVELS)
    )


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _floats(values: pd.Series) -> tuple[float, ...]:
    return tuple(values.astype(float).tolist())


def _fit(nuclei: pd.DataFrame, images: pd.DataFrame, organ: str) -> MaskStatistics:
    log_area = pd.Series(np.log(nuclei.area.to_numpy(float)))
    residual = log_area - log_area.groupby(nuclei.image_id.to_numpy()).transform("mean")
    hist, _ = np.histogram(nuclei.orientation, _ORIENTATION_BINS, range=(-np.pi / 2, np.pi / 2))
    alignment = nuclei.nn_alignment.mean()
    return MaskStatistics(
        organ=organ,
        n_images=len(images),
        n_nuclei=len(nuclei),
        log_area_mean=float(log_area.mean()),
        log_area_std=float(log_area.std(ddof=0)),
        log_area_residual_quantiles=_quantiles(residual),
        eccentricity_quantiles=_quantiles(nuclei.eccentricity),
        solidity_quantiles=_quantiles(nuclei.solidity),
        orientation_histogram=tuple((hist / max(hist.sum(), 1)).tolist()),
        orientation_coherence=float(images.orientation_coherence.mean()),
        neighbour_alignment=float(alignment) if np.isfinite(alignment) else 0.0,
        density_mean=float(images.per_megapixel.mean()),
        density_std=_sd(images.per_megapixel),
        touching_fraction=float(nuclei.touching.mean()),
        clark_evans_mean=float(images.clark_evans.fillna(1.0).mean()),
        clark_evans_std=_sd(images.clark_evans.dropna()),
        nn_distance_quantiles=_quantiles(nuclei.nn_distance),
        image_densities=_floats(images.per_megapixel),
        image_log_area_means=_floats(images.log_area_mean),
        image_touching_fractions=_floats(images.touching_fraction),
        image_clark_evans=_floats(images.clark_evans.fillna(1.0)),
    )


def fit_mask_statistics(samples: Iterable[object] | pd.DataFrame) -> dict[str, MaskStatistics]:
    """Fit `MaskStatistics` to annotated nuclei, per organ and over all of them.

    Args:
        samples: ``Sample``-like objects (see `measure_nuclei`), or a `measure_nuclei` table
            (to measure once, then fit and compare).

    Returns:
        ``{"all": ..., organ: ..., ...}``.

    Raises:
        SynthError: If there are no nuclei.
    """
    nuclei = samples if isinstance(samples, pd.DataFrame) else measure_nuclei(samples)
    if nuclei.empty:
        raise SynthError("no nuclei to fit mask statistics to")
    images = image_features(nuclei)
    out = {"all": _fit(nuclei, images, "all")}
    for organ, frame in nuclei.groupby("organ", sort=True):
        out[str(organ)] = _fit(frame, images[images.organ == organ], str(organ))
    return out


def statistics_for(stats_by_organ: Mapping[str, MaskStatistics], organ: str) -> MaskStatistics:
    """The statistics of one organ, from the output of `fit_mask_statistics`.

    Raises:
        SynthError: If ``organ`` is not a key; the message names the known ones.
    """
    if organ not in stats_by_organ:
        raise SynthError(f"unknown organ {organ!r}; known: {', '.join(sorted(stats_by_organ))}")
    return stats_by_organ[organ]


def _concentration(resultant: float) -> float:
    """Von Mises concentration with mean resultant length ``resultant`` (Best & Fisher)."""
    r = min(max(resultant, 0.0), 0.95)
    if r < 0.53:
        return 2 * r + r**3 + 5 * r**5 / 6
    if r < 0.85:
        return -0.4 + 1.39 * r + 0.43 / (1 - r)
    return 1 / (r**3 - 4 * r**2 + 3 * r)


def _orientation_model(stats: MaskStatistics) -> tuple[float, float]:
    """Spread ``a`` of nucleus orientations about the local direction, and the field's sd.

    With a Gaussian orientation field of sd ``s`` and correlation ``rho`` at the typical
    neighbour distance, neighbours align by ``a**2 * exp(-4 s**2 (1 - rho))`` and an image's
    coherence is about ``a * exp(-2 s**2)``; both are solved for the measured values.
    """
    c, align = max(stats.orientation_coherence, 1e-3), stats.neighbour_alignment
    nn = np.interp(0.5, QUANTILE_LEVELS, stats.nn_distance_quantiles)
    rho = np.exp(-(nn**2) / (4 * _TURN_SCALE**2))
    var = np.clip(np.log(align / c**2) / (4 * rho), 0.0, 1.5) if align > c**2 else 0.0
    return float(min(c * np.exp(2 * var), 0.95)), float(np.sqrt(var))


def _nuclei(
    stats: MaskStatistics, rng: np.random.Generator, n: int, mean_log_area: float,
    direction: float,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Radii, axis ratios, angles and boundary tables of ``n`` candidate nuclei."""
    u = rng.random((3, n))
    log_area = mean_log_area + np.interp(u[0], QUANTILE_LEVELS, stats.log_area_residual_quantiles)
    area = np.exp(np.maximum(log_area, np.log(6.0)))
    ecc = np.interp(u[1], QUANTILE_LEVELS, stats.eccentricity_quantiles).clip(0.0, 0.99)
    minor_major = np.sqrt(1 - ecc**2)
    spread, _ = _orientation_model(stats)
    orientation = direction + rng.vonmises(0.0, _concentration(spread), n) / 2
    angles = np.pi / 2 - orientation  # shapes measure angles from the column axis
    # Aim the boundary's solidity so that the rendered solidity is the drawn one.
    c, p_area, p_ratio = _PIXEL_SOLIDITY
    pixel = 1 - c * area**p_area * minor_major**p_ratio
    b, d = _RENDER_SOLIDITY
    solidity = np.interp(u[2], QUANTILE_LEVELS, stats.solidity_quantiles)
    target = np.clip((solidity - b - d) / (pixel - b), 0.6, 1.0)
    amps, phases, scales, table = solidity_table(_HARMONICS)
    pick = rng.integers(0, len(amps), n)
    turn = rng.uniform(0, 2 * np.pi, (n, 1)) * np.asarray(_HARMONICS)
    scale = scale_for_solidity(table[pick], scales[pick], target)
    edges = boundary_table(amps[pick] * scale[:, None], phases[pick] + turn, _HARMONICS)
    return np.sqrt(area / profile_area(edges)), 1 / minor_major, angles, edges


def _image_level(stats: MaskStatistics, rng: np.random.Generator) -> list[float]:
    """Density, mean log area, touching fraction and Clark-Evans ratio of one mask.

    A smoothed bootstrap: one measured image is drawn and its values jittered by Gaussian
    kernels (Silverman's bandwidths, with floors for few images), which keeps their joint
    distribution (density against nucleus size, several modes across organs).
    """
    values = (np.log(stats.image_densities), stats.image_log_area_means,
              stats.image_touching_fractions, stats.image_clark_evans)  # fmt: skip
    j = rng.integers(0, stats.n_images)
    out = []
    for v, floor in zip(values, (0.05, 0.03, 0.02, 0.02), strict=True):
        v = np.asarray(v, float)
        out.append(float(v[j] + rng.normal(0.0, max(1.06 * v.std() * v.size**-0.2, floor))))
    out[0] = float(np.exp(out[0]))
    return out


def _layout(
    stats: MaskStatistics, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[Placement, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask-level draws, candidate nuclei and their placement: everything but drawing."""
    density, mean_log_area, touching, clark_evans = _image_level(stats, rng)
    hist = np.asarray(stats.orientation_histogram) + 1e-9
    bin_ = rng.choice(hist.size, p=hist / hist.sum())
    direction = -np.pi / 2 + (bin_ + rng.random()) * np.pi / hist.size
    n = int(round(density * shape[0] * shape[1] / 1e6))
    radii, ratios, angles, edges = _nuclei(stats, rng, n + n // 8 + 8, mean_log_area, direction)
    turn_sd = _orientation_model(stats)[1]

    def place(open_fraction: float) -> tuple[Placement, float]:
        open_area = np.ones(shape, bool)
        if open_fraction < 1.0:  # lumen and stroma: the high part of a smooth field
            field = smooth_field(rng, shape, _OPEN_SCALE)
            open_area = field <= np.quantile(field, open_fraction)
        placed = place_nuclei(
            rng, open_area, radii, n, clustering=_CLUSTERING,
            spread=_SPREAD * float(np.median(radii)), shapes=(ratios, angles, edges),
            touching=float(np.clip(touching, 0.0, 0.95)),
            rotation=turn_sd * smooth_field(rng, shape, _TURN_SCALE),
        )  # fmt: skip
        return placed, _clark_evans(placed.centres, shape)

    placed, ratio = place(1.0)
    if ratio > clark_evans and len(placed.index) >= 3:
        # Too regular: confine the nuclei to part of the canvas, unless that loses nuclei.
        fraction = float(np.clip((clark_evans / ratio) ** (1 / _OPEN_EXPONENT), 0.5, 1.0))
        closer, closer_ratio = place(fraction)
        if len(closer.index) >= 0.98 * len(placed.index) and closer_ratio < ratio:
            placed = closer
    return placed, radii, ratios, angles, edges


def _clark_evans(points: np.ndarray, shape: tuple[int, int]) -> float:
    if len(points) < 2:
        return float("nan")
    nn = cKDTree(points).query(points, k=2)[0][:, 1]
    return float(nn.mean() / expected_nn_distance(len(points), *shape))


def _canvas(size: int | tuple[int, int]) -> tuple[int, int]:
    shape = (size, size) if np.ndim(size) == 0 else tuple(size)
    ok = len(shape) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape
    )
    if not ok:
        raise SynthError(f"mask size must be a positive int or (height, width), got {size!r}")
    return int(shape[0]), int(shape[1])


def random_mask(
    stats: MaskStatistics,
    size: int | tuple[int, int] = 1000,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Sample one instance mask whose nuclei follow ``stats``.

    Nuclei are placed by `nucseg.data.placement.place_nuclei` in contact mode (touching nuclei
    overlap by a pixel or two and meet along a flat boundary; the others keep a gap) and drawn
    by `nucseg.data.shapes.render_instances`.

    Args:
        stats: Statistics of one organ (see `fit_mask_statistics`, `statistics_for`).
        size: Side of a square mask, or (height, width), in pixels.
        seed: Seed or generator; the same seed gives the same mask.

    Returns:
        int32 (H, W) instance map, 0 = background, ids 1..n.

    Raises:
        SynthError: If ``size`` is not positive.
    """
    shape = _canvas(size)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    placed, radii, ratios, angles, edges = _layout(stats, shape, rng)
    i = placed.index
    labels = render_instances(
        shape, placed.centres, radii[i], ratios[i], angles[i] + placed.turns, edges[i]
    )
    return relabel_sequential(labels)[0]


def random_masks(
    stats: MaskStatistics, n: int, size: int | tuple[int, int] = 1000, seed: int = 0
) -> list[np.ndarray]:
    """``n`` independent masks (`random_mask`), one child seed each, so each is reproducible.

    Raises:
        SynthError: If ``n`` < 1 or ``size`` is not positive.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SynthError(f"number of masks must be a positive integer, got {n!r}")
    _canvas(size)
    children = np.random.SeedSequence(seed).spawn(int(n))
    return [random_mask(stats, size, np.random.default_rng(child)) for child in children]
