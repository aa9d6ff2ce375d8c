"""The NFE–quality front of a ``+experiment=nfe_front`` sweep: paired against each method's
default (``nfe=ref``), point by point, into one committed JSON and a figure.

    python tools/nfe_front.py outputs/sweeps/nfe_front_none \\
        --out docs/results/data/nfe_front.json --figure docs/results/nfe_front.png

Per (point, method, NFE budget), from the points' ``per_image.csv`` and ``metrics.json``:

- the NFE the method ran (``samplers.<m>.nfe``: every UNet forward and backward), its CPU and
  wall seconds per image (``cpu_seconds_per_image``: the worker process's CPU time, robust to
  the machine's other load);
- the per-image paired difference budget − ref of PSNR, SSIM, ST-LPIPS and the consistency
  PSNR(A x̃, A x̂), mean ± 95 % CI (the same images and channel noise at every point:
  :func:`singexp.report.statistics.paired_differences`); SWD is a set-level measure: its
  difference without a CI;
- ``not_worse``: per measure, whether the budget is not worse than ref beyond the paired 95 %
  CI (mean difference in the worse direction ≤ its CI half-width), and ``within_ref_ci``:
  whether |Δ| ≤ the half-width of ref's own 95 % CI (the looser reading);
- ``fast``: per method, the fewest NFE budget that is ``not_worse`` on PSNR and ST-LPIPS at
  every point (and the same for ``within_ref_ci``): what ``conf/sampler/fast/`` should hold.

``--merge OLD.json`` keeps OLD's rows of the (point, method, budget) the sweep does not hold (a
sweep that re-ran one point and the references), each row saying which sweep and commit it came
from (``source``); where both hold a method's ``ref`` at a point, their means must agree
(``ref_check``: the same code gives the same numbers), else the merge is refused.

The machine (CPU model and flags), torch, the precision and threads come from the points.
``tools/doc_tables.py`` renders the JSON into the docs (kinds ``nfe_front``, ``nfe_fast``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from singexp.report.statistics import mean_ci, paired_differences

#: the paired measures (per_image.csv columns) and whether lower is better
PAIRED = {"psnr": False, "ssim": False, "stlpips": True, "psnr_A_xhat": False}
#: the measures that pick the fast preset (issue 40)
DECIDING = ("psnr", "stlpips")
METHODS = ("sing_zero", "sing_inn", "dps_jscc", "inverse_jscc")
REF = "ref"


def cpu_description() -> dict[str, Any]:
    """CPU model, cores and the SIMD flags that decide bf16/fp32 speed."""
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_point(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any]]:
    """A point's metrics.json, per_image.csv rows and its front keys (point, nfe)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    with (folder / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    config = (folder / "config.yaml").read_text()
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config)
    keys = {"point": str(cfg.front.point), "budget": str(cfg.nfe), "lever": str(cfg.front.lever)}
    return metrics, rows, keys


def _points(sweep: Path) -> tuple[dict[tuple[str, str], Any], str | None]:
    points: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, str]]]] = {}
    lever = None
    for folder in sorted(p.parent for p in sweep.glob("*/metrics.json")):
        metrics, rows, keys = read_point(folder)
        points[(keys["point"], keys["budget"])] = (metrics, rows)
        lever = keys["lever"]
    if not points:
        raise SystemExit(f"{sweep}: no finished points (*/metrics.json)")
    return points, lever


