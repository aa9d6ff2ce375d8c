"""Images per second of SING-Zero and SING-INN at 256 px on a CUDA GPU, the paper's
prior architecture with random weights, found offline as ``prior=ddpm_ema_celebahq_256``.

Run by ``benchmarks/gpu.sh`` (which checks for a GPU and sets the cache), or directly:

    HF_HUB_CACHE=$OUT/hf/hub HF_HUB_OFFLINE=1 python benchmarks/gpu_throughput.py --out $OUT

1. Lays a random-weight google/ddpm-ema-celebahq-256 (seeded, float16 file) out in the Hugging
   Face cache that ``HF_HUB_CACHE`` names (nothing can be downloaded on the GPU machine either).
2. **Direct**: loads it with ``singexp.models.prior.load_prior`` and times ``sing_zero`` and
   ``sing_inn``
   (Algorithm 2, ``gradient=dps``: a UNet backward per step) at ``--steps`` steps, DDIM η 0.85, on
   batches of smooth 256 px images under ``torch.autocast("cuda", dtype=<--precision>)`` — what
   ``evaluate.precision`` does — after a short warm-up; the INN is a fresh one of the 1/192 scale
   (8): timing only. Per (method, batch): seconds, images/s and peak GPU memory; a batch that
   does not fit is recorded as such and the larger ones skipped.
3. **CLI** (unless ``--skip-cli``): the main job as a user runs it, ``python -m singexp
   +experiment=sing_inn`` on a generated 256 px folder at BCR 1/192 with
   ``prior=ddpm_ema_celebahq_256 jscc.checkpoint=auto inn.checkpoint=auto`` (codec and INN trained
   for two batches), ``evaluate.precision=<--precision>``, ``--steps`` steps per method; images/s
   from metrics.json's ``seconds_per_image`` (the first batch's warm-up included).

Writes ``OUT/gpu_throughput.json`` and ``.md``. Without a CUDA GPU: one line, exit status 3.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ID = "google/ddpm-ema-celebahq-256"
PRECISIONS = ("bf16", "fp16", "fp32")
NO_GPU = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON + Markdown go here")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps per method")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="direct batches")
    parser.add_argument("--warmup-steps", type=int, default=3, help="one warm-up run per batch")
    parser.add_argument("--test-images", type=int, default=32, help="CLI run's test images")
    parser.add_argument("--cli-batch", type=int, default=16, help="CLI run's dataset.batch_size")
    parser.add_argument("--cli-timeout", type=int, default=480, help="seconds for the CLI run")
    parser.add_argument("--skip-cli", action="store_true", help="only the direct measurement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--device",
        default="cuda",
        help="cuda; cpu only to check the script without a GPU (slow: use --precision fp32)",
    )
    return parser.parse_args(argv)


def no_gpu(device: str) -> bool:
    """True (after saying so in one line) when ``device`` is CUDA and torch sees no GPU."""
    import torch

    if not device.startswith("cuda") or torch.cuda.is_available():
        return False
    print("gpu_throughput.py: no CUDA GPU (torch sees none); nothing run", file=sys.stderr)
    return True


def lay_out_prior(seed: int) -> Path:
    """The random-weight preset in the cache ``HF_HUB_CACHE`` names (``paper_scale``'s layout)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from paper_scale import write_hf_cache

    from singexp.flops import celebahq_unet

    hub = os.environ.get("HF_HUB_CACHE")
    if not hub:
        raise SystemExit("gpu_throughput.py: set HF_HUB_CACHE (gpu.sh does) to lay the prior out")
    torch.manual_seed(seed)
    return write_hf_cache(celebahq_unet(device="cpu"), Path(hub), REPO_ID)


def smooth_images(batch: int, device: Any, seed: int = 1) -> Any:
    """Smooth 256 px images in [-1, 1], standing in for x̂ (the cost does not depend on them)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(256, 256), mode="bicubic")
    return (up.clamp(0, 1) * 2 - 1).to(device)


def direct(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds, images/s and peak memory of each method at each batch (module docstring, 2)."""
    import torch

    from singexp.models.prior import load_prior
    from singexp.nn.inn import ConditionalINN
    from singexp.operators import AveragePool
    from singexp.samplers.schedulers import build_scheduler
    from singexp.samplers.sing_inn import sing_inn
    from singexp.samplers.sing_zero import sing_zero

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    torch.set_float32_matmul_precision("high")  # as singexp's tasks set it
    unet = load_prior(REPO_ID, expected_size=256).to(device)
    inn = ConditionalINN(scale=8).to(device).eval().requires_grad_(False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]

    def runner(method: str, x_hat: Any, steps: int) -> Callable[[], None]:
        def run() -> None:
            options: dict[str, Any] = {
                "steps": steps,
                "eta": 0.85,
                "generator": torch.Generator(device=device).manual_seed(0),
                "progress": False,
            }
            scheduler = build_scheduler(kind="ddim")
            autocast = torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=bool(dtype)
            )
            with autocast:
                if method == "sing_zero":
                    sing_zero(unet, scheduler, AveragePool(8), x_hat, **options)
                else:
                    sing_inn(unet, scheduler, inn, x_hat, 0.0, gradient="dps", **options)

        return run

    rows: list[dict[str, Any]] = []
    for method in ("sing_zero", "sing_inn"):
        for batch in sorted(args.batches):
            x_hat = smooth_images(batch, device)
            row: dict[str, Any] = {"method": method, "batch": batch, "steps": args.steps}
            try:
                runner(method, x_hat, args.warmup_steps)()
                sync()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                started = time.perf_counter()
                runner(method, x_hat, args.steps)()
                sync()
                seconds = time.perf_counter() - started
            except torch.OutOfMemoryError:
                if cuda:
                    torch.cuda.empty_cache()
                rows.append({**row, "status": "out of memory"})
                print(f"{method} batch {batch}: out of memory", file=sys.stderr, flush=True)
                break
            row.update(
                status="ok",
                seconds=seconds,
                images_per_s=batch / seconds,
                ms_per_step_per_image=seconds * 1000 / args.steps / batch,
                peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            )
            rows.append(row)
            print(
                f"{method} batch {batch}: {row['images_per_s']:.3f} images/s ({seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return {"rows": rows}


def face_folder(root: Path, train: int, test: int, seed: int = 28) -> None:
    """``root/train`` and ``root/test`` of distinct smooth 256 px PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cells = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(cells).resize((256, 256), Image.Resampling.BICUBIC)
            image.save(root / split / f"{i:03d}.png")


def cli_command(args: argparse.Namespace, faces: Path, work: Path) -> list[str]:
    """The main job at the paper's setting, as a user would run it (module docstring, 3)."""
    return [
        sys.executable,
        "-m",
        "singexp",
        "+experiment=sing_inn",
        "dataset=image_folder",
        f"dataset.root={faces}",
        "dataset.image_size=256",
        "bcr=1_192",
        "prior=ddpm_ema_celebahq_256",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        f"methods.sing_zero.steps={args.steps}",
        f"methods.sing_inn.steps={args.steps}",
        f"evaluate.precision={args.precision}",
        "methods.sing_zero.progress=false",
        "methods.sing_inn.progress=false",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        f"dataset.batch_size={args.cli_batch}",
        f"dataset.test_size={args.test_images}",
        "dataset.min_test_images=1",
        "dataset.min_train_images=0",
        "min_train_steps=0",
        "logger=none",
        "print_config=false",
        f"paths.artifacts={work / 'artifacts'}",
        f"hydra.run.dir={work / 'run'}",
    ]


def cli(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of each method in the main job's own run (metrics.json's seconds_per_image)."""
    work = args.out / "cli"
    faces = work / "faces"
    face_folder(faces, train=2 * args.cli_batch + 2, test=args.test_images)
    command = cli_command(args, faces, work)
    # the cache's absolute path: the run works in its own folder
    env = {**os.environ, "HF_HUB_CACHE": str(Path(os.environ["HF_HUB_CACHE"]).resolve())}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import child_processes  # the run ends with the benchmark however it ends

    started = time.perf_counter()
    try:
        done = child_processes.run(
            command, capture_output=True, text=True, timeout=args.cli_timeout, cwd=work, env=env
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {args.cli_timeout} s", "command": command}
    (work / "cli.log").write_text(done.stdout + "\n" + done.stderr)
    out: dict[str, Any] = {
        "command": command,
        "returncode": done.returncode,
        "wall_s": time.perf_counter() - started,
    }
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**out, "status": f"failed: {tail}"}
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    methods = metrics["methods"]
    out["status"] = "ok"
    out["evaluate"] = metrics.get("evaluate")
    out["rows"] = [
        {
            "method": name,
            "images": methods[name]["images"],
            "seconds_per_image": methods[name]["seconds_per_image"],
            "images_per_s": 1 / methods[name]["seconds_per_image"],
        }
        for name in ("deepjscc", "sing_zero", "sing_inn")
        if name in methods
    ]
    return out


def precision(name: str) -> str:
    return "fp32 (no autocast)" if name == "fp32" else f"{name} autocast"


def memory(gib: float | None) -> str:
    return "–" if gib is None else f"{gib:.1f} GiB"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# SING-Zero and SING-INN at 256 px on {report['gpu']}",
        "",
        f"torch {report['torch']}, {precision(report['precision'])}, {report['steps']} steps "
        "(DDIM, η 0.85), google/ddpm-ema-celebahq-256's architecture with random weights "
        "(timing only). Direct: the samplers alone on smooth images, after a warm-up; SING-INN "
        "is Algorithm 2 with gradient=dps (a UNet backward per step) and a fresh INN.",
        "",
        "| method | batch | images/s | ms / step / image | peak GPU memory |",
        "|---|---|---|---|---|",
    ]
    for row in report["direct"]["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['method']} | {row['batch']} | {row['status']} | | |")
            continue
        lines.append(
            f"| {row['method']} | {row['batch']} | {row['images_per_s']:.2f} "
            f"| {row['ms_per_step_per_image']:.1f} | {memory(row['peak_memory_gib'])} |"
        )
    run = report.get("cli")
    if run:
        lines += ["", f"CLI (`python -m singexp +experiment=sing_inn ...`): {run['status']}."]
        if run.get("rows"):
            lines += ["", "| method | images | images/s (first batch's warm-up included) |"]
            lines.append("|---|---|---|")
            lines += [
                f"| {r['method']} | {r['images']} | {r['images_per_s']:.2f} |" for r in run["rows"]
            ]
    lines += ["", f"This run: {report['wall_s'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if no_gpu(args.device):
        return NO_GPU
    args.out = args.out.resolve()  # the CLI run works in a folder of its own
    import torch

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    snapshot = lay_out_prior(args.seed)
    print(f"random-weight {REPO_ID} laid out in {snapshot}", file=sys.stderr, flush=True)
    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
        "device": args.device,
        "torch": torch.__version__,
        "precision": args.precision,
        "steps": args.steps,
        "batches": args.batches,
        "seed": args.seed,
        "snapshot": str(snapshot),
        "direct": direct(args),
    }
    gc.collect()  # the direct part's UNet is gone: give its GPU memory back before the CLI run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not args.skip_cli:
        report["cli"] = cli(args)
    report["wall_s"] = time.perf_counter() - started
    (args.out / "gpu_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "gpu_throughput.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
