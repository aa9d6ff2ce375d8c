"""x0 corrections for SING-Zero: DDNM's range–null-space decomposition (SING.md §3).

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
    """Noise-free DDNM: x̂0 = A†y + (I − A†A) x0|t (SING.md §3; DDNM paper eq. 9).

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
    """DDNM+ for a noisy y: x̂0 = x0|t − λ_t A†(A x0|t − y) (SING.md §3; DDNM paper eq. 17).

    λ_t = 1 if σ_t ≥ a_t σ_y else σ_t / (a_t σ_y), where a_t is x̂0's coefficient in the update
    and σ_t its fresh-noise std (DDNM paper eq. 19); the step's noise variance is reduced to
    Φ_t = σ_t² − (a_t λ_t σ_y)², so the noise a_t λ_t A†n carried in from y makes up the rest:
    :meth:`noise_scale` returns √Φ_t / σ_t. ``sigma_y`` is a number or one value per image.

    This is DDNM's simplified (scalar) rule: σ_y is the per-pixel std of A†n. For average
    pooling A†n is constant on s×s blocks and lives in A's range only, so the exact SVD rule
    would use s·σ_y in the range and keep full noise in the null space; not done here.
    With σ_y = 0 this equals :class:`NullSpace` (λ_t = 1, full noise).
    """

    def __init__(self, operator: LinearOperator, y: Tensor, sigma_y: float | Tensor) -> None:
        self.operator = operator
        self.y = y
        self.sigma_y = _per_image(sigma_y, y)
        self.scales_noise = bool((self.sigma_y > 0).any())
        self._cache: tuple[int, Tensor, Tensor] | None = None

    def _lambda_and_scale(self, step: StepInfo) -> tuple[Tensor, Tensor]:
        if self._cache is not None and self._cache[0] == step.index:
            return self._cache[1], self._cache[2]
        sigma_t, a_t = step.noise_std, abs(step.x0_coeff)
        carried = a_t * self.sigma_y  # std of the y-noise a_t·A†n in x_t' (per pixel)
        # DDNM paper eq. 19: λ_t = 1 if σ_t ≥ a_t σ_y else σ_t / (a_t σ_y)
        full = sigma_t >= carried
        lam = torch.where(full, 1.0, sigma_t / carried.clamp_min(1e-30))
        # Φ_t = σ_t² − (a_t λ_t σ_y)²: σ_t² − (a_t σ_y)² when λ_t = 1, else exactly 0
        phi = torch.where(full, sigma_t**2 - carried**2, 0.0)
        scale = phi.sqrt() / sigma_t if sigma_t > 0 else torch.ones_like(lam)
        lam, scale = lam.to(self.y.dtype), scale.to(self.y.dtype)
        self._cache = (step.index, lam, scale)
        return lam, scale

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        lam, _ = self._lambda_and_scale(step)
        return x0 - lam * self.operator.A_pinv(self.operator.A(x0) - self.y)

    def noise_scale(self, step: StepInfo) -> Tensor | None:
        return self._lambda_and_scale(step)[1] if self.scales_noise else None

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
