"""What the sampling loop hands a correction: the step's schedule values, and the base class."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from singexp.errors import ConfigError

#: ``sampler.zeta_schedule``: how a guidance step ζ_t follows the schedule (:class:`Guidance`)
ZETA_SCHEDULES: tuple[str, ...] = ("constant", "sqrt_alpha_bar")


@dataclass(frozen=True)
class StepInfo:
    """One step of the respaced schedule, t → t' (t' = the scheduler's previous timestep).

    ``alpha_bar``/``alpha_bar_prev`` are ᾱ_t and ᾱ_t' as the scheduler holds them (0-dim);
    ``sqrt_*`` are precomputed the way diffusers computes them, so x0|t matches the scheduler's
    own bit for bit. Every update form writes its step as (docs/guide/methods.md)

        x_t' = √ᾱ_t' · x̂0 + σ_t · (η_t · z + √(1 − η_t²) · e),     σ_t = √(1 − ᾱ_t')

    with z fresh noise and e a direction (the model's ε_θ for ``ddnm``, the equivalent noise ε'
    for ``posterior``); ``eta`` is that form's η_t at this step (DDNM code: its η; DDIM with η:
    σ_DDIM(η)/σ_t). σ_t is the step's whole noise budget, which DDNM+ shares out (DDNM's
    ``ddnm_plus_diffusion``).
    """

    index: int
    num_steps: int
    timestep: Tensor
    alpha_bar: Tensor
    alpha_bar_prev: Tensor
    sqrt_alpha_bar: Tensor
    sqrt_one_minus_alpha_bar: Tensor
    eta: float

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1

    @property
    def sqrt_alpha_bar_prev(self) -> float:
        """√ᾱ_t': x̂0's coefficient in x_t'."""
        return math.sqrt(float(self.alpha_bar_prev))

    @property
    def budget(self) -> float:
        """σ_t = √(1 − ᾱ_t'): the noise std that x_t' must carry in all."""
        return math.sqrt(max(1.0 - float(self.alpha_bar_prev), 0.0))

    @property
    def noise_coefficients(self) -> tuple[float, float]:
        """(σ_t η_t, σ_t √(1 − η_t²)): the update form's own coefficients of z and e."""
        return self.budget * self.eta, self.budget * math.sqrt(max(1 - self.eta**2, 0.0))


class Correction:
    """x0|t → x̂0|t between the model and the update; the base class changes nothing.

    Two optional hooks, each announced by a flag so the loop can check the update form before
    sampling:

    - ``replaces_noise`` / :meth:`step_noise`: the noise term of x_t' (DDNM+ shares σ_t
      between y's noise and fresh noise); None keeps the update form's own term.
    - ``guides_x_t`` / :meth:`x_t_guidance`: a term subtracted from x_t' that needs gradients
      through the UNet with respect to x_t (DPS); the loop then keeps the UNet's graph, at the
      steps where :meth:`guides_at` says so (every step unless a subclass says otherwise: a
      step without guidance then costs no graph and no backward pass).

    A correction that needs gradients in x0 (guidance) opens ``torch.enable_grad()`` itself: the
    loop runs under no_grad. Returning ``x0`` itself (the same object) tells the loop nothing
    changed.
    """

    replaces_noise: bool = False
    guides_x_t: bool = False

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return x0

    def step_noise(self, step: StepInfo, z: Tensor, direction: Tensor) -> Tensor | None:
        """x_t' − √ᾱ_t' x̂0 for fresh noise ``z`` and the form's ``direction`` (ε_θ or ε')."""
        return None

    def guides_at(self, step: StepInfo) -> bool:
        """Whether :meth:`x_t_guidance` acts at this step (only asked when ``guides_x_t``)."""
        return self.guides_x_t

    def x_t_guidance(self, x_t: Tensor, x0: Tensor, step: StepInfo) -> Tensor:
        """The term subtracted from x_t'; ``x0`` = x0|t(x_t) with its graph to ``x_t``."""
        raise NotImplementedError

    def rows(self, rows: slice) -> Correction:
        """This correction's :meth:`x_t_guidance` for the images ``rows`` of its batch (a guided
        step in micro-batches, ``evaluate.guidance_batch``): per-image state sliced."""
        raise NotImplementedError(f"{type(self).__name__} cannot guide a micro-batch")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


