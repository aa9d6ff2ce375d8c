"""Restoration evaluation: x → DeepJSCC (encoder → channel → decoder) → x̂ → restorer → x̃.

For every test batch the codec sends the images through the channel once, with channel noise
drawn from a generator seeded by (seed, global batch index), so every method restores the same
x̂ and reruns see the same noise. Metrics compare x̂ and each x̃ with x; per-image rows, a summary
and an image grid (x | x̂ | x̃ …) are written to the run folder.

Under DDP (``trainer=ddp``) each process restores whole batches of the single-process order
(:mod:`singexp.distributed`), rank 0 gathers them, computes the set-level metrics (SWD) and the
confidence intervals on all images, and alone writes: the numbers are the single-process ones.

Beside the methods, two things make a number mean something:
- a trivial baseline row, ``mean_image``: the receiver that ignores the channel and always
  outputs the mean training image;
- consistency with what was received, through the linear operator A that SING-Zero uses
  (the same A for every method): ``psnr_A_xhat`` = PSNR(A x̃, A x̂) — does x̃ keep the received
  content? — and ``psnr_A_x`` = PSNR(A x̃, A x) — does x̃ keep the original's coarse content?
  A hallucinated restoration scores low on both; the paper's "semantic consistency" claim
  (paper: SING-Zero, range–null-space: A x̃ = A x̂ exactly when σ_y = 0) needs the first to be high.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from singexp.distributed import ShardedBatches, gather_to_zero, world
from singexp.errors import ConfigError, SingexpError
from singexp.evaluation import (
    CONSISTENCY_ORIGINAL,
    CONSISTENCY_RECEIVED,
    CPU,
    Restorer,
    batch_generator,
    consistency,
    evaluate_batch,
    project,
    score_batch,
    scored_outputs,
)
from singexp.faults import atomic_path
from singexp.metrics import ImageMetrics, psnr
from singexp.modules.jscc import DeepJSCCModule
from singexp.operators import LinearOperator, measurement_noise_std
from singexp.points import BASELINE, ORIGINAL, TRIVIAL

__all__ = [
    "CONSISTENCY_ORIGINAL",
    "CONSISTENCY_RECEIVED",
    "CPU_SECONDS",
    "SECONDS",
    "BatchResult",
    "RestorationModule",
    "Restorer",
    "batch_generator",
]
from singexp.visualize import save_comparison_grid


@dataclass
class BatchResult:
    """One test batch's results: its global index, per-image rows, the images each method
    scored (and the originals) on the CPU, each method's seconds and the metrics measured."""

    index: int
    rows: list[dict[str, Any]]
    images: dict[str, Tensor]
    original: Tensor
    seconds: dict[str, float]
    keys: set[str]  # the per-image metrics measured


#: wall seconds per image of each method (DeepJSCC: the codec's send and decode; a restorer:
#: its own call), in every method's summary (metrics.json); summed over the batches, divided by
#: the images, measured with the device synchronised
SECONDS = "seconds_per_image"
#: CPU seconds per image of each method, this process's (all its threads): what the load of
#: other processes does not change
CPU_SECONDS = "cpu_seconds_per_image"


