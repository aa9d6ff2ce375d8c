"""Sweep folder → paper-ready tables and figures.

    python -m singexp.report SWEEP_DIR [--wandb]

Reads every grid point's ``metrics.json`` (and ``per_image.csv`` for confidence intervals) under
SWEEP_DIR and writes ``results.csv`` (rows sorted by BCR, SNR, method), ``results.md`` and figures
(metric vs SNR, one line per method, one panel per BCR with a shared y axis, one legend outside
the panels, methods offset slightly along x so that error bars do not overlap; PNG and PDF) into
SWEEP_DIR/report. A point is its resolved config (:mod:`singexp.points`): every key whose value
differs between the sweep's points besides BCR and SNR (a sampler's η, a method's ζ, the seed,
the channel, the data, the operator A, …) goes into the point's ``variant`` (``A=fitted,
seed=1``) and a column of its own in ``results.csv``; a method gets one line per variant
("sing_zero · A=fitted"), and one line when its numbers are the same for every variant
(DeepJSCC's PSNR under each A). Points that differ only in keys that do not change results
(``threads``) are one point. A hyper-parameter search's report opens with its trials, best
first. SWD is a set-level measure (one value per point, no interval), reported ×10³ as
:func:`singexp.metrics.swd` computes it.
:class:`ReportCallback` does the same at the end of a Hydra multirun.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from singexp.faults import atomic_write_text
from singexp.points import (
    BASELINE,
    Point,
    display_value,
    objective,
    point_label,
    read_point,
    read_results,
    varying_keys,
)
from singexp.resolvers import sweep_group

log = logging.getLogger("singexp.report")

METRICS = ("psnr", "ssim", "ms_ssim", "stlpips", "lpips", "swd", "psnr_A_xhat", "psnr_A_x")
#: column headings of printed and written tables (SWD is stored ×10³: metrics.swd)
LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "stlpips": "ST-LPIPS ↓",
    "lpips": "LPIPS ↓",
    "swd": "SWD (×10³) ↓",
    # consistency through SING-Zero's A (singexp.modules.restoration): with what was received,
    # and with the original
    "psnr_A_xhat": "PSNR(Ax̃,Ax̂) (dB)",
    "psnr_A_x": "PSNR(Ax̃,Ax) (dB)",
}
#: metrics where lower is better (the ↓ of LABELS); the others: higher is better
LOWER_IS_BETTER = frozenset({"stlpips", "lpips", "swd"})


def better(metric: str, a: float, b: float) -> bool:
    """Whether ``a`` is strictly better than ``b`` on ``metric`` (:data:`LOWER_IS_BETTER`)."""
    return a < b if metric in LOWER_IS_BETTER else a > b


#: y-axis labels of the figures
AXIS_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "stlpips": "ST-LPIPS (lower is better)",
    "lpips": "LPIPS (lower is better)",
    "swd": "SWD ×10³ (lower is better)",
    "psnr_A_xhat": "PSNR(A x̃, A x̂) (dB)",
    "psnr_A_x": "PSNR(A x̃, A x) (dB)",
}
#: the figures a report draws
FIGURES = ("stlpips", "lpips", "psnr", "swd")
#: line styles of a method's variants in a figure (the colour says the method)
LINE_STYLES = ("-", "--", ":", "-.")


def short_name(metric: str) -> str:
    """``PSNR``, ``ST-LPIPS``, ``SWD``: a metric's name without unit or direction."""
    return LABELS.get(metric, metric.upper()).split(" ")[0]


Z95 = 1.959964  # two-sided 95% normal quantile
#: folders whose metrics.json is not a grid point's (W&B run copies, old results, the report)
NOT_POINTS = frozenset({"report", "wandb", "superseded"})
#: failed points of the multiruns of this process (python -m singexp exits 1 when any)
FAILED_POINTS: list[Path] = []


def _inn_pairs(point: Point) -> int | None:
    """Training pairs of an INN trained for this point (``inn.checkpoint=auto``: the point's
    ``dataset.train_size``, from its config.yaml); None for a given INN file."""
    if str((point.config.get("inn") or {}).get("checkpoint")) != "auto":
        return None
    size = (point.config.get("dataset") or {}).get("train_size")
    return None if size is None else int(size)


