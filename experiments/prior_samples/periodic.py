"""Does an image carry a stripes/checkers background? A spectral-peak detector.

    .venv/bin/python experiments/prior_samples/periodic.py   # calibration table by background
    .venv/bin/python experiments/prior_samples/periodic.py --prior DIR --out FILE.png
        # DIR's DDIM-50 samples (η = 1, seed 0) sorted by peak share, the periodic ones first

The embedded data draw 20 % stripes and 15 % checkers backgrounds (dataset.backgrounds); the
shipped prior's samples show none, and SWD does not say so directly. A periodic background puts
much of an image's power into one narrow spectral peak away from the origin, which flat, gradient
and smooth-noise backgrounds with shapes on top do not:

    peak(x) = 2 · max over 3×3 frequency blocks with radius ≥ r₀ of the power in the block
              / total AC power                              (power summed over RGB; × 2: the mirror)

``periodic_share`` is the fraction of a set with peak > ``THRESHOLD``. Calibrated on 256 test
images per background kind (this script's table; docs/research/prior_samples.md): r₀ = 3 cycles
per image keeps the shapes' own low-frequency power out; THRESHOLD = 0.15 sits at about the 90th
percentile of flat backgrounds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

#: frequencies (cycles per image) below this radius are not searched for a peak
MIN_RADIUS = 3.0
#: an image with a larger peak share counts as periodic
THRESHOLD = 0.15


def peak_share(images: torch.Tensor, min_radius: float = MIN_RADIUS) -> torch.Tensor:
    """Per image of (n, C, H, W): the share of AC power in its strongest 3×3 spectral block."""
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).sum(dim=1)  # (n, H, W)
    h, w = power.shape[-2:]
    fy, fx = torch.fft.fftfreq(h) * h, torch.fft.fftfreq(w) * w
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()
    total = power.flatten(1).sum(1)
    high = torch.fft.fftshift(power.masked_fill(radius < min_radius, 0), dim=(-2, -1))
    block = F.avg_pool2d(F.pad(high[:, None], (1, 1, 1, 1), mode="circular"), 3, 1)[:, 0] * 9
    return 2 * block.flatten(1).amax(1) / total.clamp_min(1e-12)


def periodic_share(images: torch.Tensor) -> float:
    """Fraction of ``images`` detected as having a periodic (stripes/checkers) background."""
    return float((peak_share(images) > THRESHOLD).float().mean())


def sorted_samples(prior: str, out: Path, n: int = 128) -> None:
    """``n`` samples of ``prior`` in a grid sorted by peak share (8 per row, highest first)."""
    from torchvision.utils import make_grid, save_image

    from singexp.models.prior import load_prior
    from singexp.modules.prior import ddim_sample
    from singexp.samplers.schedulers import build_scheduler

    unet = load_prior(prior, expected_size=32)
    schedule = build_scheduler(kind="ddpm", clip_sample=True).config
    samples = ddim_sample(unet, schedule, n, 50, 1.0, torch.Generator().manual_seed(0))
    share = peak_share(samples)
    order = share.argsort(descending=True)
    grid = make_grid((samples[order] + 1) / 2, nrow=8, padding=1, pad_value=1.0)
    save_image(grid, out)
    print(f"{prior}: periodic share {periodic_share(samples):.3f} of {n}; grid {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", help="a prior's samples sorted by peak share (else calibrate)")
    parser.add_argument("--out", type=Path, default=Path("periodic_sorted.png"))
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.prior:
        sorted_samples(args.prior, args.out, args.n)
        return
    from singexp.data.shapes import ShapesDataModule

    kinds: dict[str, dict[str, float] | None] = {
        "stripes": {"stripes": 1},
        "checkers": {"checkers": 1},
        "flat": {"flat": 1},
        "gradient": {"gradient": 1},
        "noise": {"noise": 1},
        "the data's mix": None,
    }
    print("| backgrounds | periodic share | peak share p10 / p50 / p90 |\n|---|---|---|")
    for name, backgrounds in kinds.items():
        dm = ShapesDataModule(
            image_size=32, train_size=10, test_size=256, seed=7, backgrounds=backgrounds
        )
        dm.setup()
        images = dm.test_images(256)
        q = peak_share(images).quantile(torch.tensor([0.1, 0.5, 0.9])).tolist()
        print(
            f"| {name} | {periodic_share(images):.2f} | " + " / ".join(f"{v:.3f}" for v in q) + " |"
        )


if __name__ == "__main__":
    main()
