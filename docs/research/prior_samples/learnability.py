"""How fast does a UNet learn the periodic backgrounds alone? (a research note:
docs/research/prior_samples.md)

    .venv/bin/python docs/research/prior_samples/learnability.py NAME [--channels 32 64 128]
        [--layers 1] [--init PRIOR_DIR] [--lr 1e-3] [--steps 3000] [--train-size 20000]

A specialist test, not a prior: the UNet (a fresh ``singexp.nn.unet.build_unet`` of the given
width, or ``--init``'s weights) is trained only on stripes/checkers backgrounds
(``dataset.backgrounds``) and only at noise steps t in [100, 400) (where where_lost.py says the
stripes are decided), batch 32, AdamW, bf16 autocast, one thread. Every 100 steps it prints the
ε-MSE at t = 200 on 128 held-out stripes/checkers images (fixed noise) and the time so far: if
even a specialist cannot bring that error towards the flat backgrounds' (≈ 0.03) in a CPU
budget, the architecture or the compute is what the full prior lacks, not the data mix.
"""

from __future__ import annotations

import argparse
import time

import torch

from singexp.data.shapes import ShapesDataModule
from singexp.models.prior import load_prior
from singexp.nn.unet import build_unet
from singexp.samplers.schedulers import build_scheduler

PERIODIC = {"stripes": 1.0, "checkers": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--init", help="start from this prior's weights (its architecture)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=20000, help="training images (cycled)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.init:
        unet = load_prior(args.init, expected_size=32)
    else:
        unet = build_unet(32, block_out_channels=args.channels, layers_per_block=args.layers)
    unet.train()
    optimiser = torch.optim.AdamW(unet.parameters(), args.lr)
    data = ShapesDataModule(
        image_size=32, train_size=args.train_size, test_size=128, seed=3, backgrounds=PERIODIC
    )
    data.setup()
    test, train = data.test_images(128), data.split("train")
    # the embedded prior's schedule (conf/prior/embedded.yaml: linear β 1e-4..0.02, T = 1000)
    alpha_bar = build_scheduler(kind="ddpm").alphas_cumprod
    test_noise = torch.randn(test.shape, generator=torch.Generator().manual_seed(200))

    def held_out_error() -> float:
        x_t = alpha_bar[200].sqrt() * test + (1 - alpha_bar[200]).sqrt() * test_noise
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return float((unet(x_t, 200).sample.float() - test_noise).pow(2).mean())

    print(f"{args.name} step 0 eps-MSE@200 {held_out_error():.4f}", flush=True)
    start, index = time.perf_counter(), 0
    for step in range(1, args.steps + 1):
        x0 = torch.stack([train[(index + i) % len(train)] for i in range(args.batch)])
        index += args.batch
        t = torch.randint(100, 400, (args.batch,))
        noise = torch.randn_like(x0)
        a = alpha_bar[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (unet(x_t, t).sample.float() - noise).pow(2).mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        if step % 100 == 0:
            print(
                f"{args.name} step {step} time {time.perf_counter() - start:.0f}s "
                f"eps-MSE@200 {held_out_error():.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