def sweep_points(sweep_dir: Path) -> tuple[list[Point], list[tuple[Path, Path]]]:
    """The finished restoration points under ``sweep_dir``, one per identity
    (:func:`singexp.points.identity`), and the (kept, duplicate) folders of points that are the
    same point as another (they differ only in keys that do not change results, such as
    ``threads``): the newest metrics.json is kept, the others are named in the report's notes."""
    by_identity: dict[str, list[Point]] = defaultdict(list)
    for folder in _point_folders(sweep_dir, "metrics.json"):
        point = read_point(folder)
        if point is not None:  # torn, or not a restoration point: failed_points() names the former
            by_identity[json.dumps(point.keys, sort_keys=True, default=str)].append(point)
    kept, duplicates = [], []
    for same in by_identity.values():
        same.sort(key=lambda p: (p.folder / "metrics.json").stat().st_mtime, reverse=True)
        kept.append(same[0])
        duplicates += [(same[0].folder, other.folder) for other in same[1:]]
    return sorted(kept, key=lambda p: str(p.folder)), duplicates


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval of the mean (normal approximation)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per (grid point, method, metric) with mean, 95% CI and the number of images, and
    the point's ``variant``: its values of every key that differs between the sweep's points
    (:func:`singexp.points.varying_keys`), each also in ``keys``."""
    points, _ = sweep_points(sweep_dir)
    keys = varying_keys(points)
    # the variant apart from the test data: what a mismatch drop pairs points by
    data_free = [k for k in keys if not k.startswith("dataset.")]
    rows: list[dict[str, Any]] = []
    for point in points:
        results = point.results
        per_image: dict[tuple[str, str], list[float]] = defaultdict(list)
        csv_path = point.folder / "per_image.csv"
        if csv_path.is_file():
            with csv_path.open() as f:
                for r in csv.DictReader(f):
                    for m in METRICS:
                        if r.get(m) not in (None, ""):
                            per_image[(r["method"], m)].append(float(r[m]))
        variant = point_label(point, keys)
        other = point_label(point, data_free)
        values = {k: display_value(point.keys.get(k, "<unset>")) for k in keys}
        for method, summary in results["methods"].items():
            record = (results.get("samplers") or {}).get(method) or {}
            for metric in METRICS:
                measured = per_image.get((method, metric))
                if measured:
                    mean, ci = mean_ci(measured)
                elif summary.get(metric) is not None:
                    mean, ci = float(summary[metric]), float("nan")
                else:
                    continue
                rows.append(
                    {
                        "dataset": results.get("dataset"),
                        "channel": results.get("channel"),
                        "bcr": results.get("bcr"),
                        "snr_db": float(results["snr_db"]),
                        "method": method,
                        "variant": variant,
                        "variant_without_data": other,
                        "keys": values,
                        "point": point.folder.name,
                        "split": results.get("evaluated_split", "test"),
                        "metric": metric,
                        "mean": mean,
                        "ci95": ci,
                        "images": len(measured) if measured else summary.get("images"),
                        # sampler steps of the method (None: DeepJSCC, the mean image) and
                        # its measured wall seconds per image (modules.restoration)
                        "steps": record.get("steps"),
                        "seconds_per_image": summary.get("seconds_per_image"),
                        # whether the models were trained on the tested data (mismatch.yaml)
                        "matched": _matched(results),
                        # training pairs of the INN a SING-INN row used, when trained for it
                        "inn_pairs": _inn_pairs(point)
                        if record.get("name") == "sing_inn"
                        else None,
                    }
                )
    return sorted(rows, key=_row_order)


def _matched(point: dict[str, Any]) -> bool | None:
    """True when every model with a recorded training set (metrics.json's ``trained_on``) was
    trained on the tested data set, False when one was not, None when nothing is recorded."""
    trained = [v for v in (point.get("trained_on") or {}).values() if v is not None]
    if not trained:
        return None
    return all(str(v) == str(point.get("dataset")) for v in trained)


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


def write_drop(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``drop.csv`` and ``drop.md``: :func:`drop_rows` (nothing when there is no drop to show);
    the Markdown table has one row per point and method, one column per metric with
    "matched → mismatched (Δ)"."""
    drops = drop_rows(rows)
    if not drops:
        return []
    out.mkdir(parents=True, exist_ok=True)
    fields = ["bcr", "snr_db", "method", "variant", "metric"]
    fields += ["matched_data", "matched", "mismatched_data", "mismatched", "delta"]
    fields += ["gain_matched", "gain_mismatched"]
    csv_path = _write_csv(out / "drop.csv", fields, drops)
    metrics = [m for m in METRICS if any(d["metric"] == m for d in drops)]
    table: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    gains: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for d in drops:
        key = (d["bcr"], d["snr_db"], d["method"], d["variant"])
        table[key][d["metric"]] = f"{d['matched']:.3f} → {d['mismatched']:.3f} ({d['delta']:+.3f})"
        if d["gain_matched"] is not None and d["gain_mismatched"] is not None:
            gain = f"{d['gain_matched']:+.3f} → {d['gain_mismatched']:+.3f}"
            gains[key][d["metric"]] = gain
    variants = any(d["variant"] for d in drops)
    pairs = sorted({(d["matched_data"], d["mismatched_data"]) for d in drops})
    said = "; ".join(f"{a} → {b}" for a, b in pairs)
    lines = [
        f"Distribution mismatch ({said}): each cell is the mean on the data the models were "
        "trained on → the mean on the other data (Δ = mismatched − matched; for ↓ metrics a "
        "positive Δ is worse, for PSNR/SSIM a negative one).",
        "",
        *_markdown_table(table, metrics, variants),
    ]
    if gains:
        lines += [
            "",
            f"Gain over {BASELINE} on the same data (method − {BASELINE}): matched → "
            "mismatched. The data sets differ in difficulty; this is what the mismatch costs "
            "a restoration.",
            "",
            *_markdown_table(gains, metrics, variants),
        ]
    md_path = out / "drop.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return [csv_path, md_path]


def paired_differences(
    per_image: list[dict[str, Any]], reference: str, metrics: tuple[str, ...] = METRICS
) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, metric) → (mean, 95% CI half-width, n) of the per-image difference
    method − ``reference`` over the images both were scored on (the same images and channel
    noise: a paired comparison, issue 31). ``per_image``: rows of ``per_image.csv``."""
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


def paired_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rows like :func:`collect`'s for the points whose config names
    ``evaluate.paired_reference`` (``+experiment=comparison``): each other method minus the
    reference, per metric, from the point's ``per_image.csv`` (SWD is one value per set: no
    paired difference), labelled by the keys that tell the sweep's points apart."""
    points, _ = sweep_points(sweep_dir)
    keys = varying_keys(points)
    rows: list[dict[str, Any]] = []
    for point in points:
        reference = (point.config.get("evaluate") or {}).get("paired_reference")
        csv_path = point.folder / "per_image.csv"
        if not reference or not csv_path.is_file():
            continue
        with csv_path.open() as f:
            per_image = list(csv.DictReader(f))
        results = point.results
        for (method, metric), (mean, ci, n) in paired_differences(per_image, reference).items():
            rows.append(
                {
                    "dataset": results.get("dataset"),
                    "channel": results.get("channel"),
                    "bcr": results.get("bcr"),
                    "snr_db": float(results["snr_db"]),
                    "method": f"{method} − {reference}",
                    "variant": point_label(point, keys),
                    "keys": {k: display_value(point.keys.get(k, "<unset>")) for k in keys},
                    "metric": metric,
                    "mean": mean,
                    "ci95": ci,
                    "images": n,
                }
            )
    return sorted(rows, key=_row_order)


