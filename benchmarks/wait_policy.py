"""How torch's OpenMP threads should wait when other work shares the cores.

Each measurement is a fresh Python process (libgomp reads its wait policy once, when torch loads
it) that runs ``--forwards`` forwards of the embedded prior's UNet at the main job's batch (32,
32 px) and reports its wall and CPU time. Policies (``--policies``, default all):

- ``spin``: every core, libgomp's default (spin before sleeping): what runs did before;
- ``passive``: every core, ``OMP_WAIT_POLICY=PASSIVE``: what the command line sets now
  (``singexp.threads``);
- ``one_thread``: one thread (the earlier ``threads=auto`` under load).

Conditions: ``idle``; ``hogs_same_session``: one ``yes`` per core started from this process (the
same session: ``yes &`` in the job's shell); ``hogs_other_session``: the same hogs, each in a
session of its own (``setsid``: other users' jobs). Linux shares the CPU between sessions
(autogroups) before processes, so the two loaded cases differ: here the job's session gets 2/3
of a core whatever its thread count. Each round runs every policy once,
in rotating order; the median over rounds is reported, and its ratio to the same policy's idle
median.

    .venv/bin/python benchmarks/wait_policy.py            # ~7 min on 2 idle cores
    .venv/bin/python benchmarks/wait_policy.py --quick    # a few seconds (the test)

Run it on otherwise idle cores (the hogs are the only other work wanted). The hogs and the
measuring processes end with the benchmark however it ends (``child_processes``: ``finally``,
``atexit``, SIGTERM/SIGINT/SIGHUP, and the kernel's parent-death signal for SIGKILL); each hog's
command line is ``yes singexp-wait-policy-hog parent=PID``, so a test finds exactly its own. Writes
``outputs/benchmarks/wait_policy.json`` and ``.md`` (``--out DIR`` elsewhere); the tracked
``benchmarks/results/wait_policy.md`` is the reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# from benchmarks/ (on sys.path): children that end with this process, and the same machine
# description and output files as sampler_overhead
import child_processes
from sampler_overhead import device_name, write_results

from singexp.progress import say
from singexp.threads import WAIT_KEYS, available_cores

OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks"
CONDITIONS = ("idle", "hogs_same_session", "hogs_other_session")
#: policy -> (what it is, threads (0: every core), environment added)
POLICIES: dict[str, tuple[str, int, dict[str, str]]] = {
    "spin": ("every core, libgomp default (spin, then sleep)", 0, {}),
    "passive": ("every core, OMP_WAIT_POLICY=PASSIVE (singexp's default)", 0,
                {"OMP_WAIT_POLICY": "PASSIVE"}),
    "one_thread": ("one thread", 1, {}),
}  # fmt: skip

WORKER = """
import json, sys, time, torch
from singexp.models.prior import EMBEDDED_DIR, load_prior
threads, forwards, batch = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
unet = load_prior(str(EMBEDDED_DIR), expected_size=32).float().eval()
x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    unet(x, 500)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(forwards):
        unet(x, 500)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""


def measure(policy: str, cores: int, forwards: int, batch: int) -> dict[str, float]:
    """One fresh process's wall and CPU seconds for ``forwards`` UNet forwards."""
    _, threads, added = POLICIES[policy]
    env = {k: v for k, v in os.environ.items() if k not in (*WAIT_KEYS, "OMP_NUM_THREADS")}
    env.update(added)
    args = [str(threads or cores), str(forwards), str(batch)]
    out = child_processes.run(
        [sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def hog_argv(parent: int | None = None) -> list[str]:
    """A hog's command line: ``yes`` and a marker naming the benchmark's pid (``yes`` prints it,
    to /dev/null; a test finds its own hogs by it, never another user's ``yes``)."""
    return ["yes", f"singexp-wait-policy-hog parent={os.getpid() if parent is None else parent}"]


def start_hogs(condition: str, cores: int) -> list[subprocess.Popen[bytes]]:
    """``cores`` × ``yes``, in this session or each in its own; they end with this process."""
    if condition == "idle":
        return []
    other = condition == "hogs_other_session"
    return [
        child_processes.popen(hog_argv(), stdout=subprocess.DEVNULL, start_new_session=other)
        for _ in range(cores)
    ]


def hogs_only_for_test() -> None:
    """One hog of each session kind, a line on stdout, then sleep until a signal ends us (the
    test: after SIGTERM or SIGKILL no hog of this run may be left)."""
    hogs = start_hogs("hogs_same_session", 1) + start_hogs("hogs_other_session", 1)
    print("hogs " + " ".join(str(h.pid) for h in hogs), flush=True)
    try:
        while True:
            time.sleep(60)
    finally:
        for hog in hogs:
            child_processes.end(hog)


def table(results: dict[str, Any]) -> str:
    med = results["median_wall_s"]
    lines = [
        "# OpenMP wait policy beside CPU hogs (UNet forwards, wall time)",
        "",
        f"{results['device']}, torch threads = {results['cores']} (or 1), "
        f"{results['forwards']} forwards of the embedded prior's UNet at batch "
        f"{results['batch']} per measurement, a fresh process each; {results['rounds']} rounds, "
        f"policies in rotating order; median wall seconds, and in brackets the ratio to the same "
        f"policy's idle median. Hogs: {results['cores']} × `yes`. Load average (1 min) at start: "
        f"{results['load_start']:.2f}. This run: {results['minutes']:.1f} min.",
        "",
        "| policy | what | " + " | ".join(CONDITIONS) + " |",
        "|---|---|" + "---|" * len(CONDITIONS),
    ]
    for policy in results["policies"]:
        idle = med["idle"][policy]
        cells = [
            f"{med[c][policy]:.2f} s" + ("" if c == "idle" else f" ({med[c][policy] / idle:.2f}×)")
            for c in CONDITIONS
        ]
        lines.append(f"| `{policy}` | {POLICIES[policy][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--forwards", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32, help="the main job's batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 forward, 1 round")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--hogs-only-for-test", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hogs_only_for_test:
        hogs_only_for_test()
        return
    if args.quick:
        args.forwards, args.batch, args.rounds = 1, 2, 1
    cores = available_cores()
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for condition in CONDITIONS:
        hogs = start_hogs(condition, cores)
        try:
            time.sleep(0 if condition == "idle" or args.quick else 2)
            for r in range(args.rounds):
                k = r % len(args.policies)
                order = args.policies[k:] + args.policies[:k]
                for policy in order:
                    m = measure(policy, cores, args.forwards, args.batch)
                    runs.setdefault(condition, {}).setdefault(policy, []).append(m)
                say(f"{condition}: round {r + 1}/{args.rounds} done")
        finally:
            for hog in hogs:
                child_processes.end(hog)
    median = {
        c: {p: statistics.median(m["wall"] for m in runs[c][p]) for p in args.policies}
        for c in CONDITIONS
    }
    results = {
        "device": device_name(),
        "cores": cores,
        "forwards": args.forwards,
        "batch": args.batch,
        "rounds": args.rounds,
        "policies": args.policies,
        "load_start": load_start,
        "minutes": (time.perf_counter() - started) / 60,
        "median_wall_s": median,
        "runs": runs,
    }
    write_results(args.out, "wait_policy", results, table(results))


if __name__ == "__main__":
    main()
