"""Linear degradation operators A for SING-Zero (SING.md §3), as objects in DDNM/DDRM's style.

An operator maps images (B, C, H, W) to measurements ``A(x)`` and back with its pseudo-inverse
``A_pinv`` (A† with A A† = I for every operator here, so A A† A = A and A† A A† = A†) and, where
it is defined, its adjoint ``A_adjoint`` (Aᵀ). ``A_pinv(A(x))`` is the projection onto A's
range; ``x - A_pinv(A(x))`` is the null-space part that the diffusion prior fills in.

The operators are deterministic; an operator with randomness (a blur kernel) must draw it once,
seeded, at construction. Blur + downsampling would need an SVD (DDRM) and is not here yet.

SING-Zero's downsampling factor from the BCR (SING.md §3 leaves it open) —
:func:`scale_for_bcr`: the largest s dividing the image size such that the measurement A x
keeps at least as many real values as the channel carries, 3·H·W/s² ≥ 2k = 2ρ·3·H·W, i.e.
s ≤ √(1/(2ρ)); ρ = 1/192 → 8, 1/384 → 8, 1/768 → 16 (256 px or 32 px images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from singexp.bcr import parse_ratio
from singexp.errors import ConfigError

Shape = tuple[int, ...]


class LinearOperator:
    """A linear map A on images (B, C, H, W) with its pseudo-inverse A† and adjoint Aᵀ."""

    name: str = "linear"
    #: the one non-zero singular value σ of A when A Aᵀ = σ² I (every operator here), else None;
    #: DDNM+ scales y's noise by 1/σ in A's range (DDNM's ``ddnm_plus_diffusion``)
    singular_value: float | None = None

    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no adjoint")

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        """Shape of ``A(x)`` for ``x`` of shape ``in_shape`` (…, C, H, W)."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """A†A x, the range-space part of ``x``."""
        return self.A_pinv(self.A(x))

    def __call__(self, x: Tensor) -> Tensor:
        return self.A(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(LinearOperator):
    """A = I (no degradation): SING-Zero then returns the measurement itself."""

    name = "identity"
    singular_value = 1.0

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_pinv(self, y: Tensor) -> Tensor:
        return y

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        return tuple(in_shape)


class AveragePool(LinearOperator):
    """A = s×s average pooling; A† = nearest (replication) upsampling; Aᵀ = A†/s².

    A has orthogonal rows of norm 1/s, so A Aᵀ = I/s² and A† = Aᵀ(A Aᵀ)⁻¹ = s²Aᵀ: replication.
    """

    name = "avgpool"

    def __init__(self, scale: int) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        self.singular_value = 1.0 / self.scale  # A Aᵀ = I/s²

    def A(self, x: Tensor) -> Tensor:
        s = self.scale
        return x if s == 1 else F.avg_pool2d(x, s)

    def A_pinv(self, y: Tensor) -> Tensor:
        s = self.scale
        if s == 1:
            return y
        *lead, h, w = y.shape
        # replicate each value into an s×s block (a view + one copy; exact, unlike bilinear)
        up = y.reshape(*lead, h, 1, w, 1).expand(*lead, h, s, w, s)
        return up.reshape(*lead, h * s, w * s)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A_pinv(y) / self.scale**2

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, h, w = in_shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"{h}x{w} is not divisible by the pooling scale {self.scale}")
        return (*lead, h // self.scale, w // self.scale)

    def __repr__(self) -> str:
        return f"AveragePool(scale={self.scale})"


class ColorToGray(LinearOperator):
    """A = channel mean (C → 1 channel); A† = replication to C channels; Aᵀ = A†/C."""

    name = "gray"

    def __init__(self, channels: int = 3) -> None:
        self.channels = int(channels)
        self.singular_value = 1.0 / math.sqrt(self.channels)  # A Aᵀ = I/C

    def A(self, x: Tensor) -> Tensor:
        return x.mean(dim=-3, keepdim=True)

    def A_pinv(self, y: Tensor) -> Tensor:
        *lead, _, h, w = y.shape
        return y.expand(*lead, self.channels, h, w)

    def A_adjoint(self, y: Tensor) -> Tensor:
        return self.A_pinv(y) / self.channels

    def out_shape(self, in_shape: Sequence[int]) -> Shape:
        *lead, _, h, w = in_shape
        return (*lead, 1, h, w)

    def __repr__(self) -> str:
        return f"ColorToGray(channels={self.channels})"


# ---- SING-Zero's scale rule and construction from config ----------------------------------
def scale_for_bcr(ratio: Any, image_size: int) -> int:
    """The largest s dividing ``image_size`` with 3HW/s² ≥ 2k = 2ρ·3HW, i.e. s ≤ √(1/(2ρ)).

    The measurement A x then keeps at least as many real values as the channel carries
    (module docstring): ρ = 1/192 → 8, 1/384 → 8, 1/768 → 16.
    """
    rho = ratio if isinstance(ratio, Fraction) else parse_ratio(ratio)
    bound = max(1, math.isqrt(int(1 / (2 * rho))))  # exact: s² ≤ ⌊1/(2ρ)⌋ for integer s
    return max(s for s in range(1, min(bound, int(image_size)) + 1) if image_size % s == 0)


def _scale(value: Any, ratio: Any, image_size: int) -> int:
    if value is None or str(value).strip().lower() == "auto":
        return scale_for_bcr(ratio, image_size)
    try:
        scale = int(str(value).strip())
    except ValueError:
        scale = 0
    if isinstance(value, bool) or scale < 1:
        raise ConfigError("operator.scale", f"{value!r} is not a positive integer or 'auto'")
    if image_size % scale:
        raise ConfigError(
            "operator.scale",
            f"{scale} does not divide the image size {image_size}; use a divisor "
            f"(e.g. {scale_for_bcr(ratio, image_size)}) or 'auto'",
        )
    return scale


#: operator name -> factory(scale value, ratio, image size); add new operators here
OPERATORS: dict[str, Callable[[Any, Any, int], LinearOperator]] = {
    "avgpool": lambda scale, ratio, size: AveragePool(_scale(scale, ratio, size)),
    "identity": lambda scale, ratio, size: Identity(),
    "gray": lambda scale, ratio, size: ColorToGray(),
}


def build_operator(
    name: str, scale: Any = "auto", ratio: Any = "1/192", image_size: int = 32
) -> LinearOperator:
    """The operator of the ``operator`` config group (``conf/operator/*.yaml``).

    ``scale``: an int or ``auto`` (:func:`scale_for_bcr` from ``ratio`` and ``image_size``);
    only average pooling uses it. Errors name ``operator.name`` / ``operator.scale``.
    """
    factory = OPERATORS.get(str(name))
    if factory is None:
        raise ConfigError("operator.name", f"unknown {name!r}; choose one of {list(OPERATORS)}")
    return factory(scale, ratio, int(image_size))


def measurement_noise_std(operator: LinearOperator, x: Tensor, x_hat: Tensor) -> float:
    """σ_y of y = A x̂ taken as a noisy measurement of A x: the RMS of A x̂ − A x over every
    value (DDNM+'s effective noise std, SING.md §3; ``sampler.sigma_y=auto`` measures it on
    held-out images sent through the codec at the test SNR)."""
    return float((operator.A(x_hat) - operator.A(x)).double().pow(2).mean().sqrt())
