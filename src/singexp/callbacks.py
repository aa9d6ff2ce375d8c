"""Lightning callbacks of singexp's own that every training run gets (the ``callbacks`` group
adds the configurable ones: checkpoints, progress bar, model summary).

:class:`TrainingSizeCheck` says, in one line before training starts, when a model is about to
be trained on very few images or for very few optimiser steps (a codec trained on a
14-image folder split for 6 steps gave numbers that looked like results). Thresholds:
``dataset.min_train_images`` (the data module's) and ``min_train_steps`` (the root config);
0 turns either off, ``quick=true`` turns both off (the run is declared tiny).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("singexp")

#: what a warning calls the model of each LightningModule class
MODEL_NAMES = {
    "DeepJSCCModule": "the DeepJSCC codec",
    "INNModule": "the SING-INN network",
    "DiffusionPriorModule": "the diffusion prior",
}


def tiny_training_note(
    model: str, images: int | None, min_images: int, steps: int | None, min_steps: int
) -> str | None:
    """One line when ``images`` < ``min_images`` or ``steps`` < ``min_steps`` (a threshold of 0
    or an unknown count never warns); None otherwise."""
    few: list[str] = []
    if images is not None and images < min_images:
        few.append(f"{images} images (< dataset.min_train_images={min_images})")
    if steps is not None and steps < min_steps:
        few.append(
            f"{steps} optimiser step{'' if steps == 1 else 's'} (< min_train_steps={min_steps})"
        )
    if not few:
        return None
    return (
        f"{model} is trained on {' for '.join(few)}: it will be far from trained and what it "
        "restores means little; add training images, train longer (trainer.max_epochs; "
        "a prior: prior.max_steps) or set the threshold to 0"
    )


class TrainingSizeCheck(Callback):
    """Warns once per fit, before the first step, when training is tiny (module docstring);
    the line is kept in :attr:`notes` for the run's metrics.json."""

    def __init__(self, min_steps: int = 0) -> None:
        self.min_steps = int(min_steps)
        self.notes: list[str] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = getattr(trainer, "datamodule", None)
        images = None
        if datamodule is not None and hasattr(datamodule, "train_dataset"):
            images = len(datamodule.train_dataset)
        steps = trainer.estimated_stepping_batches
        note = tiny_training_note(
            MODEL_NAMES.get(type(pl_module).__name__, type(pl_module).__name__),
            images,
            int(getattr(datamodule, "min_train_images", 0) or 0),
            None if steps == float("inf") else int(steps),
            self.min_steps,
        )
        if note is not None:
            log.warning(note)
            self.notes.append(note)


def training_notes(callbacks: list[Any]) -> list[str]:
    """What the :class:`TrainingSizeCheck` among ``callbacks`` said."""
    return [n for cb in callbacks if isinstance(cb, TrainingSizeCheck) for n in cb.notes]
