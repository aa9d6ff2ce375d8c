"""SNR-conditioned invertible network f(x; snr) → (c, d) for SING-INN (paper: SING-INN).

After INDigo / INDIGO+ (You, Floros, Dragotti): an invertible split of the image into a coarse
part c, trained to match the DeepJSCC output's coarse part, and a detail part d (what the
channel destroyed), with x = f⁻¹(c, d; snr) exact by construction.

Architecture (the paper leaves the details open; this is our choice):

- ``levels = log2(scale)`` orthonormal Haar steps (:func:`haar_down`). Each step transforms
  *every* channel (a wavelet packet), so after level l the tensor is (B, 3·4^l, H/2^l, W/2^l)
  and its first 3 channels are the low-pass LL…L = 2^l · avgpool_{2^l}(x).
- After each Haar step, affine coupling blocks act on the whole stack of wavelet channels
  (c and d mixed). They come in pairs: a :class:`PNet` coupling that updates the first half of
  the channels (which holds the low-pass) from the second half, then a :class:`UNet` coupling
  that updates the second half from the first. ``pairs`` pairs in all, spread over the levels
  (the coarsest level gets the remainder: 4 pairs over 2 levels → 2 + 2; 1 pair → 0 + 1).
- After the last block, c = the first 3 channels / s (so c is in image units: with identity
  couplings c = A x, A = s×s average pooling, SING-Zero's operator) and d = the other
  3·4^L − 3 channels. The 1/s scaling is a fixed, exactly invertible factor (a power of two).
- SNR conditioning: one :class:`SNREmbedding` (Fourier features of snr_db/10 → MLP) per
  forward pass; every :class:`CondBlock` (J per sub-network) modulates its features with it
  (FiLM: h·(1 + γ(e)) + β(e)).
- Couplings: z_a ← z_a · exp(s) + t with (s_raw, t) = net(z_b, e) and the soft clamp
  s = clamp · tanh(s_raw / clamp); the inverse z_a = (z_a − t) · exp(−s) is analytic.
  The last convolution of every sub-network is zero-initialised, so a fresh INN is the pure
  Haar split (c = A x exactly up to rounding).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from singexp.operators import AveragePool


# ---- the architecture ----------------------------------------------------------------------
@dataclass(frozen=True)
class INNArchitecture:
    """The network's hyper-parameters and their defaults, in one place: :class:`ConditionalINN`
    is built from them, the ``inn`` config group (``singexp.models.inn.INNConfig``) extends
    them and an INN checkpoint records them."""

    #: coarse-part downsampling s, a power of two ≥ 2 (log2(s) Haar levels)
    scale: int = 4
    #: PNet/UNet affine-coupling pairs in all, spread over the Haar levels
    pairs: int = 4
    #: SNR-conditioned CondBlocks per sub-network (J)
    cond_blocks: int = 2
    #: hidden width of the sub-networks
    width: int = 32
    #: size of the SNR embedding
    emb_dim: int = 64
    #: soft clamp of the coupling log-scales
    clamp: float = 2.0

    @classmethod
    def of(cls, source: Any = None, **keys: Any) -> INNArchitecture:
        """The architecture keys of ``source`` (an INNArchitecture, a config extending it, or
        None for the defaults) with ``keys`` replacing some; an unknown key is a TypeError."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise TypeError(f"unknown INN architecture keys {unknown}; known: {names}")
        base = cls() if source is None else source
        return cls(**{name: keys.get(name, getattr(base, name)) for name in names})

    @property
    def levels(self) -> int:
        """log2(scale) Haar levels (0 when ``scale`` is not a power of two)."""
        levels = round(math.log2(self.scale)) if self.scale >= 1 else 0
        return levels if 2**levels == self.scale else 0

    def problems(self) -> list[tuple[str, str]]:
        """(key, why) for every key out of range; empty when the network can be built."""
        found = []
        if isinstance(self.scale, bool) or self.scale < 2 or self.levels == 0:
            found.append(("scale", f"must be a power of two ≥ 2, got {self.scale!r}"))
        if self.pairs < 0:
            found.append(("pairs", f"must be ≥ 0, got {self.pairs}"))
        for key in ("cond_blocks", "width", "emb_dim"):
            if getattr(self, key) < 1:
                found.append((key, f"must be ≥ 1, got {getattr(self, key)}"))
        if not self.clamp > 0:
            found.append(("clamp", f"must be > 0, got {self.clamp}"))
        return found


