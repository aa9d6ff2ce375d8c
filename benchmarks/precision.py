"""bf16 against fp32 sampling at the main job's point: speed and paired quality.

Runs the main job (``+experiment=sing_inn``: BCR 1/48, 0 dB, 64 test images, 100 steps) once
in each precision (``evaluate.precision``), the same images and channel noise, and compares per
image: for every method and metric the mean of (bf16 − fp32) over the images with its 95 %
confidence interval (``singexp.report.paired_differences``), the speed of each method
(seconds per image) and the set-level SWD. A precision "holds" for a method where every paired
interval contains 0 (the difference is within the noise of the measure).

    .venv/bin/python benchmarks/precision.py                 # ~8 min on 2 AMX cores
    .venv/bin/python benchmarks/precision.py --quick         # 8 images, 10 steps (the test)
    .venv/bin/python benchmarks/precision.py --fp32 DIR --bf16 DIR   # two finished runs
    .venv/bin/python benchmarks/precision.py --sweeps FP32_SWEEP BF16_SWEEP  # two grids

Writes ``outputs/benchmarks/precision.json`` and ``.md`` (``--out DIR`` elsewhere; the tracked
``benchmarks/results/precision.md`` is the reference run). On a CPU without bf16 instructions
(AVX2 only) bf16 is emulated and 40-130× slower: run it there only with ``--quick``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch
from grid import run_logged
from guided_step import commit
from sampler_overhead import device_name, write_results

from singexp.report import mean_ci, paired_differences
from singexp.samplers.compute import native_bf16

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks"
PRECISIONS = ("fp32", "bf16")
METRICS = ("psnr", "ssim", "stlpips")
#: ↓ metrics: a positive bf16 − fp32 is worse
LOWER_IS_BETTER = {"stlpips", "swd"}


def run_point(precision: str, folder: Path, quick: bool) -> None:
    """The main job in ``precision`` into ``folder`` (CSV logger only: no W&B run)."""
    command = [
        sys.executable,
        "-m",
        "singexp",
        "+experiment=sing_inn",
        "logger=csv",
        f"evaluate.precision={precision}",
        f"hydra.run.dir={folder}",
        "print_config=false",
    ]
    if quick:
        command.append("quick=true")
    log = folder.parent / f"{precision}.log"
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run_logged(command, log, f"{precision}: the main job")
    print(f"{precision}: {time.perf_counter() - started:.0f} s ({folder})", file=sys.stderr)


@cache  # a point's rows serve its own comparison and the pooled one (--sweeps)
def read_rows(folder: Path) -> list[dict[str, Any]]:
    with (folder / "per_image.csv").open() as f:
        return list(csv.DictReader(f))


def compare(folders: dict[str, Path]) -> dict[str, Any]:
    """Per method: seconds per image in each precision, SWD, paired bf16 − fp32 per metric."""
    metrics = {p: json.loads((f / "metrics.json").read_text()) for p, f in folders.items()}
    rows = {p: read_rows(f) for p, f in folders.items()}
    used = {p: metrics[p].get("evaluate", {}).get("precision_used", p) for p in PRECISIONS}
    out: dict[str, Any] = {}
    for method in metrics["fp32"]["methods"]:
        per_image = [
            {**r, "method": p} for p in PRECISIONS for r in rows[p] if r["method"] == method
        ]
        diffs = paired_differences(per_image, "fp32", METRICS)
        summary = {p: metrics[p]["methods"][method] for p in PRECISIONS}
        # the noise of the measure itself: the 95 % interval of the metric over the images
        noise = {
            m: mean_ci([float(r[m]) for r in rows["fp32"] if r["method"] == method])[1]
            for m in METRICS
        }
        paired = {
            m: {
                "mean": d[0],
                "ci": d[1],
                "n": d[2],
                "within_ci": abs(d[0]) <= d[1],
                "measure_ci": noise[m],
                "within_measure_noise": abs(d[0]) <= noise[m],
            }
            for (name, m), d in diffs.items()
            if name == "bf16"
        }
        out[method] = {
            "seconds_per_image": {p: summary[p].get("seconds_per_image") for p in PRECISIONS},
            "swd": {p: summary[p].get("swd") for p in PRECISIONS},
            "paired": paired,
            "paired_ci_contains_0": all(v["within_ci"] for v in paired.values()),
            "within_measure_noise": all(v["within_measure_noise"] for v in paired.values()),
        }
    return {"precision_used": used, "methods": out}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# bf16 against fp32 sampling at the main job's point",
        "",
        f"{report['device']} (bf16 native: {report['native_bf16']}), torch {report['torch']}, "
        f"code `{report['commit']}`. `+experiment=sing_inn` "
        f"({'quick=true: 8 images, 10 steps' if report['quick'] else '64 test images, 100 steps'}"
        f"), run once per precision (`evaluate.precision`; ran: "
        f"{report['comparison']['precision_used']}), the same images and channel noise; "
        f"load average (1 min) before / after: {report['load_before']:.2f} / "
        f"{report['load_after']:.2f}. Paired: mean of (bf16 − fp32) per image ± 95 % CI; "
        "* the interval excludes 0. DeepJSCC does not sample (it runs in fp32 in both).",
        "",
        "| method | s/image fp32 | s/image bf16 | speed-up | Δ PSNR (dB) | Δ SSIM | Δ ST-LPIPS ↓ | "
        "SWD ×10³ fp32 / bf16 | paired CIs contain 0 | within the measure's CI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in report["comparison"]["methods"].items():
        s32, s16 = r["seconds_per_image"]["fp32"], r["seconds_per_image"]["bf16"]
        cells = []
        for m in METRICS:
            d = r["paired"].get(m)
            cells.append(
                "—"
                if d is None
                else f"{d['mean']:+.3f} ± {d['ci']:.3f}{'' if d['within_ci'] else ' *'}"
            )
        swd = r["swd"]
        swd_cell = "—" if swd["fp32"] is None else f"{swd['fp32']:.1f} / {swd['bf16']:.1f}"
        times = f"{s32:.3f} | {s16:.3f} | ×{s32 / s16:.2f}" if s32 and s16 else "— | — | —"
        lines.append(
            f"| {method} | {times} | {' | '.join(cells)} | "
            f"{swd_cell} | {_mark(r['paired_ci_contains_0'])} | "
            f"{_mark(r['within_measure_noise'])} |"
        )
    noise = [
        f"{method} {short} ± {r['paired'][m]['measure_ci']:.3f}"
        for method, r in report["comparison"]["methods"].items()
        if method in ("sing_zero", "sing_inn")
        for m, short in (("psnr", "PSNR"), ("stlpips", "ST-LPIPS"))
        if m in r["paired"]
    ]
    lines += [
        "",
        "The measure's own noise, the 95 % interval of the fp32 mean over the images: "
        + ", ".join(noise)
        + ". A paired interval is far narrower (the same images and noise in both runs), so it "
        "can exclude 0 for a difference much smaller than what the measure resolves.",
    ]
    return "\n".join(lines) + "\n"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def compare_sweeps(fp32: Path, bf16: Path) -> dict[str, Any]:
    """Every point folder finished in both sweeps, compared as :func:`compare` does, and per
    method the differences pooled over all points' images."""
    names = sorted(
        p.parent.name for p in fp32.glob("*/metrics.json") if (bf16 / p.parent.name).is_dir()
    )
    points = {n: compare({"fp32": fp32 / n, "bf16": bf16 / n}) for n in names}
    pooled: dict[str, Any] = {}
    for method in ("sing_zero", "sing_inn"):
        per_image: list[dict[str, Any]] = []
        for n in names:
            for precision, root in (("fp32", fp32), ("bf16", bf16)):
                per_image += [
                    {**r, "image": f"{n}/{r['image']}", "method": precision}
                    for r in read_rows(root / n)
                    if r["method"] == method
                ]
        diffs = paired_differences(per_image, "fp32", METRICS)
        worst = max(
            (
                abs(pt["methods"][method]["paired"]["stlpips"]["mean"])
                / pt["methods"][method]["paired"]["stlpips"]["measure_ci"],
                n,
            )
            for n, pt in points.items()
        )
        pooled[method] = {
            "pairs": diffs[("bf16", "stlpips")][2],
            "paired": {m: {"mean": d[0], "ci": d[1]} for (x, m), d in diffs.items() if x == "bf16"},
            "points_paired_ci_excludes_0": sum(
                not pt["methods"][method]["paired"]["stlpips"]["within_ci"]
                for pt in points.values()
            ),
            "points_beyond_measure_ci": sum(
                not pt["methods"][method]["within_measure_noise"] for pt in points.values()
            ),
            "largest_stlpips_over_measure_ci": {"ratio": worst[0], "point": worst[1]},
        }
    return {"points": len(names), "per_point": points, "pooled": pooled}


