"""CPU cost of the paper's 256 px prior: google/ddpm-ema-celebahq-256's UNet (random weights).

What one UNet call costs on this machine, for the two kinds of sampling step: SING-Zero's
(a forward pass, no graph) and SING-INN's / DPS's default ``gradient=dps`` step (a forward pass
with the graph kept, then the backward pass to the input x_t; the weights take no gradient).
For each case: wall and CPU seconds per call (a few repeats), peak tensor memory and the load
average. Cases:

- fp32 at 256 px, batch 1 and 2: forward; forward + backward; forward + backward with diffusers'
  ``enable_gradient_checkpointing()`` (blocks recompute their activations in backward);
- bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``) against fp32 on the same
  network at smaller inputs (``--bf16-sizes``, default 32 and 64 px: the UNet is fully
  convolutional). On a CPU without bf16 instructions (AVX2 only: no AVX512-BF16/AMX) oneDNN has
  no bf16 convolution and autocast's convolutions take a slow path, 40-130x slower than fp32
  here, so one bf16 forward at 256 px would take about 20 minutes. The 256 px bf16 row is then
  an estimate (the fp32 256 px time x the bf16/fp32 ratio measured at the largest smaller
  input), marked as such; ``--bf16-sizes 256`` measures it instead.

Peak memory is measured with ``torch.profiler`` (``profile_memory=True``): the running sum of
the CPU allocator's allocations and frees during one call, i.e. the tensors the call creates
(activations, the graph, the gradient) on top of the weights already in memory; each case is
profiled once, in a run of its own that also serves as the warm-up (profiling slows it, so it
is not timed). The process's RSS high-water mark (``resource.getrusage``: weights, the largest
case and what the allocator keeps) is recorded once for the whole run. FLOPs per call come from
``singexp.flops`` (torch's FlopCounterMode on the ``meta`` device).

    .venv/bin/python benchmarks/paper_scale.py           # ~11 min on 2 shared cores
    .venv/bin/python benchmarks/paper_scale.py --quick   # a tiny net of the same blocks (test)

Writes ``outputs/benchmarks/paper_scale.json`` and ``.md`` (``--out DIR`` elsewhere); the tracked
``benchmarks/results/paper_scale.*`` files are the reference run (``--out benchmarks/results``).

The module also lays a UNet out as a Hugging Face cache entry (:func:`write_hf_cache`), so that
``prior=ddpm_ema_celebahq_256`` finds random weights offline (the tests and ``gpu.sh`` use it).
"""

from __future__ import annotations

import os

# torch's threads sleep while they wait (what the singexp command line sets, threads.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import hashlib
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

# the machine description and the JSON + Markdown writer of the other benchmarks
from sampler_overhead import device_name, write_results

from singexp.flops import CELEBAHQ_256_UNET, parameter_count, unet_flops
from singexp.progress import format_seconds, say

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks"

#: the Hugging Face repo whose architecture this is (prior=ddpm_ema_celebahq_256)
REPO_ID = "google/ddpm-ema-celebahq-256"

#: ``--tiny``: the same six levels and block types (attention at the fifth), narrow and small,
#: for a test that runs in seconds
TINY_UNET: dict[str, Any] = {
    **CELEBAHQ_256_UNET,
    "sample_size": 64,
    "block_out_channels": (32, 32, 32, 32, 64, 64),
    "layers_per_block": 1,
}

#: what diffusers' DDPMPipeline keeps beside the UNet in google/ddpm-ema-celebahq-256 (the
#: scheduler of Ho et al.: linear β 1e-4..0.02, T = 1000); singexp builds its own scheduler from
#: the prior config, but a cache laid out like the real repository holds it too
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "variance_type": "fixed_small",
}


# ---- the network and its offline cache entry ---------------------------------------------------
def build_unet(config: dict[str, Any], seed: int = 0, device: str = "cpu") -> UNet2DModel:
    """A ``UNet2DModel`` of ``config`` with weights drawn after ``torch.manual_seed(seed)``
    (``device="meta"``: shapes only, for counting FLOPs), in eval mode."""
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DModel(**config)
    return unet.eval()


