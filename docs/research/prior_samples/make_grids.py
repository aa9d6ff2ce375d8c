"""Sample grids of the embedded prior (DDIM, η = 1 and η = 0) beside real shapes images.

    .venv/bin/python docs/research/prior_samples/make_grids.py [PRIOR_DIR] [--n 64] [--steps 50]

PRIOR_DIR defaults to the shipped prior (src/singexp/assets/prior_shapes32). Writes
samples.png (top: η = 1, bottom: η = 0, same initial noise), samples_eta1.png,
samples_eta0.png and real.png next to this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from singexp.data.shapes import ShapesDataModule
from singexp.models.prior import load_prior
from singexp.modules.prior import ddim_sample, sample_grid_rows
from singexp.samplers.schedulers import build_scheduler

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", nargs="?", default="embedded")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    unet = load_prior(args.prior, expected_size=32)
    schedule = build_scheduler(kind="ddpm", clip_sample=True).config
    rows = sample_grid_rows(args.n)
    grids = []
    for eta in (1.0, 0.0):
        images = ddim_sample(
            unet, schedule, args.n, args.steps, eta, torch.Generator().manual_seed(args.seed)
        )
        grid = make_grid(images.add(1).div(2), nrow=rows, padding=1)
        save_image(grid, args.out / f"samples_eta{int(eta)}.png")
        grids.append(grid)
    gap = torch.ones(3, 4, grids[0].shape[-1])
    save_image(torch.cat([grids[0], gap, grids[1]], dim=1), args.out / "samples.png")
    dm = ShapesDataModule(image_size=32, batch_size=64, train_size=100000, seed=0)
    real = dm.test_images(args.n)
    save_image(make_grid(real.add(1).div(2), nrow=rows, padding=1), args.out / "real.png")
    print("wrote", *(str(args.out / f) for f in ("samples.png", "real.png")))


if __name__ == "__main__":
    main()
