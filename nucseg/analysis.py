"""Compare segmentation methods from their per-image score tables (the AJI analysis notebook).

`scores` (type `Scores`) is always method name -> per-image table, as returned by
`nucseg.evaluate.load_method_scores`. Comparisons require identical image sets (a missing image is
an error naming it). Uncertainty is a percentile bootstrap over images, the independent units.

AJI vs AJI+ (`aji_disagreement`) differ only where a prediction is the best partner of several GT
nuclei: AJI counts it in each of their unions (and intersections), AJI+ pairs one-to-one and the
GT nuclei left over add just their own area to the union. So `aji_plus - aji` is positive when a
large prediction spills onto a neighbour it barely covers (AJI adds its whole area to that
neighbour's union), negative for clean merges (AJI credits the overlap with each merged nucleus,
AJI+ with one), and zero without shared predictions (pure splits count the same in both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from nucseg.errors import NucsegError

Scores = Mapping[str, pd.DataFrame]
SCORE_METRICS = ("aji", "aji_plus", "pq", "dq", "sq", "f1", "dice")
_ID_COLUMNS = ("image_id", "organ")
_PAIRED_COLUMNS = """method baseline metric n_images mean_baseline mean_method mean_diff ci_lo ci_hi
    frac_improved frac_worse wilcoxon_p""".split()
# Bootstrap in chunks of about this many resampled values to bound memory on large inputs.
_BOOT_CHUNK = 1_000_000


class AnalysisError(NucsegError, ValueError):
    """Score tables cannot be compared (missing columns or images, unknown method, bad argument)."""


def _check_scores(scores: Scores, columns: Sequence[str], same_images: bool = True) -> None:
    """Check columns (columns[0] numeric) and unique ids; optionally require equal image sets."""
    if not scores:
        raise AnalysisError("no score tables given (empty mapping of method -> table)")
    for method, table in scores.items():
        missing = [c for c in (*_ID_COLUMNS, *columns) if c not in table.columns]
        if missing:
            raise AnalysisError(f"score table of method {method!r} lacks column(s) {missing}")
        dup = sorted(table["image_id"][table["image_id"].duplicated()].astype(str).unique())
        if dup:
            raise AnalysisError(f"score table of method {method!r} repeats image id(s) {dup}")
        if columns and not pd.api.types.is_numeric_dtype(table[columns[0]]):
            raise AnalysisError(f"column {columns[0]!r} of method {method!r} is not numeric")
    if not same_images:
        return
    first, *others = scores
    ref = set(scores[first]["image_id"].astype(str))
    problems = []
    for method in others:
        ids = set(scores[method]["image_id"].astype(str))
        if ids != ref:
            problems.append(
                f"{method!r} lacks {sorted(ref - ids)} and has extra {sorted(ids - ref)}"
                f" compared with {first!r}"
            )
    if problems:
        raise AnalysisError("methods were scored on different images: " + "; ".join(problems))


def _by_id(table: pd.DataFrame) -> pd.DataFrame:
    """Index a score table by image id (as text, so ids read back from CSV compare equal)."""
    return table.set_index(table["image_id"].astype(str).rename(None))


def _aligned(scores: Scores, metric: str) -> pd.DataFrame:
    """Wide table image_id x method of one metric (identical image sets already checked)."""
    wide = pd.DataFrame({m: _by_id(t)[metric] for m, t in scores.items()}).sort_index()
    bad = wide.index[wide.isna().any(axis=1)].tolist()
    if bad:
        raise AnalysisError(f"metric {metric!r} is missing (NaN) for image(s) {bad}")
    return wide


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> tuple[float, float, float]:
    """Mean of some values and its percentile bootstrap confidence interval.

    Resamples the values with replacement `n_boot` times (vectorised, in chunks) and takes the
    `(1 - ci) / 2` and `(1 + ci) / 2` quantiles of the resampled means. The same seed always
    gives the same interval.

    Args:
        values: one value per independent unit (here: per image); must be finite.
        n_boot: number of bootstrap resamples (>= 1).
        seed: seed of `numpy.random.default_rng`.
        ci: confidence level in (0, 1).

    Returns:
        (mean, lo, hi); lo == hi == mean for a single value.

    Raises:
        AnalysisError: no values, non-finite values, or a bad `n_boot` / `ci`.

    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise AnalysisError("bootstrap needs at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise AnalysisError(f"bootstrap values must be finite, got {x[~np.isfinite(x)][:5]}")
    if int(n_boot) < 1:
        raise AnalysisError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < ci < 1.0:
        raise AnalysisError(f"ci must lie in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK // x.size)
    sizes = np.diff([*range(0, int(n_boot), chunk), int(n_boot)])
    means = np.concatenate([x[rng.integers(0, x.size, (m, x.size))].mean(1) for m in sizes])
    lo, hi = np.quantile(means, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    return float(x.mean()), float(lo), float(hi)


def mean_intervals(
    scores: Scores,
    metrics: Sequence[str] = ("aji", "aji_plus", "pq", "f1"),
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Each method's mean of each metric with its bootstrap interval over images.

    Args:
        scores: method -> per-image score table (image sets may differ between methods).
        metrics: columns to summarise.
        n_boot: bootstrap resamples (see `bootstrap_mean_ci`).
        seed: bootstrap seed, the same for every cell.
        ci: confidence level in (0, 1).

    Returns:
        One row per method (mapping order): ``method``, ``n_images``, then ``<metric>``,
        ``<metric>_lo`` and ``<metric>_hi`` for each metric.

    Raises:
        AnalysisError: a missing column or a non-finite value.

    """
    _check_scores(scores, list(metrics), same_images=False)
    rows = []
    for method, table in scores.items():
        row: dict[str, object] = {"method": method, "n_images": len(table)}
        for metric in metrics:
            mean, lo, hi = bootstrap_mean_ci(table[metric].to_numpy(), n_boot, seed, ci)
            row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def per_organ(scores: Scores, metric: str = "aji", overall: bool = False) -> pd.DataFrame:
    """Mean of one metric per organ for each method.

    Args:
        scores: method -> per-image score table (identical image sets).
        metric: column to average.
        overall: append a row "all" with the mean over all images (not over organ means).

    Returns:
        Index `organ` (sorted), one column per method (mapping order), then `n_images`.

    Raises:
        AnalysisError: missing columns, differing image sets or a missing metric.

    """
    _check_scores(scores, [metric])
    wide = _aligned(scores, metric)
    wide["organ"] = _by_id(next(iter(scores.values())))["organ"].reindex(wide.index).astype(str)
    grouped = wide.groupby("organ", sort=True)
    table = grouped[list(scores)].mean()
    table["n_images"] = grouped.size()
    if overall:
        table.loc["all"] = [*wide[list(scores)].mean(), len(wide)]
    table["n_images"] = table["n_images"].astype(int)
    table.columns.name = None
    return table


def long_table(scores: Scores, metrics: Sequence[str] = SCORE_METRICS) -> pd.DataFrame:
    """Tidy table for seaborn: one row per (method, image, metric).

    Args:
        scores: method -> per-image score table (image sets may differ).
        metrics: metric columns to include.

    Returns:
        Columns method, image_id, organ, metric, value.

    Raises:
        AnalysisError: a table lacks a requested column.

    """
    _check_scores(scores, list(metrics), same_images=False)
    parts = [
        t.assign(method=m).melt(["method", *_ID_COLUMNS], list(metrics), "metric", "value")
        for m, t in scores.items()
    ]
    return pd.concat(parts, ignore_index=True)[["method", *_ID_COLUMNS, "metric", "value"]]


def _wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN with fewer than two non-zero differences."""
    if np.count_nonzero(diff) < 2:
        return float("nan")
    return float(wilcoxon(diff).pvalue)


def paired_differences(
    scores: Scores,
    baseline: str,
    metric: str = "aji",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per-image paired comparison of every method with a baseline.

    Args:
        scores: method -> per-image score table (identical image sets).
        baseline: the method the others are compared with.
        metric: column to compare.
        n_boot: bootstrap resamples (see `bootstrap_mean_ci`).
        seed: bootstrap seed, the same for every method so rows are comparable.
        ci: confidence level in (0, 1).

    Returns:
        One row per other method (mapping order): method, baseline, metric, n_images,
        mean_baseline, mean_method, mean_diff (method - baseline), ci_lo, ci_hi, frac_improved,
        frac_worse (shares of images with a strictly positive / negative difference) and
        wilcoxon_p (NaN with fewer than two non-zero differences).

    Raises:
        AnalysisError: unknown baseline, differing image sets, missing or NaN metric.

    """
    if baseline not in scores:
        raise AnalysisError(f"unknown baseline {baseline!r}; methods are {list(scores)}")
    _check_scores(scores, [metric])
    wide = _aligned(scores, metric)
    base = wide[baseline].to_numpy(dtype=float)
    rows = []
    for method in scores:
        if method == baseline:
            continue
        diff = wide[method].to_numpy(dtype=float) - base
        stats = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed, ci=ci)
        means = (float(base.mean()), float(wide[method].mean()))
        fracs = (float(np.mean(diff > 0)), float(np.mean(diff < 0)))
        p_value = _wilcoxon_p(diff)
        rows.append((method, baseline, metric, diff.size, *means, *stats, *fracs, p_value))
    return pd.DataFrame(rows, columns=_PAIRED_COLUMNS)


def _reason(delta: float, n_gt: int, n_pred: int, tol: float) -> str:
    """Apply the disagreement rule documented in `aji_disagreement`."""
    if delta >= tol:
        text = "AJI over-penalises shared predictions (spill-over onto barely covered neighbours)"
    elif delta <= -tol:
        text = "AJI+ drops GT nuclei merged into one prediction (clean merges)"
    else:
        return "agree"
    if n_pred < 0.9 * n_gt:
        text += "; fewer predictions than GT (under-segmentation)"
    elif n_pred > 1.1 * n_gt:
        text += "; more predictions than GT (over-segmentation)"
    return text


def aji_disagreement(scores: Scores, method: str | None = None, tol: float = 0.01) -> pd.DataFrame:
    """Images where AJI and AJI+ disagree, largest `aji_plus - aji` first.

    Rule for `reason` (see the module docstring for why): `delta = aji_plus - aji`;
    `delta >= tol` -> shared predictions over-penalised by AJI (spill-over),
    `delta <= -tol` -> clean merges that AJI+ penalises more, otherwise "agree". A count hint is
    appended when n_pred < 0.9 n_gt (under-segmentation) or n_pred > 1.1 n_gt (over-segmentation).

    Args:
        scores: method -> per-image score table.
        method: one method, or None for all of them stacked.
        tol: |delta| below this counts as agreement.

    Returns:
        Columns method, image_id, organ, aji, aji_plus, delta, n_gt, n_pred, tp, fp, fn, reason;
        sorted by delta descending (ties: method, image_id).

    Raises:
        AnalysisError: unknown method or missing columns.

    """
    if method is not None:
        if method not in scores:
            raise AnalysisError(f"unknown method {method!r}; methods are {list(scores)}")
        scores = {method: scores[method]}
    cols = ["aji", "aji_plus", "n_gt", "n_pred", "tp", "fp", "fn"]
    _check_scores(scores, cols, same_images=False)
    parts = [t.assign(method=m)[["method", *_ID_COLUMNS, *cols]] for m, t in scores.items()]
    table = pd.concat(parts, ignore_index=True)
    table.insert(5, "delta", table["aji_plus"] - table["aji"])
    rows = table[["delta", "n_gt", "n_pred"]].itertuples(index=False)
    table["reason"] = [_reason(d, g, p, tol) for d, g, p in rows]
    order = ["delta", "method", "image_id"]
    return table.sort_values(order, ascending=[False, True, True]).reset_index(drop=True)


def worst_images(scores: Scores, method: str, metric: str = "aji", k: int = 3) -> pd.DataFrame:
    """Return the `k` images where a method scores lowest on a metric (ties: image_id).

    Args:
        scores: method -> per-image score table.
        method: which method.
        metric: column to rank by (ascending).
        k: number of images (>= 1; fewer if the table is shorter).

    Returns:
        The method's rows, worst first, all columns kept, fresh index.

    Raises:
        AnalysisError: unknown method, missing metric, or k < 1.

    """
    if method not in scores:
        raise AnalysisError(f"unknown method {method!r}; methods are {list(scores)}")
    if k < 1:
        raise AnalysisError(f"k must be >= 1, got {k}")
    one = {method: scores[method]}
    _check_scores(one, [metric])
    table = scores[method].sort_values("image_id", kind="stable")
    return table.sort_values(metric, kind="stable").head(k).reset_index(drop=True)