def front(sweep: Path, reference: Path | None = None) -> dict[str, Any]:
    """The front of one sweep folder (module docstring); ``reference``: the sweep whose
    ``nfe=ref`` points it pairs with (a lever's sweep: the base front's; default itself)."""
    points, lever = _points(sweep)
    refs = _points(reference)[0] if reference is not None else points
    out_rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    skipped: list[str] = []
    for (point, budget), (metrics, rows) in sorted(points.items()):
        ref = refs.get((point, REF))
        if ref is None:  # not finished yet: left out, and said so
            skipped.append(f"{point}_nfe{budget}")
            continue
        ref_metrics, ref_rows = ref
        first = next(m for m in METHODS if m in metrics["methods"])  # a lever: some methods
        info.setdefault("images", metrics["methods"][first]["images"])
        info.setdefault("precision", (metrics.get("evaluate") or {}).get("precision_used"))
        info.setdefault("threads", metrics.get("threads"))
        for method in METHODS:
            if method not in metrics["methods"]:
                continue
            tagged = [{**r, "method": "x"} for r in rows if r["method"] == method] + [
                {**r, "method": "ref"} for r in ref_rows if r["method"] == method
            ]
            paired = paired_differences(tagged, "ref", tuple(PAIRED))
            summary, ref_summary = metrics["methods"][method], ref_metrics["methods"][method]
            record = metrics["samplers"][method]
            row: dict[str, Any] = {
                "point": point,
                "bcr": metrics["bcr"],
                "snr_db": float(metrics["snr_db"]),
                "method": method,
                "budget": budget,
                # the default itself (a lever's sweep pairs its own nfe=ref with the base's)
                "reference_itself": budget == REF and reference is None,
                "nfe": record.get("nfe"),
                "steps": record.get("steps"),
                "scheduler": record.get("scheduler"),
                "iterations": (metrics["samplers"][method].get("iterations")),
                "cpu_s_per_image": summary.get("cpu_seconds_per_image"),
                "wall_s_per_image": summary.get("seconds_per_image"),
                "mean": {m: summary.get(m) for m in (*PAIRED, "swd")},
                "swd_delta": _delta(summary.get("swd"), ref_summary.get("swd")),
                "paired": {},
                "not_worse": {},
                "within_ref_ci": {},
            }
            for m, lower in PAIRED.items():
                if (("x", m)) not in paired:
                    continue
                mean, ci, n = paired[("x", m)]
                row["paired"][m] = {"mean": mean, "ci95": ci, "n": n}
                row["not_worse"][m] = not_worse(mean, ci, lower)
                ref_values = [float(r[m]) for r in ref_rows if r["method"] == method and r[m]]
                _, ref_ci = mean_ci(ref_values)
                row["within_ref_ci"][m] = bool(abs(mean) <= ref_ci) if ref_values else None
            out_rows.append(row)
    return {
        "sweep": str(sweep),
        "reference": str(reference or sweep),
        "lever": lever,
        "cpu": cpu_description(),
        "torch": _torch_version(),
        "commit": _commit(),
        **info,
        "points": sorted({r["point"] for r in out_rows}, key=["main", "low", "high"].index),
        "skipped_without_ref": skipped,
        "rows": out_rows,
        "fast": {
            "not_worse": fastest(out_rows, "not_worse"),
            "within_ref_ci": fastest(out_rows, "within_ref_ci"),
        },
    }


def merge(new: dict[str, Any], old: dict[str, Any], tolerance: float = 1e-6) -> dict[str, Any]:
    """``new`` with ``old``'s rows of every (point, method, budget) ``new`` lacks (module
    docstring); refused (SystemExit) where both hold a ref whose means differ beyond
    ``tolerance``: rows of different code or settings are not one front."""
    source_new = {"sweep": new["sweep"], "commit": new["commit"]}
    source_old = {"sweep": old["sweep"], "commit": old["commit"]}
    by_key = {(r["point"], r["method"], r["budget"]): r for r in new["rows"]}
    checked: list[str] = []
    for row in old["rows"]:
        twin = by_key.get((row["point"], row["method"], row["budget"]))
        if row["budget"] != REF or twin is None:
            continue
        for m, value in row["mean"].items():
            other = twin["mean"].get(m)
            if value is None or other is None:
                continue
            if abs(float(value) - float(other)) > tolerance:
                raise SystemExit(
                    f"--merge: {row['method']}'s ref at {row['point']} differs ({m}: {value} in "
                    f"{old['sweep']} at {old['commit']}, {other} in {new['sweep']}): not one front"
                )
        checked.append(f"{row['point']}/{row['method']}")
    rows = [{**r, "source": r.get("source", source_new)} for r in new["rows"]]
    kept = [
        {**r, "source": r.get("source", source_old)}
        for r in old["rows"]
        if (r["point"], r["method"], r["budget"]) not in by_key
    ]
    order = ["main", "low", "high"]
    rows = sorted(
        rows + kept,
        key=lambda r: (
            order.index(r["point"]),
            METHODS.index(r["method"]),
            _budget_order(r["budget"]),
        ),
    )
    return {
        **new,
        "rows": rows,
        "points": sorted({r["point"] for r in rows}, key=order.index),
        "skipped_without_ref": [
            s
            for s in new["skipped_without_ref"]
            if s not in {f"{r['point']}_nfe{r['budget']}" for r in rows}
        ],
        "merged": {"from": source_old, "rows_kept": len(kept), "ref_check": checked},
        "fast": {
            "not_worse": fastest(rows, "not_worse"),
            "within_ref_ci": fastest(rows, "within_ref_ci"),
        },
    }


def not_worse(mean: float, ci: float, lower_is_better: bool) -> bool:
    """Whether a paired difference (x − ref: ``mean`` ± ``ci``) is not worse than ref beyond its
    95 % CI: the mean difference in the worse direction ≤ the CI half-width."""
    worse = mean if lower_is_better else -mean  # > 0: worse than ref
    return bool(worse <= ci) if math.isfinite(ci) else True


