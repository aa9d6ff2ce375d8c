"""What each model of a run was trained on, and the warnings when that is not the tested data
(``+experiment=mismatch`` tells matched points from mismatched ones by it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from singexp.models.artifact import training_warnings
from singexp.models.inn import read_inn_metadata
from singexp.models.prior import prior_trained_on

if TYPE_CHECKING:
    from singexp.config import RunConfig

log = logging.getLogger("singexp.models")


def trained_on(
    codec: Any,
    inn_path: Path | None,
    prior_source: str | None = None,
    prior_declared: str | None = None,
) -> dict[str, str | None]:
    """The data set each model of the run was trained on, as it records it: the codec's and
    INN's checkpoint ``dataset``, the prior's (:func:`~singexp.models.prior.prior_trained_on`: its
    folder's record, a preset's known data, or ``prior.trained_on``); None: not recorded. In
    metrics.json as ``trained_on``: the report tells matched points from mismatched ones by it
    (``+experiment=mismatch``)."""
    found = {"jscc": codec.hparams.get("dataset")}
    if inn_path is not None:
        found["inn"] = read_inn_metadata(inn_path)["hparams"].get("dataset")
    if prior_source is not None:
        found["prior"] = prior_trained_on(prior_source, prior_declared)
    return {key: None if value is None else str(value) for key, value in found.items()}


#: the config key that names each model of :func:`trained_on`, and the value that trains it on
#: the tested data
MODEL_KEYS: dict[str, tuple[str, str]] = {
    "jscc": ("jscc.checkpoint", "auto"),
    "inn": ("inn.checkpoint", "auto"),
    "prior": ("prior.source", "auto"),
}


def trained_elsewhere(
    run: RunConfig, models: dict[str, str | None], trainable: bool = True
) -> list[str]:
    """One warning per model (:func:`trained_on`) trained on another data set than the tested
    images (:attr:`RunConfig.data_content`: ``dataset.content``, else ``dataset.name``): its
    numbers can look like the paper's pattern
    while every output is off-distribution. Logged now, printed under the table. ``trainable``:
    the data has a training split (else the fix is a model trained on data like it)."""
    tested = run.data_content
    warnings = []
    for key, trained in models.items():
        if trained is None or trained == tested:
            continue
        name, train_here = MODEL_KEYS[key]
        fix = (
            f"train on this data: {name}={train_here}"
            if trainable
            else f"a test-only data set: give {name} a model trained on data like it"
        )
        warnings.append(
            f"{name} ({run.select(name)}) was trained on {trained!r}, this run tests "
            f"on {tested!r}: its numbers measure a distribution mismatch, not the method ({fix})"
        )
    for warning in warnings:
        log.warning(warning)
    return warnings


def auto_training_notes(
    run: RunConfig, codec: Path | None, inn_path: Path | None, prior_source: str | None
) -> list[str]:
    """What the trainings of the run's ``auto`` models warned about (:func:`training_warnings`),
    said again by every run that uses them, each prefixed with its key (``codec``, ``inn_path``,
    ``prior_source``: the resolved models)."""
    notes: list[str] = []
    for key, path in (
        ("jscc.checkpoint", codec),
        ("inn.checkpoint", inn_path),
        ("prior.source", prior_source),
    ):
        if str(run.select(key)) == "auto" and path is not None:
            notes += [f"{key}=auto: {note}" for note in training_warnings(path)]
    return notes