GuidanceT = TypeVar("GuidanceT", bound="Guidance")


@dataclass(frozen=True)
class GuidanceSteps:
    """The steps a guidance acts at (``sampler.guidance_every``, ``sampler.guidance_last``; ours,
    not the paper's, whose Algorithm 2 guides at every step): step k of N when k is a multiple
    of ``every`` (counted from the first step) and, with ``last`` set, k ≥ N − ``last``. The
    default (1, None) is every step. A DPS-form guidance never acts at the last step anyway
    (:func:`singexp.samplers.loop.guided`)."""

    every: int = 1
    last: int | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError("sampler.guidance_every", f"must be ≥ 1, got {self.every}")
        if self.last is not None and self.last < 0:
            raise ConfigError("sampler.guidance_last", f"must be ≥ 0 or null, got {self.last}")

    def active(self, index: int, num_steps: int) -> bool:
        if self.last is not None and index < num_steps - self.last:
            return False
        return index % self.every == 0

    @property
    def all(self) -> bool:
        return self.every == 1 and self.last is None


class Guidance(Correction):
    """A guidance correction with a step ζ_t (SING-INN, DPS-JSCC).

    ``zeta``: a number or one per image (B,), held as a tensor of ``like``'s dtype and device;
    ``zeta_schedule``: ζ_t = ζ (``constant``, Chung et al.) or ζ √ᾱ_t (``sqrt_alpha_bar``);
    ``guided_steps``: the steps it acts at (:class:`GuidanceSteps`; default every step).
    """

    def __init__(
        self,
        zeta: float | Tensor,
        zeta_schedule: str,
        like: Tensor,
        guided_steps: GuidanceSteps | None = None,
    ) -> None:
        if zeta_schedule not in ZETA_SCHEDULES:
            raise ConfigError(
                "sampler.zeta_schedule",
                f"unknown {zeta_schedule!r}; choose one of {ZETA_SCHEDULES}",
            )
        zeta_t = torch.as_tensor(zeta, dtype=like.dtype, device=like.device)
        self.zeta = zeta_t.reshape(-1, 1, 1, 1) if zeta_t.ndim == 1 else zeta_t
        self.zeta_schedule = zeta_schedule
        self.guided_steps = guided_steps or GuidanceSteps()

    def guides_at(self, step: StepInfo) -> bool:
        return self.guides_x_t and self.active(step)

    def active(self, step: StepInfo) -> bool:
        """Whether this guidance acts at ``step`` (:class:`GuidanceSteps`)."""
        return self.guided_steps.active(step.index, step.num_steps)

    #: the attributes holding one value per image (sliced by :meth:`rows`)
    per_image: tuple[str, ...] = ()

    def rows(self: GuidanceT, rows: slice) -> GuidanceT:
        part = copy.copy(self)
        for name in self.per_image:
            setattr(part, name, getattr(self, name)[rows])
        if self.zeta.ndim == 4:  # one ζ per image
            part.zeta = self.zeta[rows]
        return part

    def zeta_at(self, step: StepInfo) -> Tensor:
        """ζ_t of the schedule."""
        if self.zeta_schedule == "sqrt_alpha_bar":
            return self.zeta * float(step.sqrt_alpha_bar)
        return self.zeta

    def dps_step(self, residual: Tensor, x_t: Tensor, step: StepInfo) -> Tensor:
        """ζ_t/‖r‖ ∇_{x_t} ‖r‖² per image (DPS, Chung et al. 2023, Alg. 1, ζ_i = ζ/‖r‖) for a
        residual r with its graph to ``x_t``."""
        sq = residual.pow(2).flatten(1).sum(1)  # ‖r‖² per image; their sum gives per-image ∇
        (grad,) = torch.autograd.grad(sq.sum(), x_t)
        norm = sq.detach().sqrt().clamp_min(1e-12).reshape(-1, 1, 1, 1)
        return self.zeta_at(step) * grad / norm
