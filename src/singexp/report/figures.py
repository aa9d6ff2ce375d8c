"""The report's figures: metric vs SNR (one panel per BCR, one line per method and variant),
metric vs sampler steps, wall seconds or INN training pairs, their titles, axis labels and line
styles, and whether the rows are a steps (NFE) sweep."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from singexp.points import TRIVIAL
from singexp.report.labels import LABELS, _bcr_value, display_name, method_order

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


def steps_vary(rows: list[dict[str, Any]]) -> bool:
    """Whether a method ran at more than one step count (an NFE sweep): methods with different
    steps of their own at one point (SING's 100 beside InverseJSCC's 5-step generator) are
    not a steps sweep."""
    steps: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r.get("steps"):
            steps[r["method"]].add(int(r["steps"]))
    return any(len(values) > 1 for values in steps.values())


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


def _legend_below(fig: Figure, axes: Any, title: str, columns: int) -> None:
    """One legend for the figure, below the panels (the title above them never meets it,
    whatever the number of panels), with every panel's entries once (a method missing from the
    first panel still gets its entry)."""
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=max(1, min(columns, len(labels))),
        fontsize=8,
        title=title,
    )


def figure(rows: list[dict[str, Any]], metric: str, info: dict[str, Any] | None = None) -> Figure:
    """``metric`` vs SNR: one panel per BCR (y shared), one line per method with CI error bars,
    the methods offset slightly along x, one legend for the figure outside the panels, a title
    with the number of images and sampler steps (``info``: :func:`sweep_info`)."""
    rows = line_rows([r for r in rows if r["metric"] == metric])
    bcrs = sorted({r["bcr"] for r in rows}, key=_bcr_value)
    reference = trivial_reference(rows)
    if reference is not None:  # drawn as a reference line, not a line of the autoscale
        rows = [r for r in rows if r["method"].partition(" · ")[0] != TRIVIAL]
    methods = sorted({r["method"] for r in rows}, key=lambda m: (method_order(m), m))
    snrs = sorted({r["snr_db"] for r in rows})
    span = (snrs[-1] - snrs[0]) if len(snrs) > 1 else 1.0
    step = min((b - a for a, b in itertools.pairwise(snrs)), default=span)
    offset = min(0.02 * span, 0.08 * step)  # within a point's neighbourhood: no mix-up
    variants = any(" · " in m for m in methods)
    width = 3.4 * len(bcrs) + 1.6
    fig = Figure(
        figsize=(max(width, 8.5) if variants else width, 4.2 if variants else 3.8),
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
                    x,
                    mean,
                    yerr=err,
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=display_name(method),
                    c=color,
                    ls=style,
                )
        ax.set_title(f"BCR {bcr}", fontsize=10)
        ax.set_xlabel("SNR (dB)")
        ax.set_xticks(snrs)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(AXIS_LABELS[metric])
    if reference is not None:
        _draw_reference(axes, reference)
    _legend_below(fig, axes, "method · variant" if variants else "method", 3 if variants else 4)
    fig.suptitle(_title(metric, info), fontsize=10)
    return fig


def trivial_reference(rows: list[dict[str, Any]]) -> float | None:
    """The mean image's mean over its lines' points when it lies outside the range of the
    other methods (their means ± CI): it is then drawn as a dashed reference line and the y
    axis is the methods'; ``None`` (drawn as a line like the others) otherwise."""
    trivial = [r["mean"] for r in rows if r["method"].partition(" · ")[0] == TRIVIAL]
    others = [r for r in rows if r["method"].partition(" · ")[0] != TRIVIAL]
    if not trivial or not others:
        return None

    def ci(r: dict[str, Any]) -> float:
        return 0.0 if math.isnan(r["ci95"]) else float(r["ci95"])

    low = min(r["mean"] - ci(r) for r in others)
    high = max(r["mean"] + ci(r) for r in others)
    level = sum(trivial) / len(trivial)
    return None if low <= level <= high else level


def _draw_reference(axes: Any, level: float) -> None:
    """The mean image as a dashed horizontal line at ``level`` in every panel, the y limits
    kept where the methods put them; a note at the panel's edge says where the line is."""
    low, high = axes[0].get_ylim()  # the methods' autoscale (the y axis is shared)
    below = level < low
    name = display_name(TRIVIAL)
    label = f"{name}: {level:.3g} ({'below' if below else 'above'} the axis)"
    for ax in axes:
        ax.axhline(level, ls="--", lw=1, c="0.35", label=label)
        ax.annotate(
            f"{'↓' if below else '↑'} {name} {level:.3g}",
            (0.02, 0.02 if below else 0.98),
            xycoords="axes fraction",
            va="bottom" if below else "top",
            fontsize=7,
            color="0.35",
        )
    axes[0].set_ylim(low, high)


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
    methods = sorted({r["method"] for r in rows}, key=lambda m: (method_order(m), m))
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
                    ax.axhline(mine[0]["mean"], ls="--", lw=1, c=color, label=display_name(method))
                continue
            if x == "seconds":
                stepped = [(n, r) for n, r in stepped if r.get("seconds_per_image")]
                if not stepped:
                    continue
            xs = [float(r["seconds_per_image"]) if x == "seconds" else float(n) for n, r in stepped]
            ys = [r["mean"] for _, r in stepped]
            err = [0.0 if math.isnan(r["ci95"]) else r["ci95"] for _, r in stepped]
            ax.errorbar(
                xs, ys, yerr=err, marker="o", ms=4, capsize=3, c=color, label=display_name(method)
            )
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
    _legend_below(fig, axes, "method", 4)
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
