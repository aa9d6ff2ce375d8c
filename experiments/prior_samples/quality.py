"""A number for prior sample quality: SWD to held-out data and ST-LPIPS diversity.

    .venv/bin/python experiments/prior_samples/quality.py LABEL [PRIOR_DIR] [--n 256]

Draws ``n`` samples from the prior (DDIM, ``--steps`` steps, η = 1, x0 clipped as diffusers'
pipelines do) and compares them with ``n`` held-out test images of the embedded shapes data:

- ``swd``: sliced Wasserstein distance between the two sets' Laplacian-pyramid patch
  distributions (singexp.metrics.sliced_wasserstein_many, Karras et al. 2018; ×10³ as everywhere in
  singexp). Lower is better; ``swd_real_floor`` is the same number between two disjoint real
  sets of the same size (what a perfect prior would score).
- ``diversity``: mean ST-LPIPS between consecutive samples (pairs 0-1, 2-3, ...) — a collapsed
  prior scores near 0 — beside the same number for real images.
- ``periodic``: the share of samples with a stripes/checkers background (periodic.py's
  spectral-peak detector) beside the same share of the held-out images (0.29 for the data's mix).

Appends one row per LABEL to quality.json and rewrites quality.md next to this script (the
shipped prior's rows); ``--results FILE.json`` keeps another table, e.g. the research note's
``docs/research/prior_samples/quality.json`` (its .md is written beside it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from periodic import periodic_share  # this folder (the script's own)

from singexp.data.shapes import ShapesDataModule
from singexp.metrics import sliced_wasserstein_many, stlpips
from singexp.models.prior import load_prior
from singexp.modules.prior import ddim_sample
from singexp.nn.unet import count_parameters
from singexp.samplers.schedulers import build_scheduler

HERE = Path(__file__).resolve().parent


def pair_diversity(images: torch.Tensor) -> float:
    """Mean ST-LPIPS between images 2i and 2i+1."""
    a, b = images[0::2], images[1::2]
    values = stlpips(a[: len(b)], b)
    return float("nan") if values is None else float(values.mean())


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def write(rows: list[dict], n: int, steps: int, path: Path = HERE / "quality.json") -> None:
    """``path`` (all rows, JSON) and its table in a .md file beside it."""
    path.write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| prior | params (M) | SWD ×10³ ↓ | finest level (32 px) | real-vs-real SWD "
        "| diversity (ST-LPIPS) | real diversity | periodic share | real periodic share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = "–" if r["swd_real_floor"] is None else f"{r['swd_real_floor']:.1f}"
        finest = r.get("swd_levels", {}).get("swd_32")
        lines.append(
            f"| {r['label']} | {r['parameters_M']} | {r['swd']:.1f} | "
            f"{'–' if finest is None else finest} | {floor} | "
            f"{r['diversity']:.3f} | {r['diversity_real']:.3f} | "
            f"{_share(r.get('periodic'))} | {_share(r.get('periodic_real'))} |"
        )
    path.with_suffix(".md").write_text(
        f"{len(rows)} priors; {n} DDIM-{steps} samples (η = 1) vs {n} held-out "
        "test images (quality.py)\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", help="row name, e.g. 'shipped 2400 steps'")
    parser.add_argument("prior", nargs="?", default="embedded")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "quality.json",
        help="JSON table to add the row to (default: the shipped prior's, beside this script)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    unet = load_prior(args.prior, expected_size=32)
    schedule = build_scheduler(kind="ddpm", clip_sample=True).config
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    samples = []
    for i in range(0, args.n, args.batch):
        count = min(args.batch, args.n - i)
        samples.append(ddim_sample(unet, schedule, count, args.steps, 1.0, generator))
        print(f"sampled {i + count}/{args.n} ({time.perf_counter() - start:.0f} s)", flush=True)
    fake = torch.cat(samples)
    dm = ShapesDataModule(
        image_size=32, batch_size=64, train_size=100000, test_size=2 * args.n, seed=0
    )
    dm.setup()
    real = dm.test_images(2 * args.n)
    held_out, other = real[: args.n], real[args.n :]
    # the samples and the other real set against the held-out set: its patches and sorted
    # projections computed once (equal to one sliced_wasserstein call per set)
    sets = {"fake": fake, "other": other} if len(other) else {"fake": fake}
    swds = sliced_wasserstein_many(sets, held_out)
    swd = swds["fake"]
    row = {
        "label": args.label,
        "prior": str(args.prior),
        "parameters_M": round(count_parameters(unet) / 1e6, 2),
        "n": args.n,
        "steps": args.steps,
        "swd": swd["swd"],
        # per pyramid level (swd_32 = the finest patches: edges and textures)
        "swd_levels": {k: round(v, 1) for k, v in swd.items() if k != "swd"},
        "swd_real_floor": swds["other"]["swd"] if "other" in swds else None,
        "diversity": pair_diversity(fake),
        "diversity_real": pair_diversity(held_out),
        "periodic": periodic_share(fake),
        "periodic_real": periodic_share(held_out),
        "sampling_s": round(time.perf_counter() - start, 1),
    }
    path = args.results
    rows = json.loads(path.read_text()) if path.is_file() else []
    labels = [r["label"] for r in rows]
    if args.label in labels:  # a re-measured row keeps its place
        rows[labels.index(args.label)] = row
    else:
        rows.append(row)
    write(rows, args.n, args.steps, path)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
