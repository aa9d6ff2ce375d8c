"""The whole embedded SNR × BCR grid, from an empty output folder: wall and CPU time.

Runs the README's grid command as a user would, in a fresh output root (``paths.root``), so no
finished point is reused:

    .venv/bin/python -m singexp +experiment=paper_grid launcher=joblib paths.root=<empty>

(18 points: SNR -5..5 dB × BCR 1/96, 1/48, 1/24; 64 test images and 100 sampler steps each;
DeepJSCC, SING-Zero, SING-INN and the mean image per point), and measures

- the wall time of the whole command and the CPU time of it and every process it started
  (``RUSAGE_CHILDREN``: the joblib workers included);
- the load average before, during (sampled every 5 s) and after;
- where the time goes, from each point's metrics.json: the point's own wall time
  (``timing``), each method's sampling time (``seconds_per_image`` × images), and the rest
  (building the models, metrics, figures, files) — the profile that says where a gap to the
  goal lies.

    .venv/bin/python benchmarks/grid.py                                  # ~10-40 min, 2 cores
    .venv/bin/python benchmarks/grid.py -- evaluate.precision=fp32       # any overrides
    .venv/bin/python benchmarks/grid.py --quick                          # 2 points, seconds
    .venv/bin/python benchmarks/grid.py --experiment paper_grid_fast --name grid_fast  # fast

Writes ``outputs/benchmarks/grid.json`` and ``grid.md`` (``--out DIR`` elsewhere; the tracked
``benchmarks/results/grid.md`` is the reference run, replaced only on purpose with
``--out benchmarks/results``). The goal: the 18 points in ≤ 10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# from benchmarks/ (on sys.path): children that end with this process, and the machine
# description and output files as the other benchmarks
import child_processes
import torch
from guided_step import commit
from sampler_overhead import device_name, write_results

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks"
#: the goal for the full grid on 2 cores (docs/results/grid.md)
GOAL_S = 600.0
#: the README's grid command (paths.root added: an empty output folder); ``--experiment``
#: replaces its preset (paper_grid_fast: the fast samplers, issue 40)
COMMAND = ["-m", "singexp", "+experiment=paper_grid", "launcher=joblib"]
#: --quick: 2 points of the quick preset (8 images, 10 steps)
QUICK = ["quick=true", "channel.snr_db=0,5", "bcr=1_48"]


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while the grid runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_flags() -> list[str]:
    """The CPU's SIMD flags that decide fp32 / bf16 speed (from /proc/cpuinfo)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(command: list[str], log: Path, what: str) -> None:
    """``command`` with its output in ``log``; a failure ends the benchmark with the log's tail."""
    with log.open("w") as out:
        # the grid (and what it starts in its process group) ends with the benchmark
        done = child_processes.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{what} failed (exit {done.returncode}); its log {log}:\n{tail}")


def run_grid(
    root: Path, overrides: list[str], log: Path, experiment: str = "paper_grid"
) -> dict[str, Any]:
    """The grid command in ``root`` (must not hold results), timed; its output in ``log``."""
    preset = [a if a != "+experiment=paper_grid" else f"+experiment={experiment}" for a in COMMAND]
    command = [sys.executable, *preset, f"paths.root={root}", *overrides]
    cpu0, load0 = children_cpu(), os.getloadavg()
    started = time.perf_counter()
    with LoadSampler() as load:
        run_logged(command, log, "the grid command")
    wall = time.perf_counter() - started
    return {
        "command": " ".join(["python", *command[1:]]),
        "wall_s": wall,
        "cpu_s": children_cpu() - cpu0,
        "load_before": load0[0],
        "load_after": os.getloadavg()[0],
        "load_during": {
            "mean": statistics.fmean(load.samples) if load.samples else None,
            "max": max(load.samples) if load.samples else None,
            "samples": len(load.samples),
        },
    }