# ---- orthonormal Haar wavelet (invertible downsampling) ------------------------------------
def haar_down(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, 4C, H/2, W/2) = [LL, LH, HL, HH] (each C channels), orthonormal.

    LL = (a + b + c + d)/2 = 2 · (2×2 average): the low-pass of every input channel comes first.
    """
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    lh = (a - b + c - d) * 0.5
    hl = (a + b - c - d) * 0.5
    hh = (a - b - c + d) * 0.5
    return torch.cat([ll, lh, hl, hh], dim=1)


def haar_up(y: Tensor) -> Tensor:
    """Inverse of :func:`haar_down`: (B, 4C, h, w) → (B, C, 2h, 2w)."""
    ll, lh, hl, hh = y.chunk(4, dim=1)
    a = (ll + lh + hl + hh) * 0.5
    b = (ll - lh + hl - hh) * 0.5
    c = (ll + lh - hl - hh) * 0.5
    d = (ll - lh - hl + hh) * 0.5
    bsz, ch, h, w = a.shape
    # (B, C, row, col, h, w) → (B, C, h, row, w, col) → (B, C, 2h, 2w)
    x = torch.stack([a, b, c, d], dim=2).reshape(bsz, ch, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(bsz, ch, 2 * h, 2 * w)


# ---- SNR conditioning ----------------------------------------------------------------------
class SNREmbedding(nn.Module):
    """snr_db (B,) → (B, dim): Fourier features of snr_db / ``snr_scale`` and an MLP."""

    freqs: Tensor  # a buffer

    def __init__(self, dim: int = 64, frequencies: int = 6, snr_scale: float = 10.0) -> None:
        super().__init__()
        self.snr_scale = float(snr_scale)
        self.register_buffer(
            "freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32)
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * frequencies + 1, dim), nn.SiLU(), nn.Linear(dim, dim)
        )

    def forward(self, snr_db: Tensor) -> Tensor:
        u = (snr_db.to(self.freqs.dtype) / self.snr_scale).reshape(-1, 1)
        angles = u * self.freqs
        return self.mlp(torch.cat([u, angles.sin(), angles.cos()], dim=1))


class CondBlock(nn.Module):
    """Residual conv block whose features are FiLM-modulated by the SNR embedding."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        gamma, beta = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        y = self.act(self.conv1(h))
        y = y * (1 + gamma) + beta
        return h + self.conv2(self.act(y))


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class PNet(nn.Module):
    """Plain sub-network: conv → J CondBlocks → conv (zero-initialised)."""

    def __init__(self, cin: int, cout: int, width: int, cond_blocks: int, emb_dim: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(cin, width, 3, padding=1)
        self.blocks = nn.ModuleList(CondBlock(width, emb_dim) for _ in range(cond_blocks))
        self.out = _zero_conv(width, cout)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.act(h))


