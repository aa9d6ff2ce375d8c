"""What one restoration run is built of, for the evaluation task and the pipeline alike: the
codec, the operator A, the INN, the prior and the restorers, with every check between them.

:func:`build_restoration` resolves the models (each kind in :mod:`singexp.models`: ``auto``
trained once), builds A (``operator`` group; a fitted A on training pairs), measures σ_y where
a method asks (``sigma_y=auto``) and builds the restorers (:func:`build_restorers`: each
method's scheduler, its callable with the networks it shares, and the record of what ran,
metrics.json ``samplers``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from singexp.config import RunConfig
from singexp.data.base import training_split
from singexp.errors import ConfigError
from singexp.models.inn import run_inn
from singexp.models.jscc import run_codec
from singexp.models.prior import run_prior
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import Restorer, measured_sigma_y
from singexp.operators import LinearOperator, codec_pairs, operator_from_config
from singexp.samplers.nfe import method_nfe
from singexp.samplers.registry import CODEC_METHODS, Method, restorer
from singexp.samplers.schedulers import method_scheduler
from singexp.samplers.sing_inn import check_measurement
from singexp.samplers.sing_zero import SIGMA_Y_AUTO


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
    Each model kind is asked once for its model (:mod:`singexp.models`: resolved, ``auto``
    trained once and shared by every job, checked, loaded once per process); ``run`` is left
    as it is, the resolved models are in the returned :class:`Restoration`."""
    codec_path, codec = run_codec(run)
    operator = run_operator(run, codec, lambda: training_split(datamodule(), "operator=fitted"))
    inn_path, inn = run_inn(run, codec_path)
    prior_source, unet = run_prior(run)
    sigma_y = None
    if needs_sigma_y(run.methods):
        sigma_y = measured_sigma_y(codec, operator, datamodule(), run.channel.snr_db, run.seed)
    restorers, networks = build_restorers(
        run, operator, unet=unet, inn=inn, codec=codec, sigma_y=sigma_y
    )
    return Restoration(
        codec, codec_path, operator, restorers, networks, inn_path, prior_source, sigma_y
    )


def needs_sigma_y(methods: dict[str, Method]) -> bool:
    """Whether a method measures its σ_y (``sigma_y=auto``)."""
    return any(getattr(m.config, "sigma_y", None) == SIGMA_Y_AUTO for m in methods.values())


def build_restorers(
    run: RunConfig,
    operator: LinearOperator,
    *,
    unet: torch.nn.Module | None,
    inn: torch.nn.Module | None = None,
    codec: DeepJSCCModule | None = None,
    sigma_y: float | None = None,
) -> tuple[dict[str, Restorer], dict[str, torch.nn.Module]]:
    """Restorer callables for ``run.methods`` and the networks they share (moved by Lightning):
    the prior ``unet`` (:func:`~singexp.models.prior.run_prior`), the INN network
    (:func:`~singexp.models.inn.run_inn`), the codec (the run's
    :class:`~singexp.modules.jscc.DeepJSCCModule`) for the baselines that run the DeepJSCC
    chain (``dps_jscc``, ``inverse_jscc``). ``sigma_y``: what ``sigma_y=auto`` means.
    """
    methods = run.methods
    if not methods:
        return {}, {}
    if unet is None or run.prior is None:
        raise ValueError("build_restorers: a prior is needed when methods are configured")
    networks: dict[str, torch.nn.Module] = {"prior": unet}
    if inn is not None:
        networks["inn"] = inn
    if any(m.name in CODEC_METHODS for m in methods.values()):
        # the baselines' forward model: the DeepJSCC the images went through (frozen; the SNR
        # each restorer is called with is the test SNR)
        if codec is None:
            raise ValueError(f"build_restorers: {', '.join(CODEC_METHODS)} need the run's codec")
        networks["codec"] = codec.codec.eval().requires_grad_(False)
    restorers = restorers_from_parts(
        methods,
        unet=unet,
        schedulers={name: method_scheduler(run.prior, m) for name, m in methods.items()},
        operator=operator,
        inn=inn,
        codec=networks.get("codec"),
        sigma_y=sigma_y,
        compute=run.compute,
    )
    return restorers, networks