class RestorationModule(L.LightningModule):
    """Evaluates DeepJSCC alone and each restorer on the same received images."""

    def __init__(
        self,
        codec: DeepJSCCModule,
        restorers: Mapping[str, Restorer],
        *,
        snr_db: float,
        metrics: ImageMetrics,
        networks: Mapping[str, torch.nn.Module] | None = None,
        seed: int = 0,
        grid_images: int = 8,
        mean_image: Tensor | None = None,
        operator: LinearOperator | None = None,
    ) -> None:
        """``mean_image`` (3, H, W): adds the trivial-baseline row :data:`TRIVIAL`;
        ``operator``: adds the consistency columns (module docstring)."""
        super().__init__()
        # networks the restorers use (e.g. the prior UNet): registered so Lightning moves them
        self.networks = torch.nn.ModuleDict(dict(networks or {}))
        self.codec = codec.eval().requires_grad_(False)
        self.restorers = dict(restorers)
        self.snr_db = float(snr_db)
        self.metrics = metrics
        self.seed = seed
        self.grid_images = grid_images
        self.mean_image = None if mean_image is None else mean_image.detach().cpu()
        self.operator = operator
        self.rows: list[dict[str, Any]] = []
        self.grid: dict[str, list[Tensor]] = {}
        self.summary: dict[str, dict[str, Any]] = {}
        self._batches: list[BatchResult] = []

    @property
    def methods(self) -> list[str]:
        trivial = [TRIVIAL] if self.mean_image is not None else []
        return [BASELINE, *self.restorers, *trivial]

    def on_test_epoch_start(self) -> None:
        self.rows, self.grid, self.summary = [], {}, {}
        self._batches = []

    def _position(self, batch_idx: int) -> tuple[int, int]:
        """``(global batch index, test index of its first image)`` of this process's
        ``batch_idx``-th batch: under DDP the loader's :class:`ShardedBatches` says; in one
        process with any in-order loader, ``batch_idx`` and the images seen so far."""
        sampler = getattr(self._test_loader(), "batch_sampler", None)
        if isinstance(sampler, ShardedBatches):
            index = sampler.global_batch(batch_idx)
            return index, sampler.start(index)
        if world()[1] > 1:
            raise SingexpError(
                "a DDP restoration needs the test loader of ImageDataModule."
                "sharded_test_dataloader (whole batches per process, noise seeded by the global "
                "batch); Lightning's DistributedSampler would seed by the local batch"
            )
        return batch_idx, sum(len(b.original) for b in self._batches)

    @torch.no_grad()
    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        """The one evaluation pass (:func:`~singexp.evaluation.evaluate_batch`) on this batch,
        scored into per-image rows (:func:`~singexp.evaluation.score_batch`)."""
        index, first = self._position(batch_idx)
        seconds: dict[str, float] = {}
        outputs = evaluate_batch(
            self.codec, self.restorers, batch, self.snr_db, self.seed, index, seconds
        )
        scored = scored_outputs(outputs, self.mean_image, batch)
        rows, keys = score_batch(
            self.metrics,
            scored,
            batch,
            self.operator,
            first=first,
            snr_db=self.snr_db,
            describe=self._describe,
        )
        self._batches.append(
            BatchResult(
                index=index,
                rows=rows,
                images={name: images.cpu() for name, images in scored.items()},
                original=batch.cpu(),
                seconds=seconds,
                keys=keys,
            )
        )

    def project(self, images: Tensor) -> Tensor | None:
        """A†A x through this module's operator (:func:`singexp.evaluation.project`)."""
        return project(self.operator, images)

    def consistency(
        self, x_tilde: Tensor, received: Tensor | None, original: Tensor | None
    ) -> dict[str, Tensor]:
        """:func:`singexp.evaluation.consistency` through this module's operator."""
        return consistency(self.operator, x_tilde, received, original)

    def _test_loader(self) -> Any:
        """The trainer's test loader (None when not attached to a trainer)."""
        try:
            loaders = self.trainer.test_dataloaders
        except RuntimeError:  # not attached to a trainer
            return None
        return loaders[0] if isinstance(loaders, list | tuple) else loaders

    def _describe(self, index: int) -> dict[str, Any]:
        """Where test image `index` comes from (its file, or generated sample and seed), if the
        test set says (``describe_item``). The test loader is not shuffled."""
        describe = getattr(getattr(self._test_loader(), "dataset", None), "describe_item", None)
        return dict(describe(index)) if callable(describe) else {}

    def on_test_epoch_end(self) -> None:
        gathered = gather_to_zero(self._batches)  # every process's batches, on rank 0 only
        self._batches = []
        if gathered is None:  # rank > 0 of a DDP run: rank 0 summarises and writes
            return
        batches = sorted((b for part in gathered for b in part), key=lambda b: b.index)
        self.rows = [row for b in batches for row in b.rows]
        sets = {name: torch.cat([b.images[name] for b in batches]) for name in self.methods}
        originals = torch.cat([b.original for b in batches])
        shown = [ORIGINAL, BASELINE, *self.restorers]  # the grid's rows (not the trivial one)
        self.grid = {
            name: [(originals if name == ORIGINAL else sets[name])[: self.grid_images]]
            for name in shown
        }
        seconds: dict[str, float] = {}
        for b in batches:
            for name, value in b.seconds.items():
                seconds[name] = seconds.get(name, 0.0) + value
        keys = sorted(set().union(*(b.keys for b in batches)))
        # set-level metrics of every method against the same originals, their share once
        set_level = self.metrics.set_level_many(sets, originals)
        for name in self.methods:
            rows = [r for r in self.rows if r["method"] == name]
            # a method's own keys only (DeepJSCC has no PSNR(A x̃, A x̂))
            own = [k for k in keys if any(k in r for r in rows)]
            summary = self.metrics.summarize({k: [r[k] for r in rows if k in r] for k in own})
            summary.update(set_level[name])
            summary["images"] = len(rows)
            if name in seconds and rows:
                summary[SECONDS] = seconds[name] / len(rows)
                summary[CPU_SECONDS] = seconds[name + CPU] / len(rows)
            self.summary[name] = summary
            for key, value in summary.items():
                if isinstance(value, int | float):
                    self.log(f"test/{name}/{key}", float(value), rank_zero_only=True)

    def grid_rows(self) -> dict[str, Tensor]:
        return {name: torch.cat(parts) for name, parts in self.grid.items()}


