"""Driver: train the embedded shapes-32 prior (singexp.modules.prior.train_prior, SING.md §7)."""

import logging
import os
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger

from singexp.data.shapes import ShapesDataModule
from singexp.modules.prior import train_prior

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

torch.set_num_threads(int(os.environ.get("PRIOR_THREADS", "1")))
torch.manual_seed(0)
out = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/main/outputs/prior_shapes32_train")
prior_cfg = dict(
    block_out_channels=[32, 64, 128],
    layers_per_block=1,
    attention=False,
    norm_num_groups=None,
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=0.02,
    schedule="linear",
    lr=1e-3,
    weight_decay=0.0,
    ema_decay=0.999,
    batch_size=64,
    max_steps=3000,
    checkpoint_every=100,
    val_every=500,
    val_batches=1,
    grid_size=16,
    grid_steps=25,
    export_dtype="float16",
)
dm = ShapesDataModule(image_size=32, batch_size=64, train_size=100000, val_size=256, seed=0)
trainer_kwargs = dict(
    accelerator="cpu",
    devices=1,
    precision=32,
    log_every_n_steps=20,
    enable_progress_bar=False,
    enable_model_summary=True,
    max_time=os.environ.get("PRIOR_MAX_TIME", "00:00:52:00"),
    logger=CSVLogger(str(out), name="csv", version=0),
)
t0 = time.time()
path = train_prior(prior_cfg, dm, trainer_kwargs, out)
print("EXPORTED", path, f"{time.time() - t0:.0f}s", flush=True)