class UNet(nn.Module):
    """Small encoder–decoder sub-network with one skip: a CondBlock at full resolution, a
    stride-2 conv, J − 1 CondBlocks at half resolution (2× width), upsampling, the skip
    concatenated, a fusing conv and a zero-initialised output conv."""

    def __init__(self, cin: int, cout: int, width: int, cond_blocks: int, emb_dim: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(cin, width, 3, padding=1)
        self.enc = CondBlock(width, emb_dim)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.ModuleList(CondBlock(2 * width, emb_dim) for _ in range(cond_blocks - 1))
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.fuse = nn.Conv2d(2 * width, width, 3, padding=1)
        self.out = _zero_conv(width, cout)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        skip = self.enc(self.inp(x), emb)
        h = self.act(self.down(skip))
        for block in self.mid:
            h = block(h, emb)
        h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
        h = self.act(self.up(h))
        h = self.act(self.fuse(torch.cat([h, skip], dim=1)))
        return self.out(h)


SUBNETS: dict[str, type[nn.Module]] = {"pnet": PNet, "unet": UNet}


class AffineCoupling(nn.Module):
    """Updates one half of the channels by an affine map computed from the other half.

    ``update_first``: the first ⌊C/2⌋ channels (holding the low-pass) are updated from the rest;
    else the rest is updated from the first ⌊C/2⌋.
    """

    def __init__(
        self,
        channels: int,
        update_first: bool,
        subnet: str,
        width: int,
        cond_blocks: int,
        emb_dim: int,
        clamp: float,
    ) -> None:
        super().__init__()
        self.split = channels // 2
        self.update_first = update_first
        n_target = self.split if update_first else channels - self.split
        n_cond = channels - n_target
        self.net = SUBNETS[subnet](n_cond, 2 * n_target, width, cond_blocks, emb_dim)
        self.clamp = float(clamp)

    def _parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        first, rest = z[:, : self.split], z[:, self.split :]
        return (first, rest) if self.update_first else (rest, first)

    def _join(self, target: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([target, cond] if self.update_first else [cond, target], dim=1)

    def _scale_shift(self, cond: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        s_raw, t = self.net(cond, emb).chunk(2, dim=1)
        return self.clamp * torch.tanh(s_raw / self.clamp), t

    def forward(self, z: Tensor, emb: Tensor) -> Tensor:
        target, cond = self._parts(z)
        s, t = self._scale_shift(cond, emb)
        return self._join(target * torch.exp(s) + t, cond)

    def inverse(self, z: Tensor, emb: Tensor) -> Tensor:
        target, cond = self._parts(z)
        s, t = self._scale_shift(cond, emb)
        return self._join((target - t) * torch.exp(-s), cond)


def pairs_per_level(pairs: int, levels: int) -> list[int]:
    """``pairs`` spread over ``levels`` Haar levels; the coarsest levels get the remainder."""
    base, rem = divmod(pairs, levels)
    return [base + (1 if level >= levels - rem else 0) for level in range(levels)]


class ConditionalINN(nn.Module):
    """f(x; snr) → (c, d) and its exact inverse (module docstring).

    ``arch``: the architecture (:class:`INNArchitecture`, or any object with its keys such as
    the ``inn`` config); keyword arguments override its keys, e.g. ``ConditionalINN(scale=8)``.
    x: (B, C, H, W) with H, W divisible by ``scale``; snr_db: a (B,) tensor or a number.
    c: (B, C, H/s, W/s) in image units; d: (B, C·(s² − 1), H/s, W/s).
    """

    def __init__(
        self, arch: INNArchitecture | None = None, /, *, channels: int = 3, **keys: Any
    ) -> None:
        super().__init__()
        self.arch = INNArchitecture.of(arch, **keys)
        problems = self.arch.problems()
        if problems:
            key, why = problems[0]
            raise ValueError(f"{key} {why}")
        a = self.arch
        self.channels = int(channels)
        self.scale = int(a.scale)
        self.levels = a.levels
        self.pool = AveragePool(self.scale)
        self.embed = SNREmbedding(a.emb_dim)
        self.stages = nn.ModuleList()
        for level, n in enumerate(pairs_per_level(a.pairs, self.levels)):
            chans = self.channels * 4 ** (level + 1)
            blocks = nn.ModuleList()
            for _ in range(n):
                for subnet, first in (("pnet", True), ("unet", False)):
                    blocks.append(
                        AffineCoupling(
                            chans, first, subnet, a.width, a.cond_blocks, a.emb_dim, a.clamp
                        )
                    )
            self.stages.append(blocks)

    @property
    def detail_channels(self) -> int:
        return self.channels * (self.scale**2 - 1)

    def _stage_blocks(self) -> list[Sequence[AffineCoupling]]:
        """The couplings of each Haar level, in forward order."""
        return [cast("Sequence[AffineCoupling]", blocks) for blocks in self.stages]

    def _snr(self, snr_db: Tensor | float, x: Tensor) -> Tensor:
        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=x.device)
        if snr.ndim == 0:
            snr = snr.expand(x.shape[0])
        if snr.shape != (x.shape[0],):
            raise ValueError(f"snr_db must be a number or (B,) = ({x.shape[0]},), got {snr.shape}")
        return snr

    def _check(self, x: Tensor) -> None:
        h, w = x.shape[-2:]
        if x.ndim != 4 or x.shape[1] != self.channels or h % self.scale or w % self.scale:
            raise ValueError(
                f"expected (B, {self.channels}, H, W) with H, W divisible by {self.scale}, "
                f"got {tuple(x.shape)}"
            )

    def coarse(self, x: Tensor) -> Tensor:
        """The coarse part of an image without couplings: A x (s×s average pooling).

        This is the Haar low-pass in c's units, and what c is trained to match: c_y =
        coarse(x̂). The same definition is used by SING-INN's guidance.
        """
        return self.pool.A(x)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Haar split alone (no couplings): (c, d) with c = A x (up to rounding)."""
        z = x
        for _ in range(self.levels):
            z = haar_down(z)
        return z[:, : self.channels] / self.scale, z[:, self.channels :]

    def forward(self, x: Tensor, snr_db: Tensor | float) -> tuple[Tensor, Tensor]:
        self._check(x)
        emb = self.embed(self._snr(snr_db, x))
        z = x
        for blocks in self._stage_blocks():
            z = haar_down(z)
            for block in blocks:
                z = block(z, emb)
        return z[:, : self.channels] / self.scale, z[:, self.channels :]

    def inverse(self, c: Tensor, d: Tensor, snr_db: Tensor | float) -> Tensor:
        if c.shape[1] != self.channels or d.shape[1] != self.detail_channels:
            raise ValueError(
                f"expected c with {self.channels} and d with {self.detail_channels} channels, "
                f"got {tuple(c.shape)} and {tuple(d.shape)}"
            )
        emb = self.embed(self._snr(snr_db, c))
        z = torch.cat([c * self.scale, d], dim=1)
        for blocks in reversed(self._stage_blocks()):
            for block in reversed(blocks):
                z = block.inverse(z, emb)
            z = haar_up(z)
        return z
