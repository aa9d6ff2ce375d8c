"""Each method's diffusers scheduler: the prior's noise schedule, the method's kind and
timestep spacing, no clipping inside ``step`` (the sampling loop clips where a method says).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

from singexp.errors import ConfigError

if TYPE_CHECKING:
    from singexp.models.prior import PriorConfig
    from singexp.samplers.registry import Method

SCHEDULES: dict[str, str] = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
}


SCHEDULER_KINDS: dict[str, type] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
#: the multistep kinds (deterministic, η = 0; they keep the previous steps' x̂0): their own
#: settings, and a multistep scheduler does not clip inside ``step`` (``thresholding`` off)
MULTISTEP_KINDS: dict[str, dict[str, Any]] = {
    # DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095), data prediction, Alg. 2
    "dpmsolver++": {"algorithm_type": "dpmsolver++", "solver_order": 2, "thresholding": False},
    # UniPC-2 with the B(h) = e^h − 1 variant (bh2), Zhao et al. 2023 (arXiv 2302.04867)
    "unipc": {"predict_x0": True, "solver_type": "bh2", "solver_order": 2, "thresholding": False},
}


def build_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear",
    kind: str = "ddim",
    clip_sample: bool = False,
    **kwargs: Any,
) -> DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler:
    """A diffusers scheduler with the paper's noise schedule (linear β 1e-4..0.02, T = 1000).

    ``schedule``: linear | scaled_linear | cosine; ``kind``: ddim | ddpm | dpmsolver++ | unipc
    (:data:`MULTISTEP_KINDS`: deterministic multistep solvers). The model predicts ε;
    x0 is not clipped inside ``step`` unless ``clip_sample`` (restoration never does: its loop
    clips only with ``sampler.clip_x0``); extra keyword arguments go to the scheduler (e.g.
    ``timestep_spacing``).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(
            "prior.schedule", f"unknown {schedule!r}; choose one of {list(SCHEDULES)}"
        )
    if kind not in SCHEDULER_KINDS:
        raise ConfigError(
            "sampler.scheduler", f"unknown {kind!r}; choose one of {list(SCHEDULER_KINDS)}"
        )
    options: dict[str, Any] = {
        "num_train_timesteps": int(num_train_timesteps),
        "beta_start": float(beta_start),
        "beta_end": float(beta_end),
        "beta_schedule": SCHEDULES[schedule],
        "prediction_type": "epsilon",
    }
    if kind in MULTISTEP_KINDS:
        if clip_sample:
            raise ConfigError(
                "sampler.scheduler", f"{kind} has no clip_sample; use sampler.clip_x0"
            )
        options.update(MULTISTEP_KINDS[kind])
    else:
        options["clip_sample"] = bool(clip_sample)
    options.update(kwargs)
    return SCHEDULER_KINDS[kind](**options)


def method_scheduler(prior: PriorConfig | Mapping[str, Any], method: Method) -> Any:
    """The diffusers scheduler of one method: the prior's schedule (the ``prior`` group, or its
    four schedule keys: :func:`prior_schedule`), the method's kind and spacing, no clipping
    inside ``step`` (:func:`~singexp.samplers.schedulers.build_scheduler`)."""
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