#: the columns of ``paired.csv``
PAIRED_FIELDS = [
    "dataset",
    "channel",
    "bcr",
    "snr_db",
    "method",
    "metric",
    "mean",
    "ci95",
    "images",
]


def paired_markdown(rows: list[dict[str, Any]]) -> str:
    """The paired differences as ``paired.md`` says them: one row per point and method, one
    column per metric, "Δ ± CI" with * where the interval excludes 0."""
    metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
    table: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for r in sorted(rows, key=_row_order):
        excludes_zero = not math.isnan(r["ci95"]) and abs(r["mean"]) > r["ci95"]
        cell = f"{r['mean']:+.3f} ± {r['ci95']:.3f}" + (" *" if excludes_zero else "")
        table[(r["bcr"], r["snr_db"], r["method"], r.get("variant") or "")][r["metric"]] = cell
    variants = any(r.get("variant") for r in rows)
    lines = [
        "Paired differences on the same test images and channel noise: mean of (method − "
        "reference) per image ± 95% confidence interval; * the interval excludes 0. For ↓ "
        "metrics a negative Δ favours the method, for PSNR/SSIM a positive one.",
        "",
        *_markdown_table(table, metrics, variants),
    ]
    return "\n".join(lines) + "\n"


def read_paired(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a ``paired.csv``, typed as :func:`paired_rows` makes them."""
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["snr_db"] = float(r["snr_db"])
        r["mean"], r["ci95"] = float(r["mean"]), float(r["ci95"])
        r["images"] = int(r["images"])
    return rows


def write_paired(
    rows: list[dict[str, Any]], out: Path, info: dict[str, Any] | None = None
) -> list[Path]:
    """``paired.csv``, ``paired.md`` (Δ ± 95% CI per point, method and metric; a CI that
    excludes 0 is marked *) and one figure per metric of :data:`FIGURES`
    (``paired_<metric>_vs_snr.png``): nothing without paired rows."""
    if not rows:
        return []
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in (r.get("keys") or {})))
    fields = PAIRED_FIELDS[:5] + (["variant", *keys] if keys else []) + PAIRED_FIELDS[5:]
    files = [_write_csv(out / "paired.csv", fields, [flat_row(r) for r in rows])]
    md_path = out / "paired.md"
    atomic_write_text(md_path, paired_markdown(rows))
    files.append(md_path)
    for metric in FIGURES:
        if any(r["metric"] == metric for r in rows):
            fig = figure(rows, metric, info)
            fig.suptitle(f"paired Δ {_title(metric, info)}", fontsize=10)
            for ext in ("png", "pdf"):
                files.append(out / f"paired_{metric}_vs_snr.{ext}")
                fig.savefig(files[-1])
    return files


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """(BCR, SNR, method, variant, metric): the order of ``results.csv`` and the Markdown
    table."""
    metric = METRICS.index(row["metric"]) if row["metric"] in METRICS else len(METRICS)
    values = list((row.get("keys") or {}).values()) or [str(row.get("variant") or "")]
    variant = tuple(_sortable(v) for v in values)  # numbers by value: seed=2 before seed=10
    return (_bcr_value(row["bcr"]), row["snr_db"], str(row["method"]), variant, metric)


def _sortable(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def steps_vary(rows: list[dict[str, Any]]) -> bool:
    """Whether a method ran at more than one step count (an NFE sweep): methods with different
    steps of their own at one point (SING's 100 beside InverseJSCC's 5-step generator) are
    not a steps sweep."""
    steps: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r.get("steps"):
            steps[r["method"]].add(int(r["steps"]))
    return any(len(values) > 1 for values in steps.values())


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the figures' title says: data set, channel, the images scored (``split``: test, or
    val for a search's trials), their number and sampler steps of the points (each a sorted
    list of the distinct values found)."""
    found: dict[str, set[Any]] = defaultdict(set)
    for folder in _point_folders(sweep_dir, "metrics.json"):
        point, _ = read_results(folder / "metrics.json", ("methods",))
        if point is None:
            continue
        for key in ("dataset", "channel"):
            if point.get(key) is not None:
                found[key].add(str(point[key]))
        found["split"].add(str(point.get("evaluated_split") or "test"))
        for summary in point["methods"].values():
            if isinstance(summary, dict) and summary.get("images") is not None:
                found["images"].add(int(summary["images"]))
        for record in (point.get("samplers") or {}).values():
            if isinstance(record, dict) and record.get("steps") is not None:
                found["steps"].add(int(record["steps"]))
    return {key: sorted(values) for key, values in found.items()}


def _bcr_value(bcr: str) -> float:
    num, _, den = str(bcr).partition("/")
    return float(num) / float(den) if den else float(num)


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A report row with its ``keys`` (the point's values of the keys that differ) as columns of
    their own, for CSV files and W&B tables."""
    return {**{k: v for k, v in row.items() if k != "keys"}, **(row.get("keys") or {})}


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> Path:
    """``rows`` as CSV with the columns ``fields`` (other keys ignored), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def _markdown_table(
    cells: dict[tuple[Any, ...], dict[str, str]], metrics: list[str], variants: bool
) -> list[str]:
    """A Markdown table: one row per (BCR, SNR, method, variant) key of ``cells`` (in its
    order), one column per metric; the variant column only when ``variants``."""
    lines = [
        "| BCR | SNR (dB) | method | "
        + ("variant | " if variants else "")
        + " | ".join(LABELS[m] for m in metrics)
        + " |",
        "|---|---|---|" + ("---|" if variants else "") + "---|" * len(metrics),
    ]
    for (bcr, snr, method, variant), row in cells.items():
        lines.append(
            f"| {bcr} | {snr:g} | {method} | "
            + (f"{variant} | " if variants else "")
            + " | ".join(row.get(m, "—") for m in metrics)
            + " |"
        )
    return lines


def write_tables(
    rows: list[dict[str, Any]],
    out: Path,
    notes: list[str] | None = None,
    before: list[str] | None = None,
) -> tuple[Path, Path]:
    """``results.csv`` (one row per point, method and metric; a column per key that tells the
    sweep's points apart) and a Markdown table, after ``before`` (a search's trials) and
    followed by ``notes`` (metrics not measured, failed points, duplicate points)."""
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in (r.get("keys") or {})))
    fields = ["dataset", "channel", "bcr", "snr_db", "method", "variant", *keys]
    fields += ["metric", "mean", "ci95", "images", "steps", "seconds_per_image"]
    rows = [{"variant": "", **flat_row(r)} for r in sorted(rows, key=_row_order)]
    splits = sorted({str(r.get("split") or "test") for r in rows})
    variants = any(r["variant"] for r in rows)
    csv_path = _write_csv(out / "results.csv", fields, rows)
    metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
    table: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for r in rows:
        cell = f"{r['mean']:.3f}" + ("" if math.isnan(r["ci95"]) else f" ± {r['ci95']:.3f}")
        table[(r["bcr"], r["snr_db"], r["method"], r["variant"])][r["metric"]] = cell
    lines = _markdown_table(table, metrics, variants)  # in row order (sorted above)
    md_path = out / "results.md"
    text = "".join(f"{line}\n" for line in before or [])
    text += (
        f"Mean ± 95% confidence interval over {'/'.join(splits)} images (SWD: one value per set "
        "of images, ×10³; ↓ lower is better).\n\n" + "\n".join(lines) + "\n"
    )
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    atomic_write_text(md_path, text)
    return csv_path, md_path