def write_hf_cache(
    unet: UNet2DModel,
    hub: Path,
    repo_id: str = REPO_ID,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Lay ``unet`` out in ``hub`` (what ``HF_HUB_CACHE`` names) as the Hugging Face cache holds
    a downloaded ``repo_id``: ``models--<org>--<name>/blobs/<sha256>`` files, symlinked from
    ``snapshots/<commit>/`` (``config.json``, ``diffusion_pytorch_model.safetensors`` in
    ``dtype``, ``scheduler_config.json``), ``refs/main`` naming the commit. Returns the snapshot
    folder. The commit is a made-up 40-hex id derived from the weights."""
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model"
        copy.deepcopy(unet).to(dtype).save_pretrained(model, safe_serialization=True)
        (model / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
        files = {p.name: p.read_bytes() for p in sorted(model.iterdir()) if p.is_file()}
    digest = hashlib.sha1()
    for name, data in files.items():
        digest.update(name.encode() + hashlib.sha256(data).digest())
    commit = digest.hexdigest()
    repo = Path(hub) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# ---- one case -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One measured configuration of a UNet call."""

    name: str
    batch: int
    backward: bool  # keep the graph and differentiate w.r.t. the input (a DPS step)
    precision: str  # fp32 | bf16 (CPU autocast)
    checkpointing: bool
    size: int  # input side in pixels
    repeats: int

    @property
    def what(self) -> str:
        kind = "forward + backward to x_t" if self.backward else "forward"
        extra = ", gradient checkpointing" if self.checkpointing else ""
        return f"{kind}, {self.precision}{extra}, batch {self.batch}, {self.size} px"


def call(unet: UNet2DModel, case: Case) -> Callable[[], None]:
    """One UNet call as ``case`` says, on fixed inputs (t = 500; cost does not depend on t)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(case.batch, 3, case.size, case.size, generator=g)
    t = torch.full((case.batch,), 500, dtype=torch.long)
    dtype = torch.bfloat16 if case.precision == "bf16" else None

    def run() -> None:
        autocast = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
        if not case.backward:
            with torch.no_grad(), autocast:
                unet(x, t)
            return
        x_in = x.clone().requires_grad_(True)
        with autocast:
            eps = unet(x_in, t).sample
        # what the DPS step differentiates: a scalar loss of the UNet's output, w.r.t. x_t
        (grad,) = torch.autograd.grad(eps.float().square().sum(), x_in)
        del grad

    return run


def peak_tensor_bytes(fn: Callable[[], None]) -> int:
    """The highest total of CPU tensor memory that ``fn()`` holds at once beyond what existed
    before (torch.profiler's allocation and free events, summed in order)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as scratch:
        trace = Path(scratch) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and "Bytes" in e.get("args", {})),
        key=lambda e: float(e.get("ts", 0)),
    )
    live = peak = 0
    for event in memory:
        if int(event["args"].get("Device Type", 0)) != 0:  # 0: CPU
            continue
        live += int(event["args"]["Bytes"])
        peak = max(peak, live)
    return peak


