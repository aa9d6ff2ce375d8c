"""DeepJSCC encoder and decoder (Bourtsoulatze et al. 2019), with optional SNR-adaptive
attention feature modules (ADJSCC, Xu et al. 2021) so one model serves a range of SNRs.

Encoder: log2(f) stages of [5×5 conv, stride 2 → GDN → PReLU (→ SNR attention)], then a 3×3
conv to ``latent_channels``. Decoder mirrors it with transposed convolutions and IGDN and ends
in tanh (images live in [−1, 1]). The SNR enters the networks only through :class:`SNRAttention`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from singexp.channel import Channel, power_normalize, to_complex, to_real
from singexp.nn.gdn import GDN


class SNRAttention(nn.Module):
    """ADJSCC attention feature module: channel-wise gains from pooled features and the SNR."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(channels // 4, 8)
        self.mlp = nn.Sequential(
            nn.Linear(channels + 1, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor, snr_db: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        gain = self.mlp(torch.cat([pooled, snr_db.reshape(-1, 1).to(x.dtype)], dim=1))
        return x * gain[:, :, None, None]


class _Stage(nn.Module):
    def __init__(
        self, conv: nn.Module, channels: int, inverse_gdn: bool, snr_adaptive: bool
    ) -> None:
        super().__init__()
        self.conv = conv
        self.gdn = GDN(channels, inverse=inverse_gdn)
        self.act = nn.PReLU(channels)
        self.attention = SNRAttention(channels) if snr_adaptive else None

    def forward(self, x: Tensor, snr_db: Tensor) -> Tensor:
        x = self.act(self.gdn(self.conv(x)))
        return self.attention(x, snr_db) if self.attention is not None else x


def _num_stages(downsample: int) -> int:
    stages = round(math.log2(downsample))
    if 2**stages != downsample or stages < 1:
        raise ValueError(f"downsampling factor must be a power of two ≥ 2, got {downsample}")
    return stages


class JSCCEncoder(nn.Module):
    """Image (B, 3, H, W) in [−1, 1] → latent (B, c, H/f, W/f)."""

    def __init__(
        self, latent_channels: int, downsample: int = 16, width: int = 64, snr_adaptive: bool = True
    ) -> None:
        super().__init__()
        stages, chans = _num_stages(downsample), 3
        self.stages = nn.ModuleList()
        for _ in range(stages):
            self.stages.append(
                _Stage(nn.Conv2d(chans, width, 5, stride=2, padding=2), width, False, snr_adaptive)
            )
            chans = width
        self.head = nn.Conv2d(width, latent_channels, 3, padding=1)

    def forward(self, x: Tensor, snr_db: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x, snr_db)
        return self.head(x)


class JSCCDecoder(nn.Module):
    """Received latent (B, c, H/f, W/f) → image (B, 3, H, W) in [−1, 1]."""

    def __init__(
        self, latent_channels: int, downsample: int = 16, width: int = 64, snr_adaptive: bool = True
    ) -> None:
        super().__init__()
        stages = _num_stages(downsample)
        self.stem = _Stage(
            nn.Conv2d(latent_channels, width, 3, padding=1), width, True, snr_adaptive
        )
        self.stages = nn.ModuleList(
            _Stage(
                nn.ConvTranspose2d(width, width, 5, stride=2, padding=2, output_padding=1),
                width,
                True,
                snr_adaptive,
            )
            for _ in range(stages)
        )
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: Tensor, snr_db: Tensor) -> Tensor:
        x = self.stem(z, snr_db)
        for stage in self.stages:
            x = stage(x, snr_db)
        return torch.tanh(self.head(x))


class DeepJSCC(nn.Module):
    """The whole chain x → E → power normalisation → channel → D → x̂ (paper: system model).

    ``snr_db`` is a (B,) tensor: the channel noise level and the SNR seen by the attention modules.
    A ``generator`` makes the channel noise reproducible (the same noise for every method compared).
    """

    def __init__(
        self,
        latent_channels: int,
        channel: Channel,
        downsample: int = 16,
        width: int = 64,
        snr_adaptive: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = JSCCEncoder(latent_channels, downsample, width, snr_adaptive)
        self.decoder = JSCCDecoder(latent_channels, downsample, width, snr_adaptive)
        self.channel = channel

    def encode(self, x: Tensor, snr_db: Tensor) -> Tensor:
        """Unit-average-power complex symbols (B, k) for images x."""
        return power_normalize(to_complex(self.encoder(x, snr_db)))

    def forward(
        self, x: Tensor, snr_db: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        z = self.encoder(x, snr_db)
        received = self.channel(power_normalize(to_complex(z)), snr_db, generator)
        return self.decoder(to_real(received, z.shape).to(z.dtype), snr_db)