def sweeps_markdown(report: dict[str, Any]) -> str:
    grid = report["grid"]
    lines = [
        "# bf16 against fp32 sampling across the embedded grid",
        "",
        f"{report['device']}, torch {report['torch']}. {grid['points']} points of "
        f"`{report['sweeps']['fp32']}` (fp32) and `{report['sweeps']['bf16']}` (bf16), the same "
        "images and channel noise at each point. Pooled: mean of (bf16 − fp32) over every "
        "image of every point ± 95 % CI.",
        "",
        "| method | image pairs | Δ PSNR (dB) | Δ SSIM | Δ ST-LPIPS ↓ | points whose paired "
        "ST-LPIPS CI excludes 0 | points with a Δ beyond the measure's CI | largest "
        "Δ ST-LPIPS (absolute) / the measure's CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in grid["pooled"].items():
        cells = [f"{r['paired'][m]['mean']:+.4f} ± {r['paired'][m]['ci']:.4f}" for m in METRICS]
        worst = r["largest_stlpips_over_measure_ci"]
        lines.append(
            f"| {method} | {r['pairs']} | {' | '.join(cells)} | "
            f"{r['points_paired_ci_excludes_0']} of {grid['points']} | "
            f"{r['points_beyond_measure_ci']} of {grid['points']} | "
            f"{worst['ratio']:.2f} ({worst['point']}) |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--quick", action="store_true", help="quick=true: 8 images, 10 steps")
    parser.add_argument("--fp32", type=Path, default=None, help="a finished fp32 run folder")
    parser.add_argument("--bf16", type=Path, default=None, help="a finished bf16 run folder")
    parser.add_argument(
        "--sweeps",
        type=Path,
        nargs=2,
        metavar=("FP32", "BF16"),
        default=None,
        help="two finished sweeps of the same grid (e.g. benchmarks/grid.py's roots' "
        "sweeps/paper_grid): every point compared, writes precision_grid.json/.md",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.sweeps is not None:
        fp32, bf16 = args.sweeps
        report = {
            "device": device_name(),
            "torch": torch.__version__,
            "sweeps": {"fp32": str(fp32), "bf16": str(bf16)},
            "grid": compare_sweeps(fp32, bf16),
        }
        write_results(args.out, "precision_grid", report, sweeps_markdown(report))
        return report
    load_before = os.getloadavg()[0]
    folders: dict[str, Path] = {}
    for precision in PRECISIONS:
        given = getattr(args, precision)
        if given is None:
            given = args.out / "precision_runs" / precision
            run_point(precision, given, args.quick)
        folders[precision] = given
    report = {
        "device": device_name(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "torch": torch.__version__,
        "commit": commit(),
        "quick": args.quick,
        "folders": {p: str(f) for p, f in folders.items()},
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "comparison": compare(folders),
    }
    write_results(args.out, "precision", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