def _delta(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _budget_order(budget: str) -> float:
    return math.inf if budget == REF else float(budget)


def fastest(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """Per method: the fewest-NFE budget whose ``criterion`` holds for :data:`DECIDING` at
    every point (the default itself always does; a lever's ``ref``, paired with the base
    front's, only where it holds), with the NFE it ran at each point."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["method"], r["budget"])].append(r)
    out: dict[str, Any] = {}
    for method in METHODS:
        budgets = sorted({b for m, b in by if m == method}, key=_budget_order)
        for budget in budgets:
            group = by[(method, budget)]
            itself = budget == REF and all(r.get("reference_itself", True) for r in group)
            if itself or all(all(r[criterion].get(m) for m in DECIDING) for r in group):
                out[method] = {
                    "budget": budget,
                    "nfe": sorted({int(r["nfe"]) for r in group if r["nfe"] is not None}),
                    "points": len(group),
                }
                break
    return out


def figure(datas: list[dict[str, Any]], path: Path) -> None:
    """ST-LPIPS and PSNR against CPU seconds per image, one panel per point and measure: the
    base front (``lever`` none) in full lines, each lever's sweep in a line style of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((d for d in datas if d.get("lever") == "none"), datas[0])
    order = ["main", "low", "high"]
    points = sorted({r["point"] for r in base["rows"]}, key=order.index)
    fig, axes = plt.subplots(2, len(points), figsize=(4.6 * len(points), 7.5), squeeze=False)
    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3"), strict=True))
    styles = itertools.cycle(("--", ":", "-.", (0, (1, 3))))
    for data in datas:
        lever = data.get("lever") or "none"
        style = "-" if lever == "none" else next(styles)
        for j, point in enumerate(points):
            for i, metric in enumerate(("stlpips", "psnr")):
                ax = axes[i][j]
                for method in METHODS:
                    rows = [
                        r
                        for r in data["rows"]
                        if r["point"] == point
                        and r["method"] == method
                        and r["cpu_s_per_image"]
                        and r["mean"].get(metric) is not None
                    ]
                    if not rows:
                        continue
                    rows.sort(key=lambda r: r["cpu_s_per_image"])
                    xs = [r["cpu_s_per_image"] for r in rows]
                    ys = [r["mean"][metric] for r in rows]
                    label = method if lever == "none" else f"{method}, {lever}"
                    if len(rows) == 1 and lever != "none":  # a lever at the default's steps
                        ax.plot(xs, ys, "*", ms=10, color=colours[method], label=label)
                        continue
                    ax.plot(xs, ys, style, marker="o", ms=3, color=colours[method], label=label)
                    if lever == "none":
                        for r, x, y in zip(rows, xs, ys, strict=True):
                            ax.annotate(str(r["nfe"]), (x, y), fontsize=6, xytext=(2, 2),
                                        textcoords="offset points")  # fmt: skip
    for j, point in enumerate(points):
        first = next(r for r in base["rows"] if r["point"] == point)
        for i, metric in enumerate(("stlpips", "psnr")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_title(f"BCR {first['bcr']}, {first['snr_db']:g} dB", fontsize=9)
            ax.set_xlabel("CPU seconds per image (log; labels: NFE)", fontsize=8)
            ax.set_ylabel("ST-LPIPS ↓" if metric == "stlpips" else "PSNR (dB) ↑", fontsize=8)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    cpu = base["cpu"]
    fig.suptitle(
        f"NFE–quality front · {base.get('images')} test images · {base.get('precision')}, "
        f"{base.get('threads')} thread · {cpu['model']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("sweep", type=Path, nargs="?", help="the nfe_front sweep folder")
    parser.add_argument("--out", type=Path, default=None, help="the JSON to write")
    parser.add_argument(
        "--reference", type=Path, default=None, help="the sweep holding the nfe=ref points"
    )
    parser.add_argument(
        "--plot", type=Path, nargs="*", default=[], help="JSONs to draw (default: --out's)"
    )
    parser.add_argument("--figure", type=Path, default=None, help="the PNG to write")
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        help="an earlier JSON whose rows the sweep lacks are kept",
    )
    args = parser.parse_args(argv)
    data: dict[str, Any] = {}
    if args.sweep is not None:
        if args.out is None:
            parser.error("a sweep needs --out")
        data = front(args.sweep, args.reference)
        if args.merge is not None:
            data = merge(data, json.loads(args.merge.read_text()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(json.dumps(data["fast"], indent=1), file=sys.stderr)
    if args.figure is not None:
        datas = [json.loads(p.read_text()) for p in args.plot] or [data]
        figure(datas, args.figure)
    return data


if __name__ == "__main__":
    main()