def profile(sweep: Path) -> dict[str, Any]:
    """Where the points' time went, from their metrics.json files."""
    points = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    methods: dict[str, float] = {}
    point_wall, point_cpu, precisions, threads = [], [], set(), set()
    for folder in points:
        m = json.loads((folder / "metrics.json").read_text())
        timing = m.get("timing", {})
        point_wall.append(float(timing.get("wall_s", float("nan"))))
        point_cpu.append(float(timing.get("cpu_s", float("nan"))))
        precisions.add(str(m.get("evaluate", {}).get("precision_used", "fp32")))
        threads.add(int(m.get("threads", 0)))
        for name, summary in m.get("methods", {}).items():
            seconds = summary.get("seconds_per_image")
            if seconds is not None:
                methods[name] = methods.get(name, 0.0) + float(seconds) * int(summary["images"])
    sampled = sum(methods.values())
    return {
        "points": len(points),
        "point_wall_s": sum(point_wall),
        "point_cpu_s": sum(point_cpu),
        "point_wall_mean_s": statistics.fmean(point_wall) if point_wall else None,
        "method_wall_s": methods,
        "other_in_points_wall_s": sum(point_wall) - sampled,
        "precision_used": sorted(precisions),
        "threads_per_worker": sorted(threads),
    }


def markdown(report: dict[str, Any]) -> str:
    run, prof = report["run"], report["profile"]
    ok = "✓" if run["wall_s"] <= GOAL_S and not report["quick"] else "✗"
    goal = "— (quick)" if report["quick"] else f"≤ {GOAL_S / 60:.0f} min {ok}"
    during = run["load_during"]
    lines = [
        "# The embedded SNR × BCR grid from an empty output folder",
        "",
        f"{report['device']} ({', '.join(report.get('cpu_flags') or [])}), torch "
        f"{report['torch']}, code `{report['commit']}`. Command: "
        f"`{run['command']}`. Load average (1 min) before / during (mean, max) / after: "
        f"{run['load_before']:.2f} / {_f(during['mean'])}, {_f(during['max'])} / "
        f"{run['load_after']:.2f}.",
        "",
        "| points | wall | CPU (all processes) | goal | precision used | threads per worker |",
        "|---|---|---|---|---|---|",
        f"| {prof['points']} | {_min(run['wall_s'])} | {_min(run['cpu_s'])} | {goal} | "
        f"{', '.join(prof['precision_used'])} | "
        f"{', '.join(map(str, prof['threads_per_worker']))} |",
        "",
        "Where the time goes (worker wall time summed over the points, from each point's "
        "metrics.json; the workers run side by side, so these add up to about the wall time "
        "× workers):",
        "",
        "| part | worker time | share |",
        "|---|---|---|",
    ]
    total = run["wall_s"] * max(report["workers"], 1)
    parts = [(f"method: {k}", v) for k, v in sorted(prof["method_wall_s"].items())]
    parts.append(
        ("the points' other work (models, metrics, figures, files)", prof["other_in_points_wall_s"])
    )
    parts.append(
        (
            "outside the points (start-up, imports, Hydra, W&B, the report)",
            total - prof["point_wall_s"],
        )
    )
    for name, seconds in parts:
        lines.append(f"| {name} | {_min(seconds)} | {100 * seconds / total:.0f} % |")
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _min(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where grid.json/.md go")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="the grid's output root (must be empty; default: a new folder under --out)",
    )
    parser.add_argument("--quick", action="store_true", help="2 points, 8 images, 10 steps")
    parser.add_argument("--workers", type=int, default=2, help="joblib workers (n_jobs)")
    parser.add_argument(
        "--experiment", default="paper_grid", help="the grid preset (paper_grid_fast: fast)"
    )
    parser.add_argument("--name", default="grid", help="the output files' name (<name>.json)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides after --")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.root or args.out / f"grid_run_{time.strftime('%Y%m%d_%H%M%S')}"
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"--root {root} is not empty: the grid must start from nothing")
    root.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"hydra.launcher.n_jobs={args.workers}",
        *(QUICK if args.quick else []),
        *args.overrides,
    ]
    print(
        f"grid: {root} ({'quick, ' if args.quick else ''}log {root / 'grid.log'})",
        file=sys.stderr,
        flush=True,
    )
    run = run_grid(root, overrides, root / "grid.log", args.experiment)
    report = {
        "device": device_name(),
        "cpu_flags": cpu_flags(),
        "experiment": args.experiment,
        "torch": torch.__version__,
        "commit": commit(),
        "quick": args.quick,
        "workers": args.workers,
        "overrides": overrides,
        "root": str(root),
        "goal_s": GOAL_S,
        "run": run,
        "profile": profile(root / "sweeps" / args.experiment),
    }
    table = markdown(report)
    write_results(args.out, args.name, report, table)
    return report


if __name__ == "__main__":
    main()