def measure(unet: UNet2DModel, case: Case) -> dict[str, Any]:
    """Peak tensor memory (one profiled call, also the warm-up), then ``case.repeats`` timed
    calls (wall and CPU seconds), with the load average before and after."""
    if case.checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    run = call(unet, case)
    load_before = os.getloadavg()
    started = time.perf_counter()
    peak = peak_tensor_bytes(run)
    profiled_s = time.perf_counter() - started
    wall, cpu = [], []
    for _ in range(case.repeats):
        c, w = time.process_time(), time.perf_counter()
        run()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    unet.disable_gradient_checkpointing()
    return {
        **asdict(case),
        "what": case.what,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_median": statistics.median(wall),
        "cpu_s_median": statistics.median(cpu),
        "wall_s_per_image": statistics.median(wall) / case.batch,
        "profiled_wall_s": profiled_s,
        "peak_tensor_mib": peak / 2**20,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def cases(args: argparse.Namespace, size: int) -> list[Case]:
    """The cases of the module docstring (batch 2 with fewer repeats: it is twice as long)."""
    r, r2 = args.repeats, max(1, args.repeats - 1)
    out = [
        Case("fwd_fp32_b1", 1, False, "fp32", False, size, r),
        Case("fwdbwd_fp32_b1", 1, True, "fp32", False, size, r),
        Case("fwdbwd_fp32_b1_ckpt", 1, True, "fp32", True, size, r),
    ]
    if 2 in args.batches:
        out += [
            Case("fwd_fp32_b2", 2, False, "fp32", False, size, r2),
            Case("fwdbwd_fp32_b2", 2, True, "fp32", False, size, r2),
        ]
    for small in args.bf16_sizes:
        if small != size:  # fp32 at the small input too: the bf16/fp32 ratio's reference
            out += [
                Case(f"fwd_fp32_b1_{small}px", 1, False, "fp32", False, small, r),
                Case(f"fwdbwd_fp32_b1_{small}px", 1, True, "fp32", False, small, r),
            ]
        out += [
            Case(f"fwd_bf16_b1_{small}px", 1, False, "bf16", False, small, args.bf16_repeats),
            Case(f"fwdbwd_bf16_b1_{small}px", 1, True, "bf16", False, small, args.bf16_repeats),
        ]
    return out


def bf16_estimates(rows: dict[str, dict[str, Any]], size: int, smalls: list[int]) -> dict[str, Any]:
    """bf16 at ``size`` px: measured when ``size`` is among ``smalls``, else estimated as the
    fp32 time there × the bf16/fp32 ratio measured at the largest of ``smalls`` (bf16's slow
    convolutions are compute-bound, so the ratio grows towards its large-input value with the
    input: the estimate is low rather than high)."""
    out: dict[str, Any] = {}
    for kind in ("fwd", "fwdbwd"):
        if size in smalls:
            seconds = rows[f"{kind}_bf16_b1_{size}px"]["wall_s_median"]
            out[kind] = {"seconds": seconds, "measured": True}
            continue
        small = max(smalls)
        fp32_small = rows[f"{kind}_fp32_b1_{small}px"]["wall_s_median"]
        bf16_small = rows[f"{kind}_bf16_b1_{small}px"]["wall_s_median"]
        ratio = bf16_small / fp32_small
        out[kind] = {
            "seconds": rows[f"{kind}_fp32_b1"]["wall_s_median"] * ratio,
            "from_size": small,
            "bf16_over_fp32_at_small_size": ratio,
            "measured": False,
        }
    return out


def cpu_flags() -> list[str]:
    """The CPU's vector-extension flags that decide bf16 speed (AVX2, AVX-512 BF16, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if "flags" in ln), [])
    return sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per case")
    parser.add_argument("--bf16-repeats", type=int, default=1, help="timed bf16 calls per case")
    parser.add_argument(
        "--bf16-sizes", type=int, nargs="+", default=[32, 64], help="inputs of the bf16 cases"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--tiny", action="store_true", help="a narrow 64 px network (TINY_UNET)")
    parser.add_argument("--quick", action="store_true", help="--tiny, one repeat (the test)")
    parser.add_argument(
        "--out",
        type=Path,
        default=OUTPUT,
        help=f"output folder (default outputs/benchmarks; the reference results: {RESULTS})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tiny, args.repeats, args.bf16_repeats, args.bf16_sizes = True, 1, 1, [32]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TINY_UNET if args.tiny else CELEBAHQ_256_UNET
    size = int(config["sample_size"])
    meta = build_unet(config, device="meta")
    flops = {
        "forward": unet_flops(meta) / 1e9,
        "forward_backward": unet_flops(meta, backward=True) / 1e9,
    }
    started = time.perf_counter()
    unet = build_unet(config, seed=args.seed).requires_grad_(False)
    say(
        f"built the {'tiny' if args.tiny else 'CelebA-HQ-256'} UNet "
        f"({parameter_count(unet) / 1e6:.1f} M parameters) in "
        f"{format_seconds(time.perf_counter() - started)}"
    )
    todo = cases(args, size)
    rows: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(todo):
        rows[case.name] = row = measure(unet, case)
        elapsed = time.perf_counter() - started
        say(
            f"case {i + 1}/{len(todo)} {case.name}: {row['wall_s_median']:.2f} s/call, peak "
            f"{row['peak_tensor_mib']:.0f} MiB (load {row['load_average_after'][0]:.1f}, "
            f"elapsed {format_seconds(elapsed)})"
        )
    report = {
        "device": device_name(),
        "cpu_flags": cpu_flags(),
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "network": "tiny (TINY_UNET)" if args.tiny else f"{REPO_ID} architecture",
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "image_size": size,
        "parameters": parameter_count(unet),
        "gflop_per_image": flops,
        "seed": args.seed,
        "quick": args.quick,
        "memory_measure": "torch.profiler profile_memory: peak of the CPU allocations minus "
        "frees during one call (tensors beyond the weights)",
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_s": time.perf_counter() - started,
        "cases": list(rows.values()),
        "bf16_estimate": bf16_estimates(rows, size, args.bf16_sizes),
    }
    write_results(args.out, "paper_scale", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """The table of every case, the FLOPs and what checkpointing and bf16 do."""
    rows = {row["name"]: row for row in report["cases"]}
    flops = report["gflop_per_image"]
    loads = [row["load_average_after"][0] for row in report["cases"]]
    lines = [
        f"# CPU cost of the 256 px prior's UNet ({report['network']}, random weights)",
        "",
        f"{report['device']}, torch {report['torch']}, {report['threads']} thread(s) "
        f"(OMP_WAIT_POLICY={report['omp_wait_policy']}); CPU flags "
        f"{', '.join(report['cpu_flags']) or 'unknown'}; oneDNN bf16: "
        f"{'yes' if report['mkldnn_bf16'] else 'no'}. {report['parameters'] / 1e6:.1f} M "
        f"parameters; {flops['forward']:.1f} GFLOP per image per forward, "
        f"{flops['forward_backward']:.1f} GFLOP with the backward to the input (singexp.flops). "
        f"Load average (1 min) {min(loads):.1f}–{max(loads):.1f} over the cases.",
        "",
        "| case | what | s / call (median) | s / image | repeats | peak tensor memory |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["cases"]:
        lines.append(
            f"| `{row['name']}` | {row['what']} | {row['wall_s_median']:.2f} "
            f"| {row['wall_s_per_image']:.2f} | {row['repeats']} "
            f"| {row['peak_tensor_mib']:.0f} MiB |"
        )
    lines.append("")
    plain, ckpt = rows.get("fwdbwd_fp32_b1"), rows.get("fwdbwd_fp32_b1_ckpt")
    if plain and ckpt:
        lines.append(
            "Gradient checkpointing (forward + backward, fp32, batch 1): peak tensor memory "
            f"{ckpt['peak_tensor_mib']:.0f} MiB against {plain['peak_tensor_mib']:.0f} MiB "
            f"(×{ckpt['peak_tensor_mib'] / plain['peak_tensor_mib']:.2f}), time "
            f"{ckpt['wall_s_median']:.2f} s against {plain['wall_s_median']:.2f} s "
            f"(×{ckpt['wall_s_median'] / plain['wall_s_median']:.2f})."
        )
    estimate = report["bf16_estimate"]
    size = report["image_size"]
    for kind, label in (("fwd", "forward"), ("fwdbwd", "forward + backward")):
        e = estimate[kind]
        if e["measured"]:
            lines.append(f"bf16 {label} at {size} px, measured: {e['seconds']:.2f} s per call.")
        else:
            lines.append(
                f"bf16 {label} at {size} px, **estimated** (not measured): {e['seconds']:.1f} s "
                f"per call = fp32 at {size} px × bf16/fp32 = "
                f"{e['bf16_over_fp32_at_small_size']:.1f} measured at {e['from_size']} px."
            )
    lines += [
        "",
        "Peak tensor memory: torch.profiler's CPU allocation events during one call (tensors "
        "beyond the weights). Process RSS high-water over the whole run (getrusage): "
        f"{report['max_rss_mib']:.0f} MiB. This run: {report['wall_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
