"""x0 corrections for SING-Zero: DDNM's range–null-space decomposition (paper: SING-Zero).

Each correction holds its operator A and measurement y (a batch: one y per image) and maps
x0|t to x̂0|t. Registered by name in :data:`CORRECTIONS` for config-driven construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from singexp.errors import ConfigError
from singexp.operators import LinearOperator
from singexp.samplers.base import Correction, StepInfo


class NullSpace(Correction):
    """Noise-free DDNM: x̂0 = A†y + (I − A†A) x0|t (paper: SING-Zero; DDNM paper eq. 9).

    The result satisfies A x̂0 = y exactly (A A† = I); the prior only fills the null space.
    """

    def __init__(self, operator: LinearOperator, y: Tensor) -> None:
        self.operator = operator
        self.y = y
        self.A_pinv_y = operator.A_pinv(y)  # A†y, fixed for the whole run

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return self.A_pinv_y + (x0 - self.operator.project(x0))

    def __repr__(self) -> str:
        return f"NullSpace({self.operator!r})"


def _per_image(value: float | Tensor, like: Tensor) -> Tensor:
    """σ_y as a tensor broadcastable to the batch: a scalar or one value per image (B,)."""
    sigma = torch.as_tensor(value, dtype=torch.float64)
    if sigma.ndim == 1:
        sigma = sigma.reshape(-1, 1, 1, 1)
    elif sigma.ndim:
        raise ValueError(
            f"sigma_y must be a number or one value per image, got {tuple(sigma.shape)}"
        )
    if (sigma < 0).any():
        raise ValueError("sigma_y must be ≥ 0")
    return sigma.to(like.device)


class NullSpacePlus(Correction):
    """DDNM+ for a noisy y, as DDNM's released ``ddnm_plus_diffusion`` (DDNM paper eq. 17-19 in
    its SVD form; paper: SING-Zero).

    With a_t = √ᾱ_t', σ_t = √(1−ᾱ_t') (the step's whole noise budget), η_t the update form's
    share of fresh noise (:class:`~singexp.samplers.base.StepInfo`) and σ_A the operator's
    singular value, y's noise has std τ/a_t = σ_y/σ_A along A's range directions. With
    τ = a_t σ_y / σ_A, in A's range:

    - σ_t > τ: λ_t = 1 and the noise term is √(σ_t² − τ²) z (y's noise fills the rest);
    - σ_t < τ: λ_t = σ_t √(1−η_t²) / τ and the noise term is σ_t η_t z;
    - σ_t = τ, or σ_y = 0: λ_t = 1 and the update form's own σ_t (η_t z + √(1−η_t²) e).

    In A's null space the noise term is always the update form's own. So
    x̂0 = x0 − λ_t A†(A x0 − y) and x_t' = a_t x̂0 + P·(range term) + (I − P)·(own term) with
    P = A†A. ``sigma_y`` is a number or one value per image, in the units of y (image units).
    With σ_y = 0 this equals :class:`NullSpace` and the update form's own step (tested).
    """

    replaces_noise = True

    def __init__(self, operator: LinearOperator, y: Tensor, sigma_y: float | Tensor) -> None:
        if operator.singular_value is None:
            raise ConfigError(
                "sampler.sigma_y",
                f"DDNM+ needs an operator with one singular value (A Aᵀ = σ² I); {operator!r} "
                "has none: set sigma_y=0",
            )
        self.operator = operator
        self.singular_value: float = operator.singular_value
        self.y = y
        self.sigma_y = _per_image(sigma_y, y)
        self._cache: tuple[int, Tensor, Tensor, Tensor] | None = None

    def _rule(self, step: StepInfo) -> tuple[Tensor, Tensor, Tensor]:
        """(λ_t, d1, d2) per image: x̂0's weight and the range part's z and e coefficients."""
        if self._cache is not None and self._cache[0] == step.index:
            return self._cache[1:]
        sigma_t = step.budget
        own_z, own_e = step.noise_coefficients
        tau = step.sqrt_alpha_bar_prev * self.sigma_y / self.singular_value
        active = self.sigma_y > 0
        above, below = active & (sigma_t > tau), active & (sigma_t < tau)
        # DDNM Lambda: λ = σ_A σ_t √(1−η²) / (a σ_y) below the threshold, else 1
        lam = torch.where(below, own_e / tau.clamp_min(1e-30), 1.0)
        # DDNM Lambda_noise: d1 = √(σ_t² − τ²) above, σ_t η otherwise; d2 = 0 above or below
        d1 = torch.where(above, (sigma_t**2 - tau**2).clamp_min(0).sqrt(), own_z)
        d2 = torch.where(above | below, 0.0, own_e)
        dtype = self.y.dtype
        rule = (lam.to(dtype), d1.to(dtype), d2.to(dtype))
        self._cache = (step.index, *rule)
        return rule

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        lam, _, _ = self._rule(step)
        return x0 - lam * self.operator.A_pinv(self.operator.A(x0) - self.y)

    def step_noise(self, step: StepInfo, z: Tensor, direction: Tensor) -> Tensor:
        _, d1, d2 = self._rule(step)
        own_z, own_e = step.noise_coefficients
        own = own_z * z + own_e * direction
        # range part replaced: P (d1 z + d2 e) instead of P (own_z z + own_e e)
        return own + self.operator.project((d1 - own_z) * z + (d2 - own_e) * direction)

    def __repr__(self) -> str:
        return f"NullSpacePlus({self.operator!r})"


#: correction name -> factory(operator, y, sigma_y); config picks components through this
CORRECTIONS: dict[str, Callable[..., Correction]] = {
    "none": lambda operator=None, y=None, sigma_y=0.0: Correction(),
    "null_space": lambda operator, y, sigma_y=0.0: NullSpace(operator, y),
    "null_space_plus": lambda operator, y, sigma_y=0.0: NullSpacePlus(operator, y, sigma_y),
}


def build_correction(name: str, **kwargs: Any) -> Correction:
    """A correction from :data:`CORRECTIONS` by name."""
    factory = CORRECTIONS.get(name)
    if factory is None:
        raise ConfigError(
            "sampler.correction", f"unknown {name!r}; choose one of {list(CORRECTIONS)}"
        )
    return factory(**kwargs)
