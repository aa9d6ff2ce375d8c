"""The restorers of a run: each method's scheduler, its callable with the networks it shares,
and the record of what ran (metrics.json ``samplers``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from singexp.config import RunConfig
from singexp.modules.inn import load_inn
from singexp.modules.restoration import Restorer
from singexp.operators import LinearOperator
from singexp.prior import PriorConfig, build_scheduler, load_prior, resolve_source
from singexp.reuse import file_identity, folder_identity, reused
from singexp.samplers.nfe import method_nfe
from singexp.samplers.registry import Method, restore
from singexp.samplers.sing_inn import check_measurement
from singexp.samplers.sing_zero import SIGMA_Y_AUTO


def prior_identity(source: str) -> tuple[Any, ...]:
    """What a prior is loaded from, as a :mod:`singexp.reuse` key: a local folder's files, or
    a Hugging Face cache's repo id (whose snapshots do not change)."""
    label, folder = resolve_source(source)
    if folder is not None:
        return (label, folder_identity(folder))
    return (label, os.environ.get("HF_HUB_CACHE"), os.environ.get("HF_HOME"))


def method_scheduler(prior: PriorConfig | Mapping[str, Any], method: Method) -> Any:
    """The diffusers scheduler of one method: the prior's schedule (the ``prior`` group, or its
    four schedule keys: :func:`prior_schedule`), the method's kind and spacing, no clipping
    inside ``step`` (:func:`~singexp.prior.build_scheduler`)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "schedule")
    schedule = (
        {k: prior[k] for k in keys}
        if isinstance(prior, Mapping)
        else {k: getattr(prior, k) for k in keys}
    )
    return build_scheduler(
        **schedule,
        kind=method.raw.get("scheduler", "ddim"),
        timestep_spacing=method.raw.get("timestep_spacing", "leading"),
    )


def prior_schedule(scheduler: Any) -> dict[str, Any]:
    """The ``prior`` group's schedule keys (``num_train_timesteps``, ``beta_start``,
    ``beta_end``, ``schedule``) of a diffusers scheduler."""
    from singexp.prior import SCHEDULES

    config = scheduler.config
    names = {diffusers: ours for ours, diffusers in SCHEDULES.items()}
    return {
        "num_train_timesteps": int(config.num_train_timesteps),
        "beta_start": float(config.beta_start),
        "beta_end": float(config.beta_end),
        "schedule": names.get(str(config.beta_schedule), str(config.beta_schedule)),
    }


def scheduler_for(scheduler: Any, method: Method) -> Any:
    """A fresh scheduler for ``method`` from a given diffusers ``scheduler``: its noise schedule,
    the method's kind (``scheduler``: ddim | ddpm) and ``timestep_spacing``, no clipping in
    ``step``. A scheduler of the method's kind is copied with its whole config
    (``from_config``); another kind keeps only the schedule (:func:`method_scheduler`)."""
    from singexp.prior import MULTISTEP_KINDS, SCHEDULER_KINDS

    name = str(method.raw.get("scheduler", "ddim"))
    kind: Any = SCHEDULER_KINDS.get(name)
    if kind is not None and type(scheduler) is kind:
        no_clip = MULTISTEP_KINDS.get(name, {"clip_sample": False})
        return kind.from_config(
            scheduler.config,
            timestep_spacing=method.raw.get("timestep_spacing", "leading"),
            **{k: v for k, v in no_clip.items() if k in ("clip_sample", "thresholding")},
        )
    return method_scheduler(prior_schedule(scheduler), method)


def needs_sigma_y(methods: dict[str, Method]) -> bool:
    """Whether a method measures its σ_y (``sigma_y=auto``)."""
    return any(getattr(m.config, "sigma_y", None) == SIGMA_Y_AUTO for m in methods.values())


def build_restorers(
    run: RunConfig,
    operator: LinearOperator,
    inn_path: Path | None,
    prior_source: str | None,
    sigma_y: float | None = None,
    codec: Any = None,
) -> tuple[dict[str, Restorer], dict[str, torch.nn.Module]]:
    """Restorer callables for ``run.methods`` and the networks they share (moved by Lightning).

    The prior (``prior_source``, resolved: :func:`singexp.artifacts.resolve_prior_source`) is
    loaded when a method is configured; the INN when ``inn_path`` is given; the codec (a
    :class:`~singexp.modules.jscc.DeepJSCCModule`, the one the run loaded) for the baselines
    that run the DeepJSCC chain (``dps_jscc``, ``inverse_jscc``). ``sigma_y``: what
    ``sigma_y=auto`` means.
    """
    methods = run.methods
    if not methods:
        return {}, {}
    if prior_source is None:
        raise ValueError("build_restorers: prior_source is needed when methods are configured")
    compute = run.compute
    size = run.latent.image_size
    prior = run.prior
    if prior is None:
        raise ValueError("build_restorers: the run has no prior group")
    # loaded once per process, shared by the points of a sweep (singexp.reuse)
    networks: dict[str, torch.nn.Module] = {
        "prior": reused(
            (
                "prior",
                prior_identity(prior_source),
                size,
                compute.gradient_checkpointing,
                compute.compile,
            ),
            lambda: compute.prepare_prior(load_prior(prior_source, expected_size=size)),
        )
    }
    if inn_path is not None:
        networks["inn"] = reused(
            ("inn", file_identity(inn_path)),
            lambda: load_inn(inn_path).inn.eval().requires_grad_(False),
        )
    if any(m.name in ("dps_jscc", "inverse_jscc") for m in methods.values()):
        # the baselines' forward model: the DeepJSCC the images went through (frozen; the SNR
        # each restorer is called with is the test SNR)
        if codec is None:
            raise ValueError("build_restorers: dps_jscc / inverse_jscc need the run's codec")
        networks["codec"] = codec.codec.eval().requires_grad_(False)
    restorers = restorers_from_parts(
        methods,
        unet=networks["prior"],
        schedulers={name: method_scheduler(prior, m) for name, m in methods.items()},
        operator=operator,
        inn=networks.get("inn"),
        codec=networks.get("codec"),
        sigma_y=sigma_y,
        compute=compute,
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
        restorers[name] = partial(_restore, method, components)
    return restorers


def _restore(
    method: Method,
    components: dict[str, Any],
    x_hat: torch.Tensor,
    snr_db: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    return restore(method, x_hat, generator=generator, snr_db=snr_db, **components)


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
