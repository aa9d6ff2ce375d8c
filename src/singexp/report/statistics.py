"""The report's arithmetic on numbers already collected: the mean and its 95% confidence
interval, paired per-image differences, which of two values is better, and the distribution
mismatch drop (matched against mismatched points). Pure functions: no files, no plotting."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from singexp.points import BASELINE
from singexp.report.labels import LOWER_IS_BETTER, METRICS, _row_order


def better(metric: str, a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` on ``metric`` (:data:`LOWER_IS_BETTER`)."""
    return a < b if metric in LOWER_IS_BETTER else a > b


Z95 = 1.959964  # two-sided 95% normal quantile


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval of the mean (normal approximation)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)


def drop_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Distribution mismatch (``+experiment=mismatch``): per BCR, SNR, method, other variant and
    metric, the matched mean (models trained on the tested data), the mismatched one and
    Δ = mismatched − matched. Empty unless the rows hold both kinds of point."""
    groups: dict[tuple[Any, ...], dict[bool, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r.get("matched") is None:
            continue
        key = (r["bcr"], r["snr_db"], r["method"], r["variant_without_data"], r["metric"])
        groups[key][bool(r["matched"])] = r
    out = []
    for (bcr, snr, method, variant, metric), pair in groups.items():
        if True not in pair or False not in pair:
            continue
        matched, other = pair[True], pair[False]
        # the gain over DeepJSCC on the same data: the data sets differ in difficulty (the mean
        # image's PSNR too), so what the mismatch costs a restoration is its gain's change
        base = groups.get((bcr, snr, BASELINE, variant, metric), {})
        gains = {
            f"gain_{kind}": row["mean"] - base[flag]["mean"]
            if flag in base and method != BASELINE
            else None
            for kind, flag, row in (("matched", True, matched), ("mismatched", False, other))
        }
        out.append(
            {
                **gains,
                "bcr": bcr,
                "snr_db": snr,
                "method": method,
                "variant": variant,
                "metric": metric,
                "matched_data": matched["dataset"],
                "matched": matched["mean"],
                "mismatched_data": other["dataset"],
                "mismatched": other["mean"],
                "delta": other["mean"] - matched["mean"],
            }
        )
    return sorted(out, key=_row_order)


def paired_differences(
    per_image: list[dict[str, Any]], reference: str, metrics: tuple[str, ...] = METRICS
) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, metric) → (mean, 95% CI half-width, n) of the per-image difference
    method − ``reference`` over the images both were scored on (the same images and channel
    noise: a paired comparison). ``per_image``: rows of ``per_image.csv``."""
    values: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in per_image:
        for m in metrics:
            if r.get(m) not in (None, ""):
                values[(str(r["method"]), m)][str(r["image"])] = float(r[m])
    out: dict[tuple[str, str], tuple[float, float, int]] = {}
    for (method, m), by_image in values.items():
        base = values.get((reference, m))
        if method == reference or not base:
            continue
        diffs = [v - base[i] for i, v in by_image.items() if i in base]
        if diffs:
            mean, ci = mean_ci(diffs)
            out[(method, m)] = (mean, ci, len(diffs))
    return out