def write_per_image_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row per (image, method) with every per-image metric."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:  # never a torn CSV
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_outputs(module: RestorationModule, out: Path, title: str) -> dict[str, str]:
    """Per-image CSV and the comparison grid PNG in the run folder; returns their paths."""
    csv_path = write_per_image_csv(module.rows, out / "per_image.csv")
    grid_path = save_comparison_grid(module.grid_rows(), out / "grid.png", title=title)
    return {"per_image": str(csv_path), "grid": str(grid_path)}


def mean_image_or_skip(datamodule: Any) -> tuple[Tensor | None, str | None]:
    """The trivial baseline's image, the mean training image, or ``(None, why)`` where the data
    has no training split (a test-only folder): the baseline is then skipped, said in one line,
    never replaced by the mean of the test images it is scored on."""
    if datamodule.split_size("train") > 0:
        return datamodule.mean_image(), None
    why = (
        f"mean-image baseline skipped: {datamodule.name} has no training images to average "
        "(a test-only data set); add a train/ folder of the same kind of images to get it"
    )
    logging.getLogger("singexp").warning(why)
    return None, why


def mean_image_baseline(datamodule: Any) -> dict[str, float]:
    """PSNR of the trivial receiver that always outputs the mean training image (empty when
    the data has no training split: :func:`mean_image_or_skip`)."""
    mean, _ = mean_image_or_skip(datamodule)
    if mean is None:
        return {}
    test = datamodule.test_images(len(datamodule.test_dataset))
    return {"psnr": float(psnr(mean.to(test.dtype).expand_as(test), test).mean())}


def measured_sigma_y(
    codec: DeepJSCCModule, operator: LinearOperator, datamodule: Any, snr_db: float, seed: int
) -> float:
    """σ_y for ``sigma_y=auto``: the RMS of A x̂ − A x over up to 64 validation images of
    ``datamodule`` sent through the codec at the test SNR, channel noise seeded by ``seed``
    (:func:`~singexp.operators.measurement_noise_std`)."""
    val = datamodule.val_dataset
    if len(val) == 0:
        raise ConfigError(
            "sigma_y",
            f"auto measures σ_y on validation images and {datamodule.name} has none (a "
            "test-only data set); set sigma_y to a number (0 = noise-free DDNM)",
        )
    x = torch.stack([val[i] for i in range(min(64, len(val)))])
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 2)
    with torch.no_grad():
        x_hat = codec.eval()(x, snr_db, generator).clamp(-1, 1)
    return measurement_noise_std(operator, x, x_hat)
