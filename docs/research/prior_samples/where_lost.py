"""Where in the schedule does a prior lose the data's stripes and checkers?

    .venv/bin/python docs/research/prior_samples/where_lost.py [PRIOR_DIR ...] [--grid FILE]

Two measures, both on test images of the embedded shapes data:

- ε-MSE by background kind: 128 images with only flat / gradient / smooth-noise / stripes /
  checkers backgrounds (shapes on top as usual), noised to step t with fixed noise, for each
  prior; printed as a Markdown table. A kind whose error stays far above the flat one's at a
  step is one the denoiser has not learnt there.
- SDEdit grid (``--grid``, first prior only): 16 real images noised to t₀ = 200, 400, 600, 800
  and denoised back with DDIM-50 (η = 1): the row from which the stripes no longer come back is
  where the prior decides against them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel

from singexp.data.shapes import ShapesDataModule
from singexp.models.prior import load_prior
from singexp.samplers.schedulers import build_scheduler

STEPS = (50, 200, 300, 400, 500, 700)
KINDS = ("flat", "gradient", "noise", "stripes", "checkers")


def kind_images(n: int, kind: str | None = None) -> torch.Tensor:
    """``n`` test images of the data (``kind``: every background of that kind)."""
    backgrounds = None if kind is None else {kind: 1.0}
    data = ShapesDataModule(
        image_size=32, train_size=10, test_size=n, seed=0, backgrounds=backgrounds
    )
    data.setup()
    return data.test_images(n)


@torch.no_grad()
def eps_mse(unet: UNet2DModel, x0: torch.Tensor, t: int, alpha_bar: torch.Tensor) -> float:
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
    x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * noise
    return float((unet(x_t, t).sample - noise).pow(2).mean())


@torch.no_grad()
def sdedit_rows(unet: UNet2DModel, x0: torch.Tensor, config: object) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    rows = [x0]
    for start in (200, 400, 600, 800):
        scheduler = DDIMScheduler.from_config(config)
        scheduler.set_timesteps(50)
        steps = [t for t in scheduler.timesteps if t <= start]
        noise = torch.randn(x0.shape, generator=generator)
        x = scheduler.add_noise(x0, noise, torch.tensor([steps[0]]))
        for t in steps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=1.0, generator=generator).prev_sample
        rows.append(x.clamp(-1, 1))
    return torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("priors", nargs="*", default=["embedded"])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--grid", type=Path, help="write the SDEdit grid of the first prior")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scheduler = build_scheduler(kind="ddpm", clip_sample=True)
    alpha_bar = scheduler.alphas_cumprod
    sets = {kind: kind_images(args.n, kind) for kind in KINDS}
    print("| prior | background | " + " | ".join(f"t = {t}" for t in STEPS) + " |")
    print("|---|---|" + "---|" * len(STEPS))
    for source in args.priors:
        unet = load_prior(source, expected_size=32)
        for kind, x0 in sets.items():
            values = " | ".join(f"{eps_mse(unet, x0, t, alpha_bar):.4f}" for t in STEPS)
            print(f"| {source} | {kind} | {values} |", flush=True)
    if args.grid:
        from torchvision.utils import save_image

        unet = load_prior(args.priors[0], expected_size=32)
        grid = sdedit_rows(unet, kind_images(16), scheduler.config)
        save_image(grid.add(1).div(2), args.grid, nrow=16, padding=1)
        print(f"SDEdit grid (rows: originals, t0 = 200, 400, 600, 800) -> {args.grid}")


if __name__ == "__main__":
    main()
