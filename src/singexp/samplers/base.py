"""What the sampling loop hands a correction: the step's schedule values, and the base class."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class StepInfo:
    """One step of the respaced schedule, t → t' (t' = the scheduler's previous timestep).

    ``alpha_bar``/``alpha_bar_prev`` are ᾱ_t and ᾱ_t' as the scheduler holds them (0-dim);
    ``sqrt_*`` are precomputed the way diffusers computes them, so x0|t matches the scheduler's
    own bit for bit. ``x0_coeff`` (a_t) and ``noise_std`` (σ_t) describe the update form in use:
    x_t' = a_t·x̂0 + (terms in x_t) + σ_t·z, which DDNM+ needs (SING.md §3).
    """

    index: int
    num_steps: int
    timestep: Tensor
    alpha_bar: Tensor
    alpha_bar_prev: Tensor
    sqrt_alpha_bar: Tensor
    sqrt_one_minus_alpha_bar: Tensor
    x0_coeff: float
    noise_std: float

    @property
    def is_last(self) -> bool:
        return self.index == self.num_steps - 1


class Correction:
    """x0|t → x̂0|t between the model and the update; the base class changes nothing.

    ``noise_scale`` may return a factor (a float or a (B, 1, 1, 1) tensor) for the step's fresh
    noise σ_t·z (DDNM+); None keeps it. ``scales_noise`` says in advance whether it ever will,
    so an update form that cannot scale noise fails before sampling. A correction that needs
    gradients (guidance) opens ``torch.enable_grad()`` itself: the loop runs under no_grad.
    Returning ``x0`` itself (the same object) tells the loop nothing changed.
    """

    scales_noise: bool = False

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return x0

    def noise_scale(self, step: StepInfo) -> Tensor | float | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
