"""The Lightning trainer of a run: the ``trainer`` group (a ``_target_`` spec), the callbacks of
the ``callbacks`` group and the training-size check every run gets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.loggers import Logger

from singexp.callbacks import TrainingSizeCheck
from singexp.instantiate import build

if TYPE_CHECKING:
    from singexp.config import RunConfig


def build_callbacks(run: RunConfig) -> list[Any]:
    """The Lightning callbacks of the ``callbacks`` group, and the training-size check that
    every run gets (:class:`~singexp.callbacks.TrainingSizeCheck`, ``min_train_steps``)."""
    chosen = [build(spec) for spec in run.callbacks.values() if spec]
    return [*chosen, TrainingSizeCheck(run.min_train_steps)]


def trainer_kwargs(run: RunConfig, loggers: list[Logger]) -> dict[str, Any]:
    """``lightning.Trainer`` keyword arguments of the config, with loggers and callbacks built."""
    kwargs = {k: v for k, v in run.trainer.items() if k != "_target_"}
    return {**kwargs, "logger": loggers or False, "callbacks": build_callbacks(run)}


def build_trainer(run: RunConfig, loggers: list[Logger], **overrides: Any) -> L.Trainer:
    """The run's ``lightning.Trainer`` with ``loggers`` (none: no logger) and ``overrides``."""
    return build(run.trainer, logger=loggers or False, callbacks=build_callbacks(run), **overrides)
