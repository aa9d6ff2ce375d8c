"""The noisy channel: power normalisation, AWGN and Rayleigh block fading.

This module is the only place where channel noise is added; the SNR enters here.
Conventions (paper: system model): the encoder emits 2k reals per image, read as k complex symbols,
scaled to unit average power per image, z̃ = √k · z / ‖z‖; noise w ~ CN(0, σ²) with
σ² = 10^(−SNR/10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from singexp.errors import ConfigError


def to_complex(z: Tensor) -> Tensor:
    """Pack a real tensor (B, ...) with an even number of values per image into (B, k) complex."""
    flat = z.reshape(z.shape[0], -1)
    if flat.shape[1] % 2:
        raise ValueError(
            f"need an even number of reals per image to form symbols, got {flat.shape[1]}"
        )
    return torch.complex(flat[:, 0::2].float(), flat[:, 1::2].float())


def to_real(s: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`to_complex`: (B, k) complex -> real tensor of ``shape``."""
    flat = torch.stack((s.real, s.imag), dim=-1).reshape(s.shape[0], -1)
    return flat.reshape(shape)


def power_normalize(s: Tensor) -> Tensor:
    """Scale complex symbols (B, k) to unit average power per image: √k · s / ‖s‖ (paper: system
    model)."""
    k = s.shape[1]
    norm = torch.linalg.vector_norm(s, dim=1, keepdim=True).clamp_min(1e-12)
    return math.sqrt(k) * s / norm


def noise_std(snr_db: Tensor) -> Tensor:
    """Per-component standard deviation of CN(0, σ²) noise, σ² = 10^(−SNR/10).

    Each of the real and imaginary parts carries σ²/2.
    """
    return torch.sqrt(10.0 ** (-snr_db / 10.0) / 2.0)


def complex_gaussian(
    shape: tuple[int, ...], std: Tensor, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Samples of CN(0, 2·std²) with per-row ``std`` of shape (B,)."""
    re = torch.randn(shape, generator=generator, device=device)
    im = torch.randn(shape, generator=generator, device=device)
    return torch.complex(re, im) * std.reshape(-1, *([1] * (len(shape) - 1)))


class Channel(nn.Module):
    """A channel acting on unit-power complex symbols (B, k) at a per-image SNR (B,) in dB."""

    def forward(
        self, s: Tensor, snr_db: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        raise NotImplementedError


class AWGNChannel(Channel):
    """ŷ = z̃ + w, w ~ CN(0, 10^(−SNR/10)) (paper: system model)."""

    def forward(
        self, s: Tensor, snr_db: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        std = noise_std(snr_db.to(s.device, torch.float32))
        return s + complex_gaussian(tuple(s.shape), std, generator, s.device)


class RayleighChannel(Channel):
    """Block fading ŷ = h z̃ + w with h ~ CN(0, 1) per image, equalised with perfect CSI: ŷ / h.

    The receiver knows h exactly (zero-forcing equalisation), so the output is z̃ + w / h.
    """

    def forward(
        self, s: Tensor, snr_db: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        std = noise_std(snr_db.to(s.device, torch.float32))
        b = s.shape[0]
        h = complex_gaussian(
            (b, 1), torch.full((b,), math.sqrt(0.5), device=s.device), generator, s.device
        )
        w = complex_gaussian(tuple(s.shape), std, generator, s.device)
        return self.equalize(h * s + w, h)

    @staticmethod
    def equalize(y: Tensor, h: Tensor) -> Tensor:
        """Zero-forcing equalisation with known CSI."""
        return y / h


CHANNELS: dict[str, type[Channel]] = {"awgn": AWGNChannel, "rayleigh": RayleighChannel}


def build_channel(name: str) -> Channel:
    """The channel registered under ``name`` (config key ``channel.name``)."""
    try:
        return CHANNELS[name]()
    except KeyError:
        raise ConfigError(
            "channel.name", f"unknown channel {name!r}; choose one of {sorted(CHANNELS)}"
        ) from None


@dataclass(frozen=True)
class SNRSampler:
    """The SNR per image: fixed (``low == high``) or uniform in [low, high] dB per image."""

    low: float
    high: float

    def sample(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        if self.low == self.high:
            return torch.full((batch,), float(self.low), device=device)
        u = torch.rand(batch, generator=generator, device=device)
        return self.low + (self.high - self.low) * u
