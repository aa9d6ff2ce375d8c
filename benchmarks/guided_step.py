"""The cost of one guided sampling step against a bare diffusers step, CPU time, paired rounds.

At the main job's point (``+experiment=sing_inn``: batch 32, 32 px, BCR 1/48 → average pooling
by 4, the embedded prior and the embedded 1/48 INN, η = 0.85, DDIM) every form below runs the
same number of steps on the same x̂; each round runs the bare loop and every form once
(interleaved, the order rotating every round), and each form's cost is divided by the bare
loop's cost *of the same round*: the median and quartiles of these per-round ratios are
reported, in CPU time of this process (``time.process_time``, the number that load on a shared
machine does not inflate) and in wall time. The machine's load average is recorded per round.

Forms (``--forms``, default all):

- ``bare``: the plain diffusers loop (``eps = unet(x, t).sample``;
  ``x = scheduler.step(eps, t, x, eta=η, generator=g).prev_sample``), the reference;
- ``sing_zero``: SING-Zero (DDNM null space, Algorithm 1);
- ``alg2_constant`` / ``alg2_autograd`` / ``alg2_dps``: SING-INN, Algorithm 2 (INN guidance at
  every step) with ``gradient=constant`` (no backward pass), ``autograd`` (x0-space gradient
  through the INN) and ``dps`` (the default: the gradient w.r.t. x_t, a backward pass through
  the UNet as well);
- ``two_phase``: SING-INN ``variant=two_phase`` (DDNM until t < 300, then ``dps`` guidance).

    .venv/bin/python benchmarks/guided_step.py            # ~5 min on one core
    .venv/bin/python benchmarks/guided_step.py --quick    # a few seconds (the test)

Writes ``outputs/benchmarks/guided_step.json`` and ``.md`` (``--out DIR`` elsewhere); the
tracked ``benchmarks/results/guided_step.md`` is the reference run, replaced only on purpose
with ``--out benchmarks/results``. ``--inn-width``/``--inn-pairs`` time a fresh INN of another
size instead of the embedded one (timing only: its guidance is not a trained model's).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

# the same machine description and output files as sampler_overhead (benchmarks/ on sys.path)
from sampler_overhead import device_name, write_results

from singexp.models.prior import load_prior
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool, scale_for_bcr
from singexp.progress import format_seconds, say
from singexp.samplers.schedulers import build_scheduler
from singexp.samplers.sing_inn import sing_inn
from singexp.samplers.sing_zero import sing_zero

#: the reference results (tracked); runs write to OUTPUT unless told otherwise
RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks"

#: form -> (what it is, the goal on its CPU-time ratio to the bare step, or None)
FORMS: dict[str, tuple[str, float | None]] = {
    "bare": ("diffusers DDIM loop (reference)", None),
    "sing_zero": ("SING-Zero (DDNM null space)", 1.05),
    "alg2_constant": ("SING-INN Algorithm 2, gradient=constant", 1.3),
    "alg2_autograd": ("SING-INN Algorithm 2, gradient=autograd", 1.3),
    "alg2_dps": ("SING-INN Algorithm 2, gradient=dps (default)", None),
    "two_phase": ("SING-INN two_phase (DDNM, dps below t=300)", None),
}
INN_KEYS = ("scale", "pairs", "cond_blocks", "width", "emb_dim", "clamp")


def load_embedded_inn(bcr: str, size: int) -> tuple[ConditionalINN, dict[str, Any]]:
    """The shipped INN for ``bcr`` (its architecture keys from the file's metadata)."""
    from singexp.models.inn import embedded_inn, read_inn_hparams

    path = embedded_inn(bcr, size)
    hparams = read_inn_hparams(path)
    keys = {k: hparams[k] for k in INN_KEYS if k in hparams}
    net = ConditionalINN(**keys)
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    # trainable parameters, as the main job loads it (load_inn): the sampler must not pay for them
    return net.eval(), {"source": path.name, **keys}


def test_images(batch: int, size: int) -> torch.Tensor:
    """Smooth images in [-1, 1] standing in for x̂ (the cost does not depend on them)."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(batch, 3, max(size // 4, 1), max(size // 4, 1), generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return up * 2 - 1


def bare_loop(unet: Any, shape: tuple[int, ...], steps: int, eta: float, seed: int) -> None:
    """The plain diffusers loop with the samplers' η (DDIMPipeline's loop)."""
    scheduler: Any = build_scheduler(kind="ddim")  # diffusers' classes are untyped
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = torch.randn(shape, generator=generator)
        for t in scheduler.timesteps:
            eps = unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample


def make_runs(
    unet: Any, inn: ConditionalINN, x_hat: torch.Tensor, steps: int, eta: float, forms: list[str]
) -> dict[str, Callable[[], None]]:
    shape = tuple(x_hat.shape)
    scale = inn.scale

    def options() -> dict[str, Any]:
        return {
            "steps": steps,
            "eta": eta,
            "generator": torch.Generator().manual_seed(0),
            "progress": False,
        }

    def zero() -> None:
        sing_zero(unet, build_scheduler(kind="ddim"), AveragePool(scale), x_hat, **options())

    def inn_form(variant: str, gradient: str) -> Callable[[], None]:
        def run() -> None:
            sched = build_scheduler(kind="ddim")
            sing_inn(unet, sched, inn, x_hat, 0.0, variant=variant, gradient=gradient, **options())

        return run

    runs: dict[str, Callable[[], None]] = {
        "bare": lambda: bare_loop(unet, shape, steps, eta, 0),
        "sing_zero": zero,
        "alg2_constant": inn_form("algorithm2", "constant"),
        "alg2_autograd": inn_form("algorithm2", "autograd"),
        "alg2_dps": inn_form("algorithm2", "dps"),
        "two_phase": inn_form("two_phase", "dps"),
    }
    return {name: runs[name] for name in forms}


def guided_steps(steps: int, switch_t: int = 300) -> int:
    """How many of ``steps`` DDIM steps have t < ``switch_t`` (two_phase's guided steps)."""
    scheduler: Any = build_scheduler(kind="ddim")
    scheduler.set_timesteps(steps)
    return sum(int(t) < switch_t for t in scheduler.timesteps)


def commit() -> str:
    """The repository's commit, ``+dirty`` with uncommitted changes (``?`` outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def quartiles(values: list[float]) -> dict[str, float]:
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def measure(
    runs: dict[str, Callable[[], None]], rounds: int, steps: int
) -> tuple[dict[str, dict[str, list[float]]], list[float]]:
    """Per form: CPU and wall ms/step of every round; the 1-minute load average per round."""
    names = list(runs)
    samples: dict[str, dict[str, list[float]]] = {n: {"cpu": [], "wall": []} for n in names}
    loads = []
    started = time.perf_counter()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            cpu, wall = timed(runs[name])
            samples[name]["cpu"].append(cpu * 1000 / steps)
            samples[name]["wall"].append(wall * 1000 / steps)
        loads.append(os.getloadavg()[0])
        elapsed = time.perf_counter() - started
        left = format_seconds(elapsed * (rounds - r - 1) / (r + 1))
        bare = samples["bare"]["cpu"][-1]
        ratios = ", ".join(f"{n} {samples[n]['cpu'][-1] / bare:.2f}×" for n in names[1:])
        say(
            f"round {r + 1}/{rounds}: bare {bare:.0f} ms/step CPU; {ratios} "
            f"(load {loads[-1]:.1f}, ETA {left})"
        )
    return samples, loads


def summarize(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    bare = samples["bare"]
    for name, values in samples.items():
        cpu_ratio = [v / b for v, b in zip(values["cpu"], bare["cpu"], strict=True)]
        wall_ratio = [v / b for v, b in zip(values["wall"], bare["wall"], strict=True)]
        what, goal = FORMS[name]
        ratio = quartiles(cpu_ratio)
        rows.append(
            {
                "form": name,
                "what": what,
                "cpu_ms_per_step": quartiles(values["cpu"]),
                "wall_ms_per_step": quartiles(values["wall"]),
                "cpu_ratio": ratio,
                "wall_ratio": quartiles(wall_ratio),
                "goal": goal,
                "meets_goal": None if goal is None else ratio["median"] <= goal,
                "cpu_ms_per_step_all": values["cpu"],
                "wall_ms_per_step_all": values["wall"],
                "cpu_ratio_all": cpu_ratio,
            }
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="the main job's batch")
    parser.add_argument("--bcr", default="1/48", help="the main job's ratio (sets the scale)")
    parser.add_argument("--steps", type=int, default=10, help="steps per run")
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds (≥ 9 for a claim)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="one warm-up run per form")
    parser.add_argument("--eta", type=float, default=0.85)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    parser.add_argument("--inn-width", type=int, default=None, help="a fresh INN of this width")
    parser.add_argument("--inn-pairs", type=int, default=None, help="a fresh INN with these pairs")
    parser.add_argument("--quick", action="store_true", help="batch 2, 2 steps, 2 rounds")
    parser.add_argument(
        "--out",
        type=Path,
        default=OUTPUT,
        help=f"output folder (default outputs/benchmarks; the reference results: {RESULTS})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.rounds, args.warmup_steps = 2, 2, 2, 1
    if "bare" not in args.forms:
        args.forms = ["bare", *args.forms]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    size = 32  # the embedded prior's and INN's size
    unet: Any = load_prior("embedded", expected_size=size)
    inn, inn_info = load_embedded_inn(args.bcr, size)
    if args.inn_width is not None or args.inn_pairs is not None:
        keys = {k: v for k, v in inn_info.items() if k in INN_KEYS}
        keys["width"] = args.inn_width or keys["width"]
        keys["pairs"] = args.inn_pairs if args.inn_pairs is not None else keys["pairs"]
        inn = ConditionalINN(**keys).eval()
        inn_info = {"source": "fresh (timing only)", **keys}
    scale = scale_for_bcr(args.bcr, size)
    if inn.scale != scale:
        raise SystemExit(f"the INN's scale {inn.scale} is not the operator's {scale}")
    x_hat = test_images(args.batch, size)
    runs = make_runs(unet, inn, x_hat, args.steps, args.eta, args.forms)
    warm = make_runs(unet, inn, x_hat, args.warmup_steps, args.eta, args.forms)
    load_before = os.getloadavg()
    started = time.perf_counter()
    for run in warm.values():
        run()
    took = format_seconds(time.perf_counter() - started)
    say(f"warm-up ({args.warmup_steps} steps per form): {took}")
    samples, loads = measure(runs, args.rounds, args.steps)
    load_after = os.getloadavg()
    report = {
        "device": device_name(),
        "commit": commit(),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "image_size": size,
        "bcr": args.bcr,
        "operator": f"avgpool scale {scale}",
        "steps": args.steps,
        "two_phase_guided_steps": guided_steps(args.steps),
        "eta": args.eta,
        "rounds": args.rounds,
        "warmup_steps": args.warmup_steps,
        "quick": args.quick,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "inn": inn_info,
        "inn_parameters": sum(p.numel() for p in inn.parameters()),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "load_average_per_round": loads,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - started,
        "rows": summarize(samples),
    }
    write_results(args.out, "guided_step", report, markdown(report))


def cpu_minutes(report: dict[str, Any]) -> float:
    """The measured rounds' CPU time (the warm-up not counted)."""
    per_step = sum(sum(row["cpu_ms_per_step_all"]) for row in report["rows"])
    return per_step * report["steps"] / 1000 / 60


def _q(stats: dict[str, float], fmt: str = ".2f") -> str:
    return f"{stats['median']:{fmt}} [{stats['q1']:{fmt}}, {stats['q3']:{fmt}}]"


def markdown(report: dict[str, Any]) -> str:
    inn = report["inn"]
    lines = [
        "# SING-INN's guided step vs a bare diffusers step (CPU time, paired rounds)",
        "",
        f"{report['device']}, torch {report['torch']}, {report['threads']} thread(s). "
        f"Batch {report['batch']}, {report['image_size']} px, BCR {report['bcr']} "
        f"({report['operator']}), η = {report['eta']}, DDIM, {report['steps']} steps per run; "
        f"embedded prior ({report['unet_parameters'] / 1e6:.2f} M parameters), INN "
        f"{inn['source']} (width {inn.get('width')}, pairs {inn.get('pairs')}; "
        f"{report['inn_parameters'] / 1e6:.2f} M parameters). {report['rounds']} rounds, each "
        "running every form once in rotating order; ratio = the form's cost / the bare loop's "
        "cost in the same round; median [quartiles] over rounds. Load average (1 min) "
        f"before/after: {report['load_average_before'][0]:.1f} / "
        f"{report['load_average_after'][0]:.1f}, per round "
        f"{min(report['load_average_per_round']):.1f}–{max(report['load_average_per_round']):.1f}"
        " (shared machine: CPU time is the measure; wall ratios for reference).",
        "",
        "| form | what | CPU ms/step | CPU ratio to bare | wall ratio to bare | goal |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        goal = "—"
        if row["goal"] is not None:
            goal = f"≤ {row['goal']}× {'✓' if row['meets_goal'] else '✗'}"
        lines.append(
            f"| `{row['form']}` | {row['what']} | {_q(row['cpu_ms_per_step'], '.0f')} "
            f"| {_q(row['cpu_ratio'])} | {_q(row['wall_ratio'])} | {goal} |"
        )
    lines += [
        "",
        f"`two_phase` guides only the steps with t < 300 ({report['two_phase_guided_steps']} of "
        f"{report['steps']} here, {guided_steps(100)} of the main job's 100); its other steps "
        "are SING-Zero's. `alg2_dps` differentiates through the UNet as well as the INN: "
        "its cost over `alg2_autograd` is the backward pass through the UNet (about one more "
        "UNet forward), which no cheaper INN removes, so it cannot come within 1.3×. "
        f"This run: {cpu_minutes(report):.1f} min CPU ({report['wall_s'] / 60:.1f} min wall), "
        f"code `{report['commit']}`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
