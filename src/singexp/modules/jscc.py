"""DeepJSCC LightningModule: MSE training over the channel, metrics at the test SNR.

Checkpoints carry what the model was trained for (BCR, image size, channel, latent shape);
its files, identity checks and training job: :mod:`singexp.models.jscc`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from singexp.channel import SNRSampler, build_channel
from singexp.metrics import ImageMetrics
from singexp.nn.jscc import DeepJSCC


class DeepJSCCModule(L.LightningModule):
    """Trains x → DeepJSCC(x, snr) → x̂ with MSE; validates and tests at ``test_snr_db``."""

    def __init__(
        self,
        *,
        bcr: str,
        image_size: int,
        latent_channels: int,
        channel: str = "awgn",
        downsample: int = 16,
        width: int = 64,
        snr_adaptive: bool = True,
        train_snr: tuple[float, float] = (0.0, 0.0),
        test_snr_db: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        metrics: dict[str, Any] | None = None,
        dataset: str | None = None,
    ) -> None:
        # dataset: the name of the data set it was trained on (recorded, never checked: a
        # restoration run on another data set warns)
        super().__init__()
        self.save_hyperparameters()
        self.codec = DeepJSCC(
            latent_channels, build_channel(channel), downsample, width, snr_adaptive
        )
        self.train_snr = SNRSampler(*train_snr)
        self.test_snr_db = test_snr_db
        self.metrics = ImageMetrics.from_config(metrics or {})
        self._per_image: dict[str, list[Tensor]] = {}
        self._sets: tuple[list[Tensor], list[Tensor]] = ([], [])
        self.test_summary: dict[str, Any] = {}

    def forward(
        self, x: Tensor, snr_db: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        if not isinstance(snr_db, Tensor):
            snr_db = torch.full((x.shape[0],), float(snr_db), device=x.device)
        return self.codec(x, snr_db, generator)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        snr = self.train_snr.sample(batch.shape[0], batch.device)
        loss = F.mse_loss(self.codec(batch, snr), batch)
        self.log("train/mse", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            weight_decay=self.hparams.weight_decay,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        )

    # --- evaluation: per-image metrics collected over the epoch, set-level metrics at its end ---
    def _eval_step(self, batch: Tensor) -> None:
        recon = self(batch, self.test_snr_db).clamp(-1, 1)
        self.metrics.to(batch.device)
        for key, value in self.metrics.per_image(recon, batch).items():
            self._per_image.setdefault(key, []).append(value.detach().cpu())
        self._sets[0].append(recon.detach().cpu())
        self._sets[1].append(batch.detach().cpu())

    def _eval_epoch_end(self, stage: str) -> dict[str, Any]:
        summary = self.metrics.summarize(self._per_image)
        if self._sets[0]:
            summary.update(
                self.metrics.set_level(torch.cat(self._sets[0]), torch.cat(self._sets[1]))
            )
        for key, value in summary.items():
            if isinstance(value, int | float):
                self.log(f"{stage}/{key}", float(value), prog_bar=key == "psnr")
        self._per_image, self._sets = {}, ([], [])
        return summary

    def on_validation_epoch_start(self) -> None:
        self._per_image, self._sets = {}, ([], [])

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._per_image, self._sets = {}, ([], [])

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self.test_summary = self._eval_epoch_end("test")
