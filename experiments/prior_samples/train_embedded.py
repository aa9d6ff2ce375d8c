"""Driver: train the embedded shapes-32 prior (singexp.models.prior.train_prior,
docs/guide/methods.md).

    .venv/bin/python experiments/prior_samples/train_embedded.py OUT_DIR [--steps 3000] ...

The recipe is ``conf/prior/embedded.yaml`` (architecture, schedule, lr, EMA, batch); the options
change only the compute: steps, time limit, batch, lr, accelerator, precision, data workers. With
no options it is the run that made the shipped prior's first 1508 steps (CPU, float32, one
thread, 52-minute limit). On a GPU (``device_train.sh`` beside this file) the same recipe gets
the 10⁴–10⁵ steps that a CPU session cannot give. Resumes from ``OUT_DIR/checkpoints/last.ckpt``;
exports the EMA weights to ``OUT_DIR/prior`` (a diffusers folder for ``quality.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from singexp.config import CONF_DIR
from singexp.data.shapes import ShapesDataModule
from singexp.models.prior import train_prior

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--max-time", default="00:00:52:00", help="Lightning DD:HH:MM:SS")
    parser.add_argument("--batch", type=int, help="images per step (default: the recipe's 64)")
    parser.add_argument("--lr", type=float, help="AdamW lr (default: the recipe's 1e-3)")
    parser.add_argument("--accelerator", default="cpu", help="cpu | gpu | auto")
    parser.add_argument("--precision", default="32", help="32 | bf16-mixed")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--val-every", type=int, help="validate every N steps (recipe: 500)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PRIOR_THREADS", "1")))
    torch.manual_seed(0)

    prior_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "prior" / "embedded.yaml"))
    assert isinstance(prior_cfg, dict)
    prior_cfg.pop("image_size")  # an interpolation of dataset.image_size; the data module's 32
    prior_cfg["max_steps"] = args.steps
    for key, value in (("batch_size", args.batch), ("lr", args.lr), ("val_every", args.val_every)):
        if value is not None:
            prior_cfg[key] = value
    data = ShapesDataModule(
        image_size=32,
        batch_size=int(prior_cfg["batch_size"]),
        num_workers=args.workers,
        train_size=100000,
        val_size=256,
        seed=0,
    )
    trainer_kwargs = dict(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        log_every_n_steps=20,
        enable_progress_bar=False,
        enable_model_summary=True,
        max_time=args.max_time,
        logger=CSVLogger(str(args.out), name="csv", version=0),
    )
    start = time.time()
    path = train_prior(prior_cfg, data, trainer_kwargs, args.out)
    print("EXPORTED", path, f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
