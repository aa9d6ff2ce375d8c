"""What one run learns on the way, beside its frozen :class:`~singexp.config.RunConfig`.

:func:`singexp.config.validate` checks the config once into a frozen ``RunConfig``; nothing
writes into it afterwards. What a run resolves or finds while it runs is kept here instead:
:class:`RunState`, created by the layer that starts the run (:func:`singexp.tasks.run`,
:class:`~singexp.pipeline.SingPipeline`, an ``auto`` artifact's training job) and passed beside
the ``RunConfig`` to the functions that fill or read it (:func:`singexp.preflight.preflight`,
:func:`singexp.data.base.indexed_data`, the task functions). The models a run resolves (the
``auto`` codec, INN and prior) are returned by the functions that resolve them
(:func:`singexp.models.jscc.require_codec`, :func:`~singexp.models.inn.resolve_inn`,
:func:`~singexp.models.prior.resolve_prior_source`) and kept in
:class:`~singexp.assembly.Restoration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    """One run's state (not its config): the warnings said under its results, whether its
    :func:`~singexp.preflight.preflight` ran, and its indexed data module (built once)."""

    #: warnings found before the task ran (e.g. a BCR the paper did not use): in metrics.json
    warnings: list[str] = field(default_factory=list)
    #: :func:`~singexp.preflight.preflight` ran for this run (it runs once)
    preflight_done: bool = False
    #: the run's indexed data module (:func:`~singexp.data.base.indexed_data`), None until built
    datamodule: Any = None