def restorers_from_parts(
    methods: dict[str, Method],
    *,
    unet: torch.nn.Module,
    schedulers: dict[str, Any],
    operator: LinearOperator,
    inn: torch.nn.Module | None = None,
    codec: torch.nn.Module | None = None,
    sigma_y: float | None = None,
    compute: Any = None,
) -> dict[str, Restorer]:
    """Restorer callables for ``methods`` from the objects themselves: the prior ``unet``, each
    method's diffusers scheduler (``schedulers``, by method name: each its own, they keep
    state), the operator A, the INN network and the codec network (the baselines' forward
    model), ``sigma_y`` (what ``sigma_y=auto`` measured) and the compute options."""
    restorers: dict[str, Restorer] = {}
    for name, method in methods.items():
        if method.name == "sing_inn" and inn is not None:
            check_measurement(method.config, inn, operator, method.prefix)
        components: dict[str, Any] = {
            "unet": unet,
            "scheduler": schedulers[name],
            "operator": operator,
            "sigma_y": sigma_y,
            "compute": compute,
        }
        if inn is not None:
            components["inn"] = inn
        if codec is not None:
            components["codec"] = codec
        restorers[name] = restorer(method, components)
    return restorers


def method_record(method: Method, operator: Any, inn: Any, sigma_y: float | None) -> dict:
    """What ran, for metrics.json: every key of the method's config (variant, update form,
    clipping, ...) plus the measurement it used and σ_y as measured for ``auto``."""
    record: dict[str, Any] = {**method.raw}
    if method.config is None:
        return record
    # the scheduler that ran (method_scheduler's kind and spacing) and the UNet evaluations per
    # image, every forward and backward (samplers/nfe.py)
    record.setdefault("scheduler", "ddim")
    record.setdefault("timestep_spacing", "leading")
    record.update(method_nfe(method))
    record.update(
        {f.name: getattr(method.config, f.name) for f in dataclasses.fields(method.config)}
    )
    own = getattr(method.config, "record", None)  # DiffPIR, DDRM: what their config says ran
    if callable(own):
        record.update(own(operator, sigma_y))
    if hasattr(method.config, "time_travel"):  # InverseJSCC runs no sampling loop
        record["time_travel"] = dataclasses.asdict(method.config.time_travel)  # JSON-ready
    if method.name == "sing_zero":
        record["measurement_operator"] = repr(operator)
        if method.config.sigma_y == SIGMA_Y_AUTO:
            record["sigma_y_measured"] = sigma_y
    if method.name == "sing_inn":
        scale = getattr(inn, "scale", None)
        record["measurement_operator"] = f"AveragePool(scale={scale})"
        record["inn_input_clip"] = "x0|t clipped to [-1, 1] before the INN"
        arch = getattr(inn, "arch", None)  # the network that ran (built from inn_checkpoint)
        record["inn_architecture"] = None if arch is None else dataclasses.asdict(arch)
    if method.name in ("dps_jscc", "inverse_jscc"):  # forward model: the DeepJSCC chain
        c = method.config
        noise = "noiseless" if c.forward_noise == "none" else f"mean of {c.noise_samples} draws"
        # the printed line's "A = ..." (printing.describe_sampler)
        record["measurement_operator"] = f"the DeepJSCC chain at the test SNR ({noise})"
    if method.name == "dps_jscc":
        record["measurement_operator"] += f"; DPS step ζ {c.zeta} ({c.zeta_schedule})"
    if method.name == "inverse_jscc":
        record["generator"] = (
            f"the prior's DDIM map from x_T (eta {c.generator_eta}, {c.generator_steps} steps); "
            "no generator trained"
        )
        # the printed line's update / η / steps: InverseJSCC's optimisation and its generator
        record["update"] = (
            f"{c.iterations} Adam iterations (lr {c.lr}, init {c.init}, {c.loss}) on x_T of "
            "G = the prior's DDIM map"
        )
        record["eta"], record["steps"] = c.generator_eta, c.generator_steps
    return record


def method_records(
    methods: dict[str, Method], operator: Any, inn: Any, sigma_y: float | None
) -> dict[str, dict]:
    """:func:`method_record` of every method, by name (metrics.json ``samplers``)."""
    return {name: method_record(m, operator, inn, sigma_y) for name, m in methods.items()}
