"""SING-INN's network trained on DeepJSCC pairs (paper: SING-INN): the LightningModule, its
hyper-parameters and loss. Its files, identity checks and training job: :mod:`singexp.models.inn`.

Training loss (the paper's Eq. 16; its exact weights are **open**, so λs come from
``conf/inn/default.yaml``), per batch of pairs (x, x̂ = DeepJSCC(x, snr), snr):

    (c, d) = f(x; snr),  c_y = coarse(x̂) = A x̂  (A: s×s average pooling, s = inn.scale)
    loss_c = mean ‖c − c_y‖²                    c matches the DeepJSCC output's coarse part
    loss_x = mean ‖f⁻¹(c_y, d; snr) − x‖²       the measurement's c with x's d gives back x
    loss_d = mean ‖d‖²                           d small (= a unit Gaussian NLL on d up to ½
                                                 and a constant)
    loss   = λ_c loss_c + λ_x loss_x + λ_d loss_d

Each mean is over the elements of its tensor. ``coarse`` is :meth:`ConditionalINN.coarse`,
the same A that SING-INN's guidance uses for c_y (samplers/sing_inn.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from singexp.data.pairs import freeze, make_pairs
from singexp.errors import ConfigError
from singexp.metrics import psnr_from_mse
from singexp.modules.jscc import DeepJSCCModule
from singexp.nn.inn import ConditionalINN, INNArchitecture
from singexp.schema import check_schema


# ---- config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class INNHParams(INNArchitecture):
    """What an INN checkpoint records (besides its DeepJSCC and data set): the architecture
    (:class:`~singexp.nn.inn.INNArchitecture`, its keys and defaults) and the training keys.
    ``train_snr_range`` is recorded as ``train_snr`` (:data:`RECORDED_AS`)."""

    lambda_c: float = 1.0
    lambda_x: float = 1.0
    lambda_d: float = 0.01
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_snr_range: tuple[float, float] = (-5.0, 5.0)
    val_snr_db: tuple[float, ...] | None = None

    def recorded(self) -> dict[str, Any]:
        """The hyper-parameters as a checkpoint records them (flat, under their recorded names)."""
        return {
            RECORDED_AS.get(f.name, f.name): getattr(self, f.name)
            for f in dataclasses.fields(INNHParams)
        }

    def check(self) -> None:
        """Raise a one-line ConfigError naming the first ``inn.*`` key out of range."""
        problems = self.problems()
        if not self.lr > 0:
            problems.append(("lr", f"must be > 0, got {self.lr}"))
        for key in ("lambda_c", "lambda_x", "lambda_d", "weight_decay"):
            if getattr(self, key) < 0:
                problems.append((key, f"must be ≥ 0, got {getattr(self, key)}"))
        if self.lambda_c == self.lambda_x == self.lambda_d == 0:
            problems.append(("lambda_c", "all loss weights are 0; set λ_c, λ_x or λ_d > 0"))
        low, high = self.train_snr_range
        if low > high:
            problems.append(
                ("train_snr_range", f"must be [low, high] with low ≤ high, got {[low, high]}")
            )
        if self.val_snr_db is not None and not self.val_snr_db:
            problems.append(("val_snr_db", "must be null or a non-empty list of SNRs in dB"))
        if problems:
            key, why = problems[0]
            raise ConfigError(f"inn.{key}", why)


#: hyper-parameters an INN checkpoint records under another name than their ``inn.*`` key
RECORDED_AS = {"train_snr_range": "train_snr"}


def inn_hparams(base: INNHParams | None = None, **recorded: Any) -> INNHParams:
    """``base`` (default: the defaults) with the ``recorded`` hyper-parameters (a checkpoint's,
    under their recorded names) replacing some, checked like the config."""
    values = {f.name: getattr(base or INNHParams(), f.name) for f in dataclasses.fields(INNHParams)}
    names = {recorded_name: name for name, recorded_name in RECORDED_AS.items()}
    values.update({names.get(key, key): value for key, value in recorded.items()})
    hparams = check_schema("inn", values, INNHParams)
    hparams.check()
    return hparams


# ---- the LightningModule -------------------------------------------------------------------
class INNModule(L.LightningModule):
    """Trains :class:`ConditionalINN` on pairs made on the fly from a frozen DeepJSCC.

    ``codec``: the trained DeepJSCCModule that makes the pairs (not saved in checkpoints).
    ``jscc``: its identity as the INN records it
    (:func:`singexp.models.jscc.jscc_identity`). Batches are image tensors (B, 3, H, W).
    Validation: for each SNR of ``val_snr_db`` (default: low, middle and high of
    ``train_snr``) the MSE/PSNR of c vs coarse(x̂) and the PSNR of f⁻¹(coarse(x̂), d) vs x;
    ``val/psnr`` is the mean c-PSNR over those SNRs (what checkpointing monitors).
    """

    def __init__(
        self,
        config: INNHParams | None = None,
        /,
        *,
        jscc: dict[str, Any] | None = None,
        codec: DeepJSCCModule | None = None,
        dataset: str | None = None,
        **recorded: Any,
    ) -> None:
        # config: the architecture and training keys (an INNConfig will do); ``recorded``
        # replaces some, under the names a checkpoint records (scale=8, train_snr=(-5, 5)), so
        # a checkpoint's hyper-parameters rebuild the module. dataset: name of the data set its
        # pairs came from (recorded for the restoration run's trained-elsewhere warning)
        super().__init__()
        self.config = inn_hparams(config, **recorded)
        self.save_hyperparameters({"jscc": jscc, **self.config.recorded(), "dataset": dataset})
        self.inn = ConditionalINN(self.config)
        object.__setattr__(self, "_codec", None if codec is None else freeze(codec))
        self._val: dict[float, dict[str, list[Tensor]]] = {}
        self.val_summary: dict[str, float] = {}

    # --- the frozen codec and pairs ----------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The frozen DeepJSCC network that makes the training pairs (``codec=``; a loaded INN
        has none: :func:`singexp.models.inn.load_inn` with ``codec=`` gives it one)."""
        if self._codec is None:
            raise ConfigError(
                "jscc.checkpoint",
                "this INN needs its DeepJSCC to make training or validation pairs; load it with "
                "singexp.models.inn.load_inn(path, codec=...)",
            )
        return self._codec

    def val_snrs(self) -> list[float]:
        if self.config.val_snr_db:
            return list(self.config.val_snr_db)
        low, high = self.config.train_snr_range
        return sorted({low, (low + high) / 2.0, high})

    # --- loss ----------------------------------------------------------------------------------
    def losses(self, x: Tensor, x_hat: Tensor, snr_db: Tensor) -> dict[str, Tensor]:
        """The loss terms of the module docstring on one batch of pairs."""
        h = self.config
        c, d = self.inn(x, snr_db)
        c_y = self.inn.coarse(x_hat)
        loss_c = F.mse_loss(c, c_y)
        loss_x = F.mse_loss(self.inn.inverse(c_y, d, snr_db), x)
        loss_d = d.pow(2).mean()
        loss = h.lambda_c * loss_c + h.lambda_x * loss_x + h.lambda_d * loss_d
        return {"loss": loss, "loss_c": loss_c, "loss_x": loss_x, "loss_d": loss_d}

    def forward(self, x: Tensor, snr_db: Tensor | float) -> tuple[Tensor, Tensor]:
        return self.inn(x, snr_db)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        pairs = make_pairs(self.codec, batch, self.config.train_snr_range)
        losses = self.losses(*pairs)
        for key, value in losses.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=batch.shape[0])
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.inn.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    # --- evaluation: c vs coarse(x̂) per SNR, seeded channel noise -----------------------------
    def _eval_step(self, batch: Tensor, batch_idx: int) -> None:
        for k, snr in enumerate(self.val_snrs()):
            generator = torch.Generator(device=batch.device)
            generator.manual_seed(1_000_003 * batch_idx + k)
            x, x_hat, snr_t = make_pairs(self.codec, batch, snr, generator)
            c, d = self.inn(x, snr_t)
            c_y = self.inn.coarse(x_hat)
            x_rec = self.inn.inverse(c_y, d, snr_t)
            stats = {
                "mse_c": (c - c_y).pow(2).mean(dim=(1, 2, 3)),
                "mse_x": (x_rec - x).pow(2).mean(dim=(1, 2, 3)),
                "mse_jscc": (x_hat - x).pow(2).mean(dim=(1, 2, 3)),
                "loss_d": d.pow(2).mean(dim=(1, 2, 3)),
            }
            slot = self._val.setdefault(snr, {})
            for key, value in stats.items():
                slot.setdefault(key, []).append(value.detach().cpu())

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        summary: dict[str, float] = {}
        psnr_c = []
        for snr, slot in sorted(self._val.items()):
            values = {key: torch.cat(parts) for key, parts in slot.items()}
            tag = f"snr{snr:g}"
            summary[f"mse_c_{tag}"] = float(values["mse_c"].mean())
            for name in ("c", "x", "jscc"):
                psnr = psnr_from_mse(values[f"mse_{name}"])
                summary[f"psnr_{name}_{tag}"] = float(psnr.mean())
            summary[f"loss_d_{tag}"] = float(values["loss_d"].mean())
            psnr_c.append(summary[f"psnr_c_{tag}"])
        if psnr_c:
            summary["psnr"] = sum(psnr_c) / len(psnr_c)
        for key, value in summary.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "psnr")
        self._val = {}
        return summary

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    @torch.no_grad()
    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_summary = self._eval_epoch_end("val")
        else:
            self._val = {}

    def on_test_epoch_start(self) -> None:
        self._val = {}

    @torch.no_grad()
    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.val_summary = self._eval_epoch_end("test")


# ---- checkpoints, export, identity checks --------------------------------------------------
