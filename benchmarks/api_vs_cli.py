"""Per-image restoration through the command line and through ``SingPipeline``, beside one
CPU-heavy process.

The issue measured the Python API 9–16× slower than the command line on a busy 2-core machine:
the API did not set the OpenMP wait policy the command line sets (``OMP_WAIT_POLICY=PASSIVE``
before torch loads, :mod:`singexp.threads`), so torch's threads spun while the other process held
a core. The pipeline now sets it when imported before torch and applies the thread policy.

Each measurement is a fresh Python process restoring the same ``--images`` PNGs (32 px) with the
main job's methods (``+experiment=sing_inn quick=true``, ``--steps`` steps each):

- ``cli``: ``python -m singexp restore DIR ... out=TMP``;
- ``api``: ``from singexp.pipeline import SingPipeline`` first (the documented use), then
  ``SingPipeline.from_config([...])(files)``;
- ``api_torch_first``: the same with ``import torch`` first: too late to set the wait policy
  (the pipeline says so in one line): what the issue measured.

Per image = the restoration's seconds / images (the CLI's from its ``restore.log`` line, the
API's around its call), and the whole process's wall time / images (imports and model loading
included). One hog (``yes``) runs
throughout, started through ``child_processes`` (its own process group, killed in ``finally``,
at exit, on SIGTERM/SIGINT/SIGHUP, and by the kernel's parent-death signal on SIGKILL). Rounds
rotate the order; medians are reported.

    .venv/bin/python benchmarks/api_vs_cli.py            # ~3 min on 2 cores
    .venv/bin/python benchmarks/api_vs_cli.py --rounds 1 --images 4 --steps 2   # quick

Writes ``benchmarks/results/api_vs_cli.json`` and ``.md`` (``--out DIR`` elsewhere) with the CPU
(``lscpu``: model and flags).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import child_processes  # from benchmarks/ (on sys.path): children that end with this process

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WAYS = ("cli", "api", "api_torch_first")

API = """
import json, sys, time
started = time.perf_counter()
if sys.argv[1] == "torch_first":
    import torch  # noqa: F401  (before singexp: too late for the wait policy)
from singexp.pipeline import SingPipeline
overrides, files = json.loads(sys.argv[2]), json.loads(sys.argv[3])
pipe = SingPipeline.from_config(overrides)
call = time.perf_counter()
out = pipe(files)
done = time.perf_counter()
print(json.dumps({"call": done - call, "load": call - started}))
"""


def overrides(steps: int) -> list[str]:
    """The main job's methods at quick settings, ``steps`` steps each, no progress lines."""
    methods = [
        f"methods.{m}.{k}"
        for m in ("sing_zero", "sing_inn")
        for k in (f"steps={steps}", "progress=false")
    ]
    return ["+experiment=sing_inn", "quick=true", "logger=none", *methods]


def child_env() -> dict[str, str]:
    """This environment without thread or wait-policy choices: each way makes its own."""
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update({"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
    return env


def measure(way: str, folder: Path, files: list[str], steps: int, work: Path) -> dict[str, float]:
    """One fresh process restoring ``files`` the ``way`` way: its wall seconds (and the API's
    own restoration call)."""
    if way == "cli":
        args = [sys.executable, "-m", "singexp", "restore", str(folder), *overrides(steps)]
        args.append(f"out={work / f'cli_{time.monotonic_ns()}'}")
    else:
        mode = "torch_first" if way == "api_torch_first" else "pipeline_first"
        args = [sys.executable, "-c", API, mode, json.dumps(overrides(steps)), json.dumps(files)]
    started = time.perf_counter()
    done = child_processes.run(args, capture_output=True, text=True, env=child_env(), cwd=work)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{way} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = {"wall": wall}
    if way == "cli":  # the command's own restoration time, from its restore.log
        logged = (Path(args[-1].partition("=")[2]) / "restore.log").read_text()
        line = [x for x in logged.splitlines() if "] restored " in x][-1]
        result["call"] = float(line.split(" in ")[1].split(" s")[0])
    else:
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


def lscpu() -> dict[str, str]:
    """The CPU's model and flags (``lscpu``), and the cores this process may use."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return {
        "model": fields.get("Model name", "unknown"),
        "cpus": fields.get("CPU(s)", str(os.cpu_count())),
        "usable_cores": str(len(os.sched_getaffinity(0))),
        "flags": fields.get("Flags", ""),
    }


def write_images(folder: Path, count: int) -> list[str]:
    """``count`` random 48×40 RGB PNGs (resized to 32 px by both ways)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"image_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = write_images(work / "images", args.images)
        hog = child_processes.popen(
            ["yes", f"singexp-api-vs-cli-hog parent={os.getpid()}"], stdout=subprocess.DEVNULL
        )
        try:
            for r in range(args.rounds):
                order = WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]
                for way in order:
                    result = measure(way, work / "images", files, args.steps, work)
                    runs[way].append(result)
                    print(f"round {r + 1} {way}: {result}", flush=True)
        finally:
            child_processes.end(hog)
    per_image = {w: statistics.median(x["wall"] for x in runs[w]) / args.images for w in WAYS}
    calls = {w: statistics.median(x["call"] for x in runs[w]) / args.images for w in WAYS}
    ratio = {w: calls[w] / calls["cli"] for w in WAYS}
    ratio_process = {w: per_image[w] / per_image["cli"] for w in WAYS}
    cpu = lscpu()
    report: dict[str, Any] = {
        "cpu": cpu,
        "images": args.images,
        "steps": args.steps,
        "rounds": args.rounds,
        "load": "one `yes` process (the same session) throughout",
        "overrides": overrides(args.steps),
        "seconds_per_image": per_image,
        "call_seconds_per_image": calls,
        "ratio_to_cli": ratio,
        "ratio_to_cli_process": ratio_process,
        "runs": runs,
        "goal": "api <= 1.2 x cli per image",
        "met": ratio["api"] <= 1.2,
    }
    lines = [
        f"# API vs CLI per image, one CPU hog running ({cpu['model']}, {cpu['usable_cores']} "
        f"usable cores of {cpu['cpus']})",
        "",
        f"{args.images} images (32 px), +experiment=sing_inn quick=true, {args.steps} steps per "
        f"method (SING-Zero, SING-INN); a fresh process per measurement (imports and model "
        f"loading included); median of {args.rounds} rounds; one `yes` beside it throughout.",
        "",
        "| way | s / image (restoration) | × CLI | s / image (whole process) | × CLI |",
        "|---|---|---|---|---|",
    ]
    for way in WAYS:
        lines.append(
            f"| {way} | {calls[way]:.3f} | {ratio[way]:.2f} | {per_image[way]:.3f} "
            f"| {ratio_process[way]:.2f} |"
        )
    lines += [
        "",
        f"API / CLI per image (restoration) = {ratio['api']:.2f} (goal ≤ 1.2: "
        f"{'met' if report['met'] else 'not met'}); with torch imported before singexp (no "
        f"wait policy: the issue's case) {ratio['api_torch_first']:.2f}.",
        "",
        f"CPU flags: {cpu['flags']}",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api_vs_cli.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "api_vs_cli.md").write_text("\n".join(lines))
    print("\n".join(lines[:-3]))


if __name__ == "__main__":
    main()