def _title(metric: str, info: dict[str, Any] | None) -> str:
    """``ST-LPIPS vs SNR · shapes · awgn · 64 test images · 100 sampler steps``."""
    parts = [f"{LABELS[metric].rstrip(' ↓')} vs SNR"]
    info = info or {}

    def said(values: list[Any]) -> str:
        return "/".join(str(v) for v in values)

    for key in ("dataset", "channel"):
        if info.get(key):
            parts.append(said(info[key]))
    if info.get("images"):
        parts.append(f"{said(info['images'])} {said(info.get('split') or ['test'])} images")
    if info.get("steps"):
        parts.append(f"{said(info['steps'])} sampler steps")
    return " · ".join(parts)


def figure(rows: list[dict[str, Any]], metric: str, info: dict[str, Any] | None = None) -> Figure:
    """``metric`` vs SNR: one panel per BCR (y shared), one line per method with CI error bars,
    the methods offset slightly along x, one legend for the figure outside the panels, a title
    with the number of images and sampler steps (``info``: :func:`sweep_info`)."""
    rows = line_rows([r for r in rows if r["metric"] == metric])
    bcrs = sorted({r["bcr"] for r in rows}, key=_bcr_value)
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m.split(" · ")[0], m))
    snrs = sorted({r["snr_db"] for r in rows})
    span = (snrs[-1] - snrs[0]) if len(snrs) > 1 else 1.0
    step = min((b - a for a, b in itertools.pairwise(snrs)), default=span)
    offset = min(0.02 * span, 0.08 * step)  # within a point's neighbourhood: no mix-up
    variants = any(" · " in m for m in methods)
    width = 3.4 * len(bcrs) + 1.6
    fig = Figure(
        figsize=(max(width, 8.5) if variants else width, 4.2 if variants else 3.4),
        dpi=150,
        layout="constrained",
    )
    axes = fig.subplots(1, len(bcrs), squeeze=False, sharey=True)[0]
    # one colour per method, one line style per variant: a method's variants read as a family
    bases = list(dict.fromkeys(m.split(" · ")[0] for m in methods))
    labels_of_variants = sorted({m.split(" · ", 1)[1] for m in methods if " · " in m})
    for ax, bcr in zip(axes, bcrs, strict=True):
        for i, method in enumerate(methods):
            pts = sorted(
                (r["snr_db"], r["mean"], r["ci95"])
                for r in rows
                if r["bcr"] == bcr and r["method"] == method
            )
            shift = (i - (len(methods) - 1) / 2) * offset
            base, _, variant = method.partition(" · ")
            color = f"C{bases.index(base) % 10}"
            style = LINE_STYLES[labels_of_variants.index(variant) % 4] if variant else "-"
            if pts:
                snr, mean, ci = zip(*pts, strict=True)
                err = [0.0 if math.isnan(c) else c for c in ci]
                x = [s + shift for s in snr]
                ax.errorbar(
                    x, mean, yerr=err, marker="o", ms=4, capsize=3, label=method, c=color, ls=style
                )
        ax.set_title(f"BCR {bcr}", fontsize=10)
        ax.set_xlabel("SNR (dB)")
        ax.set_xticks(snrs)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(AXIS_LABELS[metric])
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # a method missing from the first panel still gets its entry
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if variants:  # long labels: below the panels, clear of the title
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=3,
            fontsize=8,
            title="method · variant",
        )
    else:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="method")
    fig.suptitle(_title(metric, info), fontsize=10)
    return fig


