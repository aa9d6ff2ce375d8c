"""Generalised divisive normalisation (Ballé et al., ICLR 2016), the DeepJSCC non-linearity.

GDN:  y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²);  inverse GDN (IGDN) multiplies instead.
β and γ are kept non-negative by the usual reparametrisation p = max(q, bound)² − pedestal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PEDESTAL = 2.0**-18


class _NonNegative(nn.Module):
    def __init__(self, init: Tensor, minimum: float = 0.0) -> None:
        super().__init__()
        self.bound = (minimum + _PEDESTAL) ** 0.5
        self.raw = nn.Parameter(torch.sqrt(init + _PEDESTAL))

    def forward(self) -> Tensor:
        return self.raw.clamp_min(self.bound) ** 2 - _PEDESTAL


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
