"""What one restoration run is built of, for the evaluation task and the pipeline alike: the
codec, the operator A, the INN, the prior and the restorers, with every check between them.

:func:`build_restoration` resolves the ``auto`` models (:mod:`singexp.artifacts`), builds A
(``operator`` group; a fitted A on training pairs), measures σ_y where a method asks
(``sigma_y=auto``) and builds the restorers (:mod:`singexp.samplers.build`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from singexp.artifacts import require_codec, resolve_inn, resolve_prior_source
from singexp.bcr import format_ratio
from singexp.config import RunConfig
from singexp.data.base import training_split
from singexp.errors import ConfigError
from singexp.modules.inn import check_inn_checkpoint, jscc_identity
from singexp.modules.jscc import (
    DeepJSCCModule,
    check_checkpoint,
    configured_architecture,
    load_codec,
)
from singexp.modules.restoration import Restorer, measured_sigma_y
from singexp.operators import LinearOperator, codec_pairs, operator_from_config
from singexp.reuse import file_identity, reused
from singexp.samplers.build import build_restorers, needs_sigma_y


@dataclass
class Restoration:
    """The parts of one (BCR, SNR)'s restoration: what :func:`build_restoration` returns."""

    codec: DeepJSCCModule
    #: the codec's file (``jscc.checkpoint`` resolved: ``auto`` trained, ``embedded`` shipped)
    codec_path: Path
    operator: LinearOperator
    restorers: dict[str, Restorer]
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)
    inn_path: Path | None = None
    prior_source: str | None = None
    sigma_y: float | None = None


def run_operator(
    run: RunConfig, codec: DeepJSCCModule, train_dataset: Callable[[], Any]
) -> LinearOperator:
    """The ``operator`` group's A: a fitted A (``operator=fitted``) is fitted on training pairs
    (``train_dataset()``, only read then) at the test SNR, channel noise seeded by ``seed``:
    the same A on every run."""
    if run.operator is None:
        raise ConfigError("operator", "missing; choose e.g. operator=avgpool")
    return operator_from_config(
        run.operator,
        run.bcr,
        run.latent.image_size,
        pairs=lambda n: codec_pairs(
            codec.eval(), train_dataset(), n, run.channel.snr_db, run.seed * 1_000_003 + 3
        ),
    )


def build_restoration(run: RunConfig, datamodule: Callable[[], Any]) -> Restoration:
    """Codec, operator, INN, prior and restorers for ``run`` (``datamodule()``: the data module,
    read only for a fitted A or σ_y), checked by :func:`~singexp.preflight.preflight` before.
    ``auto`` models train here, once (shared by every job); ``run`` is left as it is, the
    resolved models are in the returned :class:`Restoration`."""
    codec_path = require_codec(run, "restoration")
    if run.jscc.checkpoint == "auto":  # a given file was checked by preflight; this one is new
        check_checkpoint(
            codec_path,
            {
                "bcr": format_ratio(run.bcr),
                "image_size": run.latent.image_size,
                **configured_architecture(run.jscc),
            },
        )
    path, snr_db = str(codec_path), run.channel.snr_db
    codec = reused(  # once per process and SNR (singexp.reuse)
        ("codec", file_identity(path), snr_db), lambda: load_codec(path, test_snr_db=snr_db)
    )
    operator = run_operator(run, codec, lambda: training_split(datamodule(), "operator=fitted"))
    # auto models are trained only for a job that restores (a bare DeepJSCC run needs none)
    needs_inn = bool(run.methods) or run.inn is None or run.inn.checkpoint != "auto"
    inn_path = resolve_inn(run, codec_path) if needs_inn else None
    prior_source = resolve_prior_source(run) if run.methods else None
    if inn_path is not None:
        expected = {**jscc_identity(path), "snr_db": run.channel.snr_db}
        check_inn_checkpoint(inn_path, expected)
    sigma_y = None
    if needs_sigma_y(run.methods):
        sigma_y = measured_sigma_y(codec, operator, datamodule(), run.channel.snr_db, run.seed)
    restorers, networks = build_restorers(run, operator, inn_path, prior_source, sigma_y, codec)
    return Restoration(
        codec, codec_path, operator, restorers, networks, inn_path, prior_source, sigma_y
    )
