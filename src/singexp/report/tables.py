"""The report's Markdown and CSV files: ``results.csv``/``results.md``, ``paired.csv``/
``paired.md`` (with their figures), ``drop.csv``/``drop.md``, ``trials.csv`` and the trials
table, ``flops.md``; the rows flattened for CSV files and W&B tables. The metric labels they use
(:data:`METRICS`, :data:`LABELS`, :data:`LOWER_IS_BETTER`) live in :mod:`singexp.report.labels`
and are importable from here too."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from singexp.faults import atomic_write_text
from singexp.points import BASELINE, Point
from singexp.report.collect import search_direction, trial_rows
from singexp.report.figures import FIGURES, _title, figure
from singexp.report.labels import LABELS, LOWER_IS_BETTER, METRICS, QUICK_NOTE, _row_order
from singexp.report.statistics import drop_rows

__all__ = [
    "LABELS",
    "LOWER_IS_BETTER",
    "METRICS",
    "PAIRED_FIELDS",
    "drop_markdown",
    "flat_row",
    "paired_markdown",
    "read_drop",
    "read_paired",
    "write_drop",
    "write_flops",
    "write_paired",
    "write_tables",
    "write_trials",
]


#: the columns of ``drop.csv``
DROP_FIELDS = [
    "bcr",
    "snr_db",
    "method",
    "variant",
    "metric",
    "matched_data",
    "matched",
    "mismatched_data",
    "mismatched",
    "delta",
    "gain_matched",
    "gain_mismatched",
]


def write_drop(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``drop.csv`` and ``drop.md`` (:func:`drop_markdown`) of :func:`drop_rows` (nothing when
    there is no drop to show)."""
    drops = drop_rows(rows)
    if not drops:
        return []
    out.mkdir(parents=True, exist_ok=True)
    csv_path = _write_csv(out / "drop.csv", DROP_FIELDS, drops)
    md_path = out / "drop.md"
    atomic_write_text(md_path, drop_markdown(drops))
    return [csv_path, md_path]


def drop_markdown(drops: list[dict[str, Any]]) -> str:
    """The drop table: one row per point and method, one column per metric with "matched →
    mismatched (Δ)"; then each method's gain over DeepJSCC on the same data."""
    metrics = [m for m in METRICS if any(d["metric"] == m for d in drops)]
    table: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    gains: dict[tuple[Any, ...], dict[str, str]] = defaultdict(dict)
    for d in sorted(drops, key=_row_order):
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
    return "\n".join(lines) + "\n"


def read_drop(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a ``drop.csv``, typed as :func:`drop_rows` makes them."""
    with csv_path.open() as f:
        rows: list[dict[str, Any]] = list(csv.DictReader(f))
    for r in rows:
        r["snr_db"] = float(r["snr_db"])
        for key in ("matched", "mismatched", "delta"):
            r[key] = float(r[key])
        for key in ("gain_matched", "gain_mismatched"):
            r[key] = float(r[key]) if r[key] not in ("", None) else None
    return rows


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
    followed by ``notes`` (metrics not measured, failed points, duplicate points); the table
    opens with :data:`QUICK_NOTE` when rows are of ``quick=true`` points."""
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
    if any(r.get("quick") for r in rows):  # quick=true points: say what their numbers are not
        quick = len({r.get("point") for r in rows if r.get("quick")})
        points = len({r.get("point") for r in rows})
        some = "" if quick == points else f" ({quick} of {points} points)"
        text += f"{QUICK_NOTE}{some}.\n\n"
    text += (
        f"Mean ± 95% confidence interval over {'/'.join(splits)} images (SWD: one value per set "
        "of images, ×10³; ↓ lower is better).\n\n" + "\n".join(lines) + "\n"
    )
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    atomic_write_text(md_path, text)
    return csv_path, md_path


def write_flops(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """``flops.md``: per method and steps, the FLOPs per image (:mod:`singexp.flops`: steps ×
    one step's UNet FLOPs, the embedded prior and the 256 px CelebA-HQ DDPM counted from its
    architecture) beside the measured seconds per image."""
    from singexp.flops import STEP_BACKWARD, celebahq_unet, unet_flops  # torch: only here
    from singexp.models.prior import load_prior

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
