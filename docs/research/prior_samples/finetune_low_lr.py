"""Hypothesis test: does the shipped prior sharpen with a lower learning rate?

    .venv/bin/python docs/research/prior_samples/finetune_low_lr.py OUT_DIR [--lr 1e-4] \
        [--steps 1500]

The shipped prior was trained at a constant AdamW lr of 1e-3 (batch 64, EMA 0.999) and more
steps at that lr did not help (docs/research/prior_samples.md: 2400 → 6000 steps). A constant
high lr keeps the weights noisy; the usual remedy is a lower lr at the end of training. This
continues from the shipped EMA weights (``src/singexp/assets/prior_shapes32``) at ``--lr`` with
a fresh optimiser and a fresh EMA started at those weights, the same data, batch and loss as the
shipped recipe (``conf/prior/embedded.yaml``), writing a checkpoint every 100 steps (a rerun
with the same OUT_DIR resumes) and exporting the EMA to ``OUT_DIR/prior`` (diffusers format).
Measure it with ``experiments/prior_samples/quality.py LABEL OUT_DIR/prior --results
docs/research/prior_samples/quality.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import lightning as L
import torch
from diffusers.training_utils import EMAModel
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from singexp.config import CONF_DIR
from singexp.data.shapes import ShapesDataModule
from singexp.faults import resume_checkpoint
from singexp.models.prior import EMBEDDED_DIR, MODULE_KEYS, load_prior
from singexp.modules.prior import DiffusionPriorModule

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")


class MidStepModule(DiffusionPriorModule):
    """Training steps t drawn half uniformly over [0, T) and half over [lo, hi).

    Why (docs/research/prior_samples.md, fifth session): started from a real striped image
    noised to step 400, the shipped prior returns no stripes (from step 200 it keeps them,
    blurred), so the stripes and checkers are decided in the middle of the schedule; this spends
    1.5x the updates there (EDM, Karras et al. 2022, Sec. 5: the loss can only be reduced at
    intermediate noise levels, so training should focus on them). Validation keeps uniform t,
    comparable across runs.
    """

    def __init__(self, *, mid_steps: tuple[int, int], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.mid_steps = mid_steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        b, steps = batch.shape[0], self.noise_scheduler.config.num_train_timesteps
        lo, hi = self.mid_steps
        uniform = torch.randint(0, steps, (b,), device=batch.device)
        mid = torch.randint(lo, hi, (b,), device=batch.device)
        pick = torch.rand(b, device=batch.device) < 0.5
        loss = self.diffusion_loss(batch, t=torch.where(pick, mid, uniform))
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--max-time", default="00:01:00:00", help="Lightning max_time DD:HH:MM:SS")
    parser.add_argument(
        "--precision",
        default="32",
        help="Lightning precision: 32 (the first 1500 steps) or bf16-mixed (CPU autocast; "
        "2.1x faster per step on this machine's AMX cores, measured)",
    )
    parser.add_argument(
        "--mid-steps",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        help="draw half of the training steps t from [LO, HI) (MidStepModule); default uniform",
    )
    parser.add_argument(
        "--init",
        default=str(EMBEDDED_DIR),
        help="diffusers folder the fine-tune starts from (default: the shipped prior)",
    )
    parser.add_argument(
        "--backgrounds",
        nargs="+",
        metavar="KIND=WEIGHT",
        help="background mix of the training data (dataset.backgrounds), e.g. stripes=1 "
        "checkers=1; default the data's own mix",
    )
    args = parser.parse_args()
    backgrounds = (
        {k: float(w) for k, w in (item.split("=") for item in args.backgrounds)}
        if args.backgrounds
        else None
    )
    torch.set_num_threads(int(os.environ.get("PRIOR_THREADS", "1")))
    torch.manual_seed(1)  # another stream of data and noise than the shipped run's seed 0

    recipe = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "prior" / "embedded.yaml"))
    keys = {k: recipe[k] for k in MODULE_KEYS if recipe.get(k) is not None}
    keys["lr"] = args.lr
    sample_dir = str(args.out / "samples")
    if args.mid_steps:
        module: DiffusionPriorModule = MidStepModule(
            mid_steps=tuple(args.mid_steps), image_size=32, **keys, sample_dir=sample_dir
        )
    else:
        module = DiffusionPriorModule(image_size=32, **keys, sample_dir=sample_dir)
    start = load_prior(args.init, expected_size=32)
    module.unet.load_state_dict(start.state_dict())
    module.ema = EMAModel(module.unet.parameters(), decay=float(recipe["ema_decay"]))

    data = ShapesDataModule(
        image_size=32,
        batch_size=int(recipe["batch_size"]),
        train_size=100000,
        val_size=256,
        seed=1,
        backgrounds=backgrounds,
    )
    checkpoint = ModelCheckpoint(
        dirpath=str(args.out / "checkpoints"),
        every_n_train_steps=100,
        save_last=True,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=args.precision,
        max_steps=args.steps,
        max_epochs=-1,
        max_time=args.max_time,
        log_every_n_steps=20,
        enable_progress_bar=False,
        val_check_interval=500,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        callbacks=[checkpoint],
        logger=CSVLogger(str(args.out), name="csv", version=0),
        default_root_dir=str(args.out),
    )
    trainer.fit(module, datamodule=data, ckpt_path=resume_checkpoint(args.out, True, "fine-tune"))
    print("EXPORTED", module.export(args.out / "prior"), flush=True)


if __name__ == "__main__":
    main()