def line_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one metric with ``method`` set to the line they are drawn as: ``method · variant``,
    or the bare method when its numbers are the same for every variant at every point (DeepJSCC's
    PSNR does not depend on SING-Zero's A): one line instead of several on top of each other."""
    values: dict[str, dict[tuple[Any, Any], set[float]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        values[r["method"]][(r["bcr"], r["snr_db"])].add(round(float(r["mean"]), 9))
    same = {m for m, pts in values.items() if all(len(v) == 1 for v in pts.values())}
    out, seen = [], set()
    for r in rows:
        variant = str(r.get("variant") or "")
        if not variant:
            out.append(r)
        elif r["method"] in same:
            key = (r["method"], r["bcr"], r["snr_db"])
            if key not in seen:
                seen.add(key)
                out.append({**r, "variant": ""})
        else:
            out.append({**r, "method": f"{r['method']} · {variant}"})
    return out


def plot(
    rows: list[dict[str, Any]], metric: str, out: Path, info: dict[str, Any] | None = None
) -> list[Path]:
    """:func:`figure` of ``metric`` written as ``<metric>_vs_snr.png`` and ``.pdf``."""
    if not any(r["metric"] == metric for r in rows):
        return []
    fig = figure(rows, metric, info)
    paths = [out / f"{metric}_vs_snr.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path)
    return paths


#: the sampler steps singexp uses by default (conf/sampler/*.yaml), marked on the steps figures
DEFAULT_STEPS = 100


def steps_figure(
    rows: list[dict[str, Any]], metric: str, x: str, info: dict[str, Any] | None = None
) -> Figure:
    """``metric`` vs sampler steps (``x="steps"``) or vs wall seconds per image (``x="seconds"``),
    log x, one panel per (BCR, SNR) point, one line per method with CI error bars; methods
    without steps (DeepJSCC, the mean image) as horizontal lines; the default
    (:data:`DEFAULT_STEPS`) marked: a dotted vertical line, or a ringed point."""
    rows = [r for r in rows if r["metric"] == metric]
    panels = sorted({(r["bcr"], r["snr_db"]) for r in rows}, key=lambda p: (_bcr_value(p[0]), p[1]))
    methods = sorted({r["method"] for r in rows})
    fig = Figure(figsize=(max(6.0, 4.2 * len(panels)), 4.2), dpi=150, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (bcr, snr) in zip(axes, panels, strict=True):
        here = [r for r in rows if r["bcr"] == bcr and r["snr_db"] == snr]
        for i, method in enumerate(methods):
            mine = [r for r in here if r["method"] == method]
            axis = "inn_pairs" if x == "inn_pairs" else "steps"
            stepped = sorted((int(r[axis]), r) for r in mine if r.get(axis))
            color = f"C{i}"
            if not stepped:  # no steps: one value, a horizontal reference line
                if mine:
                    ax.axhline(mine[0]["mean"], ls="--", lw=1, c=color, label=method)
                continue
            if x == "seconds":
                stepped = [(n, r) for n, r in stepped if r.get("seconds_per_image")]
                if not stepped:
                    continue
            xs = [float(r["seconds_per_image"]) if x == "seconds" else float(n) for n, r in stepped]
            ys = [r["mean"] for _, r in stepped]
            err = [0.0 if math.isnan(r["ci95"]) else r["ci95"] for _, r in stepped]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, c=color, label=method)
            for xv, yv, (n, _) in zip(xs, ys, stepped, strict=True):
                if x == "seconds":
                    ax.annotate(
                        str(n),
                        (xv, yv),
                        textcoords="offset points",
                        xytext=(3, 4),
                        fontsize=6,
                        color=color,
                    )
                if n == DEFAULT_STEPS and x == "seconds":
                    ax.plot([xv], [yv], "o", ms=10, mfc="none", c=color)
        if x == "inn_pairs":
            ax.set_xlabel("INN training pairs N (log scale)")
        elif x == "steps":
            ax.axvline(DEFAULT_STEPS, ls=":", c="0.4", lw=1)
            ax.annotate(
                f"default: {DEFAULT_STEPS} steps",
                (DEFAULT_STEPS, 0.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, 4),
                textcoords="offset points",
                fontsize=7,
                color="0.3",
            )
            ax.set_xlabel("sampler steps (NFE, log scale)")
        else:
            ax.set_xlabel("wall seconds per image (log scale; ringed: default 100 steps)")
        ax.set_xscale("log")
        ax.set_title(f"BCR {bcr} · SNR {snr:g} dB", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(AXIS_LABELS[metric])
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    # below the panels: a long title and a legend on the right would meet above one panel
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(4, len(labels)),
        fontsize=8,
        title="method",
    )
    what = {"steps": "sampler steps", "seconds": "seconds per image"}.get(x, "INN training pairs")
    info = {k: v for k, v in (info or {}).items() if k != "steps"}  # the x axis says them
    title = _title(metric, info).replace(" vs SNR", f" vs {what}")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_steps(
    rows: list[dict[str, Any]], metric: str, out: Path, info: dict[str, Any] | None = None
) -> list[Path]:
    """:func:`steps_figure` vs steps and vs seconds, as ``<metric>_vs_steps.png``/``.pdf`` and
    ``<metric>_vs_seconds.png``/``.pdf``."""
    if not any(r["metric"] == metric and r.get("steps") for r in rows):
        return []
    paths = []
    for x in ("steps", "seconds"):
        if x == "seconds" and not any(r.get("seconds_per_image") for r in rows):
            continue
        fig = steps_figure(rows, metric, x, info)
        for ext in ("png", "pdf"):
            paths.append(out / f"{metric}_vs_{x}.{ext}")
            fig.savefig(paths[-1])
    return paths


def write_flops(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``flops.md``: per method and steps, the FLOPs per image (:mod:`singexp.flops`: steps ×
    one step's UNet FLOPs, the embedded prior and the 256 px CelebA-HQ DDPM counted from its
    architecture) beside the measured seconds per image."""
    from singexp.flops import STEP_BACKWARD, celebahq_unet, unet_flops  # torch: only here
    from singexp.prior import load_prior

    runs = sorted(
        {
            (r["method"], int(r["steps"]), r.get("seconds_per_image"))
            for r in rows
            if r.get("steps") and r["metric"] == rows[0]["metric"]
        }
    )
    if not runs:
        return []
    unets = {"embedded": load_prior("embedded", expected_size=None), "celebahq": celebahq_unet()}
    per_step = {
        (name, grad): unet_flops(unet, backward=grad)
        for name, unet in unets.items()
        for grad in (False, True)
    }
    lines = [
        "FLOPs per image = steps × one UNet call (torch.utils.flop_counter; SING-INN's DPS "
        "gradient adds the backward pass to the UNet's input). The 256 px CelebA-HQ DDPM "
        "(google/ddpm-ema-celebahq-256) is counted from its architecture, without weights.",
        "",
        "| method | steps | GFLOP / image (embedded 32 px prior) | TFLOP / image (CelebA-HQ "
        "256 px DDPM) | seconds / image (measured, embedded) |",
        "|---|---|---|---|---|",
    ]
    for method, steps, seconds in runs:
        grad = STEP_BACKWARD.get(method.split(" · ")[0], False)
        small = steps * per_step[("embedded", grad)] / 1e9
        large = steps * per_step[("celebahq", grad)] / 1e12
        sec = "—" if seconds is None else f"{float(seconds):.3g}"
        lines.append(f"| {method} | {steps} | {small:.4g} | {large:.4g} | {sec} |")
    path = out / "flops.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return [path]


def _point_folders(sweep_dir: Path, name: str) -> list[Path]:
    """Folders under ``sweep_dir`` holding ``name`` that are grid points (not W&B copies, old
    results or the report)."""
    return [
        path.parent
        for path in sorted(sweep_dir.rglob(name))
        if not NOT_POINTS.intersection(path.relative_to(sweep_dir).parts[:-1])
    ]


def torn_points(sweep_dir: Path) -> dict[Path, str]:
    """Points whose ``metrics.json`` does not parse (a torn write), with why: unfinished."""
    torn = {}
    for folder in _point_folders(sweep_dir, "metrics.json"):
        data, why = read_results(folder / "metrics.json")
        if data is None:
            torn[folder] = why
    return torn


def failed_points(sweep_dir: Path) -> list[Path]:
    """Points whose job failed (``error.txt`` without a valid ``metrics.json``) or whose
    ``metrics.json`` is torn; each said in one line."""
    torn = torn_points(sweep_dir)
    for folder, why in torn.items():
        log.error("unfinished point %s: %s (a re-run recomputes it)", folder.name, why)
    errored = [
        p
        for p in _point_folders(sweep_dir, "error.txt")
        if p not in torn and read_results(p / "metrics.json")[0] is None
    ]
    for folder in errored:
        log.error("grid point failed: %s (see %s)", folder.name, folder / "error.txt")
    return sorted({*torn, *errored})


def unmeasured(sweep_dir: Path) -> dict[str, str]:
    """Table metrics some point could not measure, with the reason it gave (e.g. LPIPS without
    its AlexNet weights offline)."""
    reasons: dict[str, str] = {}
    for folder in _point_folders(sweep_dir, "metrics.json"):
        data, _ = read_results(folder / "metrics.json")
        status = (data or {}).get("metric_status") or {}
        for metric in METRICS:
            if metric in status and status[metric] != "ok":
                reasons.setdefault(metric, str(status[metric]))
    return reasons


def search_direction(sweep_dir: Path) -> str:
    """``minimize`` or ``maximize``: the sweeper's direction in the sweep's ``multirun.yaml``
    (Hydra's Optuna sweeper), minimise without one."""
    saved = sweep_dir / "multirun.yaml"
    try:
        value = OmegaConf.select(OmegaConf.load(saved), "hydra.sweeper.direction", default=None)
    except Exception:  # no multirun.yaml, or one that does not parse
        value = None
    return "maximize" if str(value).lower() == "maximize" else "minimize"


def trial_rows(points: list[Point], direction: str = "minimize") -> list[dict[str, Any]]:
    """A hyper-parameter search's trials (the points whose config has ``optimized_metric``),
    best first: each point's objective (:func:`singexp.points.objective`, as the sweeper got
    it), its values of the keys the trials differ in, and ``best`` for the first."""
    scored = [p for p in points if p.config.get("optimized_metric")]
    keys = varying_keys(scored)
    rows = []
    for point in scored:
        try:
            value, how = objective(point.config, point.results)
        except Exception as error:  # a trial whose metrics.json lacks the metric: said, kept
            value, how = float("nan"), str(error)
        rows.append(
            {
                "trial": point.folder.name,
                "objective": value,
                "how": how,
                "split": point.results.get("evaluated_split", "test"),
                **{k: display_value(point.keys.get(k, "<unset>")) for k in keys},
            }
        )
    sign = -1.0 if direction == "maximize" else 1.0
    rows.sort(key=lambda r: (math.isnan(r["objective"]), sign * r["objective"]))
    for i, r in enumerate(rows):
        r["best"] = i == 0 and not math.isnan(r["objective"])
    return rows


def write_trials(points: list[Point], sweep_dir: Path, out: Path) -> tuple[list[str], list[Path]]:
    """A search's trials table (:func:`trial_rows`): ``trials.csv`` and the Markdown lines that
    open ``results.md``, titled with the split the trials were scored on; nothing for a sweep
    that is not a search."""
    direction = search_direction(sweep_dir)
    rows = trial_rows(points, direction)
    if not rows:
        return [], []
    params = [k for k in rows[0] if k not in ("trial", "objective", "how", "split", "best")]
    splits = "/".join(sorted({str(r["split"]) for r in rows}))
    metric = str(
        next(p.config["optimized_metric"] for p in points if p.config.get("optimized_metric"))
    )
    lines = [
        f"Trials of the search, scored on the {splits} split ({len(rows)} trials, "
        f"{direction} {metric} with its penalty, as the sweeper got it): best first, ★ the best.",
        "",
        "| rank | trial | objective | " + " | ".join(params) + " |",
        "|---|---|---|" + "---|" * len(params),
    ]
    for i, r in enumerate(rows, 1):
        star = " ★" if r["best"] else ""
        lines.append(
            f"| {i}{star} | {r['trial']} | {r['objective']:.4f} | "
            + " | ".join(str(r[k]) for k in params)
            + " |"
        )
    lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    path = _write_csv(out / "trials.csv", ["trial", "objective", "best", "split", *params], rows)
    return lines, [path]


def report(sweep_dir: str | Path) -> dict[str, Any]:
    """Tables and figures for every finished grid point under ``sweep_dir``; failed points and
    metrics that could not be measured are listed under the table. ``unchanged``: the table is
    the one already there (nothing new was evaluated)."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    out = sweep_dir / "report"
    failed = failed_points(sweep_dir)
    if not rows:
        log.warning("no finished restoration results under %s", sweep_dir)
        return {"points": 0, "rows": 0, "files": [], "failed": [str(f) for f in failed]}
    before = (out / "results.csv").read_text() if (out / "results.csv").is_file() else None
    notes = [f"{short_name(m)} not measured: {why}" for m, why in unmeasured(sweep_dir).items()]
    notes += [
        f"failed point: {f.relative_to(sweep_dir)} (see its error.txt)"
        if (f / "error.txt").is_file()
        else f"unfinished point: {f.relative_to(sweep_dir)} (torn metrics.json)"
        for f in failed
    ]
    points_found, duplicates = sweep_points(sweep_dir)
    notes += [
        f"{other.relative_to(sweep_dir)} is the same point as {kept.relative_to(sweep_dir)} "
        "(they differ only in keys that do not change results: singexp.points.NOT_IDENTITY); "
        "the newer is shown"
        for kept, other in duplicates
    ]
    trials, trial_files = write_trials(points_found, sweep_dir, out)
    files = [*write_tables(rows, out, notes, trials), *trial_files, *write_drop(rows, out)]
    info = sweep_info(sweep_dir)
    files += write_paired(paired_rows(sweep_dir), out, info)
    by_steps = steps_vary(rows)
    one_snr = len({r["snr_db"] for r in rows}) == 1
    for metric in FIGURES:
        if not (by_steps and one_snr):  # a single SNR: the steps figures say it all
            files += plot(rows, metric, out, info)
        if by_steps:
            files += plot_steps(rows, metric, out, info)
    if by_steps:
        files += write_flops(rows, out)
    if len({r["inn_pairs"] for r in rows if r.get("inn_pairs")}) > 1:
        for metric in FIGURES:
            if any(r["metric"] == metric and r.get("inn_pairs") for r in rows):
                fig = steps_figure(rows, metric, "inn_pairs", info)
                for ext in ("png", "pdf"):
                    files.append(out / f"{metric}_vs_inn_pairs.{ext}")
                    fig.savefig(files[-1])
    points = len(points_found)
    log.info("report of %d grid points written to %s", points, out)
    return {
        "points": points,
        "rows": len(rows),
        "files": [str(f) for f in files],
        "failed": [str(f) for f in failed],
        "unchanged": before == (out / "results.csv").read_text(),
    }


def report_to_wandb(
    sweep_dir: Path, summary: dict[str, Any], config: Mapping[str, Any] | None, always: bool = False
) -> Path | None:
    """Log the sweep's table (a W&B Table) and figures in one ``report`` run of its W&B group.

    ``config``: the sweep's config (as Hydra callbacks get it, or ``multirun.yaml``); its W&B
    logger entry gives project, entity, mode and group. Without one nothing is logged unless
    ``always`` (then project ``singexp``, group :func:`sweep_group` of the folder). Failures are
    one warning: the table and figures are on disk already."""
    from singexp.loggers import log_sweep_table, wandb_spec  # torch-heavy: only when needed

    spec = wandb_spec(config.get("logger")) if config is not None else None
    if spec is None and not always:
        return None
    if not summary["points"] or (summary.get("unchanged") and not always):
        return None  # nothing new since the last report run
    if spec is None:
        name = config.get("experiment_name") if config is not None else None
        group = sweep_group(str(name), sweep_dir) if name else sweep_dir.resolve().name
        spec = OmegaConf.create({"mode": "auto", "project": "singexp", "group": group})
    try:
        return log_sweep_table(
            spec,
            str(spec.group),
            [flat_row(r) for r in collect(sweep_dir)],
            [Path(f) for f in summary["files"]],
            sweep_dir / "report",
        )
    except Exception as error:
        log.warning("could not log the sweep table to W&B: %s", error)
        return None


class ReportCallback(Callback):
    """Hydra callback: aggregate the sweep when a multirun ends; with W&B on, also log the table
    as a W&B Table (and the figures) in the sweep's group."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from filelock import FileLock

        sweep_dir = Path(config.hydra.sweep.dir)
        with FileLock(str(sweep_dir / ".report.lock")):  # two copies of a sweep end together
            summary = report(sweep_dir)
        FAILED_POINTS.extend(Path(f) for f in summary["failed"])
        report_to_wandb(sweep_dir, summary, config)


def summary_line(sweep_dir: Path, result: dict[str, Any]) -> str:
    """The report's last line for a reader: points, files written, failed points, W&B run."""
    n, files, failed = result["points"], len(result["files"]), len(result["failed"])
    line = (
        f"report: {n} point{'s' if n != 1 else ''}, {files} file{'s' if files != 1 else ''} in "
        f"{sweep_dir / 'report'}, {failed} failed"
    )
    if result.get("wandb_run"):
        line += f"; W&B run {result['wandb_run']}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m singexp.report", description="Aggregate a singexp sweep folder."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and figures to W&B (the sweep's group; offline without "
        "credentials or network)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with the summary as one JSON line (`summary: {...}`: files, failed points, "
        "W&B run) for scripts",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir() or not any(args.sweep_dir.rglob("metrics.json")):
        why = "no such folder" if not args.sweep_dir.is_dir() else "no metrics.json in it"
        print(f"singexp.report: {args.sweep_dir}: {why}", file=sys.stderr)
        raise SystemExit(2)
    result = report(args.sweep_dir)
    if args.wandb:
        saved = args.sweep_dir / "multirun.yaml"
        config = cast("DictConfig | None", OmegaConf.load(saved) if saved.is_file() else None)
        folder = report_to_wandb(args.sweep_dir, result, config, always=True)
        result["wandb_run"] = str(folder) if folder else None
    table = args.sweep_dir / "report" / "results.md"
    if result["rows"] and table.is_file():  # the table it wrote, as a reader wants it
        print(table.read_text())
    if args.json:  # the files written, failed points and W&B run, for scripts: one line, last
        print("summary: " + json.dumps(result))
    else:
        print(summary_line(args.sweep_dir, result))
    if result["failed"]:  # said above, one line each; the exit status says so too
        raise SystemExit(1)


if __name__ == "__main__":
    main()
