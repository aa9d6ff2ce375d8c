"""Unconditional DDPM prior as a LightningModule: ε-prediction MSE, AdamW, EMA, export.

The EMA of the weights (diffusers' ``EMAModel``, updated after every optimiser step) is stored in
Lightning checkpoints (key ``"ema"``) so training resumes exactly; :meth:`export` writes the EMA
weights as a diffusers folder (safetensors) that ``UNet2DModel.from_pretrained`` and
:func:`singexp.models.prior.load_prior` read. :func:`singexp.models.prior.train_prior` drives
the module with a Lightning ``Trainer`` (resumable) and exports the EMA weights.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from diffusers.models import UNet2DModel  # not `diffusers`: dummies under TYPE_CHECKING
from diffusers.training_utils import EMAModel
from torch import Tensor

from singexp.errors import ConfigError
from singexp.faults import WriteError
from singexp.nn.unet import build_unet
from singexp.samplers.schedulers import build_scheduler

log = logging.getLogger("singexp.prior")

EXPORT_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "float32": torch.float32}


LOSS_WEIGHTINGS: tuple[str, ...] = ("uniform", "min_snr")


def loss_weights(alpha_bar: Tensor, weighting: str, gamma: float = 5.0) -> Tensor:
    """Per-image weights of the ε-MSE at noise levels ``alpha_bar`` (ᾱ_t).

    ``uniform``: 1 (Ho et al. 2020, L_simple). ``min_snr``: min(SNR_t, γ) / SNR_t with
    SNR_t = ᾱ_t / (1 − ᾱ_t) — Min-SNR-γ weighting for ε-prediction (Hang et al., ICCV 2023,
    "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 9/Table 1): the easy
    low-noise steps no longer dominate, which the paper reports converges ~3.4× faster.
    """
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    if weighting == "min_snr":
        snr = alpha_bar / (1.0 - alpha_bar)
        return torch.clamp(snr, max=gamma) / snr
    raise ConfigError("prior.loss_weighting", f"is {weighting!r}; choose one of {LOSS_WEIGHTINGS}")


class DiffusionPriorModule(L.LightningModule):
    """Trains ``unet(x_t, t) ≈ ε`` with ``x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε``, t uniform in [0, T)."""

    def __init__(
        self,
        *,
        image_size: int,
        in_channels: int = 3,
        block_out_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 1,
        attention: bool | Sequence[bool] = False,
        norm_num_groups: int | None = None,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        schedule: str = "linear",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ema_decay: float = 0.999,
        loss_weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        grid_size: int = 16,
        grid_steps: int = 50,
        sample_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.unet = build_unet(
            image_size,
            in_channels,
            tuple(block_out_channels),
            layers_per_block,
            attention if isinstance(attention, bool) else tuple(attention),
            norm_num_groups,
        )
        # unconditional sample grids clip x0 as diffusers' DDPM pipelines do (restoration never
        # uses this scheduler: it builds its own without clipping)
        self.noise_scheduler = build_scheduler(
            num_train_timesteps, beta_start, beta_end, schedule, kind="ddpm", clip_sample=True
        )
        self.ema = EMAModel(self.unet.parameters(), decay=float(ema_decay))
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(
                "prior.loss_weighting",
                f"is {loss_weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}",
            )
        if loss_weighting == "min_snr" and not float(min_snr_gamma) > 0:
            raise ConfigError("prior.min_snr_gamma", f"must be > 0, got {min_snr_gamma}")

    # ---- training ------------------------------------------------------------------------
    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The predicted noise ε_θ(x_t, t)."""
        return self.unet(x_t, t).sample

    def diffusion_loss(
        self,
        x0: Tensor,
        generator: torch.Generator | None = None,
        model: UNet2DModel | None = None,
        t: Tensor | None = None,
    ) -> Tensor:
        """MSE between ε and its prediction at uniform random t (seeded by ``generator``; or at
        the given steps ``t``), each image weighted by :func:`loss_weights`
        (``prior.loss_weighting``)."""
        model = model or self.unet
        b = x0.shape[0]
        steps = self.noise_scheduler.config.num_train_timesteps  # type: ignore[attr-defined]  # diffusers types .config as a dict; it is a FrozenDict (attribute access)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if t is None:
            t = torch.randint(0, steps, (b,), generator=generator, device=x0.device)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)  # type: ignore[arg-type]  # diffusers asks for an IntTensor; any integer tensor does
        per_image = (model(x_t, t).sample - noise).pow(2).flatten(1).mean(1)
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(x0.device)[t]
        weights = loss_weights(
            alpha_bar,
            self.hparams.loss_weighting,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            float(self.hparams.min_snr_gamma),  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        )
        return (weights.to(per_image.dtype) * per_image).mean()

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # EMA update right after each optimiser step: before the callbacks' on_train_batch_end,
        # so a checkpoint written at step n holds the EMA of step n (exact resume)
        super().optimizer_step(*args, **kwargs)
        self._ema_to_device()
        self.ema.step(self.unet.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.unet.parameters(),
            lr=self.hparams.lr,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            weight_decay=self.hparams.weight_decay,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        )

    # ---- EMA -----------------------------------------------------------------------------
    def _ema_to_device(self) -> None:
        first = next(self.unet.parameters())
        if self.ema.shadow_params and self.ema.shadow_params[0].device != first.device:
            self.ema.to(device=first.device)

    def ema_unet(self) -> UNet2DModel:
        """A copy of the UNet holding the EMA weights, in eval mode."""
        self._ema_to_device()
        model = copy.deepcopy(self.unet)
        self.ema.copy_to(model.parameters())
        return model.eval().requires_grad_(False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        else:  # a checkpoint without EMA: start the average from the loaded weights
            log.warning("checkpoint has no EMA state; the EMA restarts from the raw weights")
            self.ema = EMAModel(self.unet.parameters(), decay=float(self.hparams.ema_decay))  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping

    # ---- validation: loss at seeded t and noise; an optional grid of EMA samples ------------
    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        generator = torch.Generator(device=batch.device).manual_seed(1000 + batch_idx)
        with torch.no_grad():
            loss = self.diffusion_loss(batch, generator)
            ema_loss = self.diffusion_loss(
                batch,
                torch.Generator(device=batch.device).manual_seed(1000 + batch_idx),
                self.ema_unet(),
            )
        self.log("val/loss", loss, prog_bar=True, batch_size=batch.shape[0])
        self.log("val/ema_loss", ema_loss, batch_size=batch.shape[0])

    def on_validation_epoch_end(self) -> None:
        n = int(self.hparams.grid_size)  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        if n < 1 or self.trainer.sanity_checking:
            return
        grid = self.sample_grid(n, int(self.hparams.grid_steps), eta=1.0, seed=0)  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        if self.hparams.sample_dir:  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            from torchvision.utils import save_image

            folder = Path(self.hparams.sample_dir)  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            folder.mkdir(parents=True, exist_ok=True)
            save_image(grid, folder / f"step{self.global_step:07d}.png")
        for logger in self.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image("val/samples", [grid], step=self.global_step)
            elif hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("val/samples", grid, self.global_step)

    # ---- sampling and export --------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int = 50,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        """``n`` unconditional samples in [-1, 1] by DDIM with ``steps`` steps and ``eta``."""
        model = self.ema_unet() if use_ema else self.unet.eval()
        return ddim_sample(model, self.noise_scheduler.config, n, steps, eta, generator)

    def sample_grid(self, n: int, steps: int, eta: float = 1.0, seed: int = 0) -> Tensor:
        """A (3, H', W') image grid in [0, 1] of ``n`` EMA samples (seeded)."""
        from torchvision.utils import make_grid

        generator = torch.Generator(device=self.device).manual_seed(seed)
        images = self.sample(n, steps, eta, generator)
        return make_grid(images.add(1).div(2).cpu(), nrow=sample_grid_rows(n), padding=1)

    def export(self, directory: str | Path, dtype: str = "float16") -> Path:
        """Write the EMA weights as a diffusers folder (safetensors) and the noise schedule.

        float16 halves the file; it loads back into a float32 model (``from_pretrained`` then
        ``.float()``, which :func:`singexp.models.prior.load_prior` does) with the rounding of fp16.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self.ema_unet()
        torch.nn.Module.to(model, EXPORT_DTYPES[dtype])  # plain cast: fp16 storage only
        # into a temporary folder beside it, then each file renamed into place: a full disk
        # leaves no torn weights file (and is one line naming the folder)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        except OSError as error:
            raise WriteError(directory, error) from error
        try:
            model.save_pretrained(str(staging), safe_serialization=True)
            self.noise_scheduler.save_pretrained(str(staging / "scheduler"))
            for file in sorted(staging.rglob("*")):
                if file.is_file():
                    target = directory / file.relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(file, target)
        except OSError as error:
            raise WriteError(directory, error) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory


@torch.no_grad()
def ddim_sample(
    model: UNet2DModel,
    schedule_config: Any,
    n: int,
    steps: int = 50,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Plain DDIM sampling from ``model`` with the noise schedule of ``schedule_config``."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(schedule_config)
    scheduler.set_timesteps(int(steps))
    param = next(model.parameters())
    size = int(model.config.sample_size)  # type: ignore[attr-defined]  # diffusers types .config as a dict; it is a FrozenDict (attribute access)
    shape = (int(n), int(model.config.in_channels), size, size)  # type: ignore[attr-defined]  # diffusers types .config as a dict; it is a FrozenDict (attribute access)
    x = torch.randn(shape, generator=generator, device=param.device, dtype=param.dtype)
    for t in scheduler.timesteps:
        eps = model(x, t).sample
        x = scheduler.step(eps, t, x, eta=float(eta), generator=generator).prev_sample
    return x.clamp(-1, 1)


def sample_grid_rows(n: int) -> int:
    """Images per row of a roughly square grid of ``n`` images."""
    return max(1, math.ceil(math.sqrt(n)))
