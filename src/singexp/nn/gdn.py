"""Generalised divisive normalisation (Ballé et al., ICLR 2016), the DeepJSCC non-linearity.

GDN:  y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²);  inverse GDN (IGDN) multiplies instead.
β and γ are kept non-negative by the usual reparametrisation p = max(q, bound)² − pedestal, where
max is :func:`lower_bound`: its gradient passes where q ≥ bound or where it pushes q back up
(compressai's ``LowerBound``), so a q stuck below the bound can still recover; a plain
``clamp_min`` would zero that gradient for good.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PEDESTAL = 2.0**-18


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x ≥ bound or the gradient is negative."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        # a negative gradient makes gradient descent raise x, towards and above the bound
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes, None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    """``max(x, bound)``; the gradient passes where ``x >= bound`` or where it is negative (a
    descent step raises ``x``), and is zero only where it would push ``x`` further below."""
    out: Tensor = _LowerBound.apply(x, bound)
    return out


class _NonNegative(nn.Module):
    def __init__(self, init: Tensor, minimum: float = 0.0) -> None:
        super().__init__()
        self.bound = (minimum + _PEDESTAL) ** 0.5
        self.raw = nn.Parameter(torch.sqrt(init + _PEDESTAL))

    def forward(self) -> Tensor:
        return lower_bound(self.raw, self.bound) ** 2 - _PEDESTAL


class GDN(nn.Module):
    """GDN over the channel dimension of (B, C, H, W) features; ``inverse=True`` gives IGDN."""

    def __init__(
        self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1
    ) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = _NonNegative(torch.ones(channels), minimum=beta_min)
        self.gamma = _NonNegative(gamma_init * torch.eye(channels))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        norm = F.conv2d(x * x, self.gamma().reshape(c, c, 1, 1), self.beta())
        norm = torch.sqrt(norm)
        return x * norm if self.inverse else x / norm
