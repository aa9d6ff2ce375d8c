"""Bandwidth compression ratio ρ = k/n and the encoder's latent shape (paper: system model).

An image of n = 3·H·W values is sent as k complex channel symbols (2k reals). An encoder that
downsamples by ``f`` in each spatial direction and outputs ``c`` channels emits
2k = c·(H/f)·(W/f) reals, so ρ = c / (6 f²) at any image size divisible by f:
with f = 16, ρ = c/1536, and the paper's 1/768, 1/384, 1/192 give c = 2, 4, 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from singexp.errors import ConfigError

PAPER_RATIOS: dict[str, Fraction] = {
    "1_768": Fraction(1, 768),
    "1_384": Fraction(1, 384),
    "1_192": Fraction(1, 192),
}

#: the image side the paper's ratios are used at (paper: system model: 256×256 images)
PAPER_IMAGE_SIZE: int = 256

#: the embedded default's grid (docs/guide/configs.md, "Operating points"): the paper's
#: symbol counts k = 256, 512, 1024 at 256 px scaled with the image side to 32 px (k = 32, 64,
#: 128 symbols for 3·32·32 values). At 32 px the paper's ratios leave k = 4, 8, 16 symbols per
#: image.
EMBEDDED_RATIOS: dict[str, Fraction] = {
    "1_96": Fraction(1, 96),
    "1_48": Fraction(1, 48),
    "1_24": Fraction(1, 24),
}


def scaled_symbol_ratio(symbols_at_paper: int, image_size: int, paper_size: int = 256) -> Fraction:
    """ρ whose k at ``image_size`` is the paper's ``symbols_at_paper`` at ``paper_size`` scaled
    with the image side: k = k_paper · size / paper_size, ρ = k / (3 · size²)."""
    k = Fraction(symbols_at_paper * image_size, paper_size)
    return k / (3 * image_size * image_size)


def paper_ratio_note(ratio: Fraction, image_size: int) -> str | None:
    """One line when a run at the paper's image size uses a ratio the paper does not (the
    experiments' default 1/48 is the embedded grid's, chosen for 32 px); None otherwise."""
    if image_size != PAPER_IMAGE_SIZE or ratio in PAPER_RATIOS.values():
        return None
    paper = ", ".join(format_ratio(r) for r in PAPER_RATIOS.values())
    return (
        f"bcr {format_ratio(ratio)} is not one of the paper's ratios at {image_size} px "
        f"({paper}); for the paper's setting sweep bcr={','.join(PAPER_RATIOS)} (-m)"
    )


def parse_ratio(value: object, key: str = "bcr.ratio") -> Fraction:
    """A ratio from a config value: a number (0.0052), a fraction ('1/192') or a name ('1_192')."""
    text = str(value).strip()
    if text in PAPER_RATIOS:
        return PAPER_RATIOS[text]
    try:
        ratio = (
            Fraction(text.replace("_", "/"))
            if "/" in text or "_" in text
            else Fraction(float(text))
        )
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            key, f"{value!r} is not a ratio; write e.g. {key}=1/192 or {key}=0.0052"
        ) from None
    if not 0 < ratio <= 1:
        raise ConfigError(
            key, f"the bandwidth compression ratio must satisfy 0 < ρ ≤ 1, got {value}"
        )
    limited = ratio.limit_denominator(100_000)
    if limited == 0:  # e.g. 1e-6: no latent channel at all
        raise ConfigError(key, f"{value} is too small: the smallest ratio is 1/100000")
    return limited


def format_ratio(ratio: Fraction) -> str:
    return f"{ratio.numerator}/{ratio.denominator}"


@dataclass(frozen=True)
class LatentShape:
    """What a BCR means for one image size and encoder: latent channels and channel symbols."""

    ratio: Fraction
    image_size: int
    downsample: int
    channels: int

    @property
    def spatial(self) -> int:
        return self.image_size // self.downsample

    @property
    def symbols(self) -> int:
        """k, the number of complex channel symbols per image."""
        return self.channels * self.spatial**2 // 2

    @property
    def n(self) -> int:
        return 3 * self.image_size**2


def latent_shape(
    ratio: Fraction, image_size: int, downsample: int, key: str = "bcr.ratio"
) -> LatentShape:
    """Latent channels c = 6 f² ρ for an H = W = ``image_size`` image; errors name ``key``.

    Raises :class:`ConfigError` when c is not a whole number (naming the nearest valid ratios),
    when the image size is not a multiple of the downsampling, or when 2k is odd.
    """
    if image_size % downsample:
        raise ConfigError(
            "dataset.image_size",
            f"{image_size} is not a multiple of the encoder's downsampling factor {downsample}",
        )
    exact = 6 * downsample**2 * ratio  # c = 2k / (H/f)^2 with k = ρ·3H² (module docstring)
    if exact.denominator != 1:
        lo, hi = max(math.floor(exact), 1), math.ceil(exact)
        options = sorted({lo, hi} - {0})
        near = ", ".join(
            f"{format_ratio(Fraction(c, 6 * downsample**2))} ({c} latent channels)" for c in options
        )
        raise ConfigError(
            key,
            f"ρ={format_ratio(ratio)} gives {float(exact):.3f} latent channels with {downsample}× "
            f"downsampling (must be whole); nearest valid ratios: {near}",
        )
    shape = LatentShape(ratio, image_size, downsample, int(exact))
    if (shape.channels * shape.spatial**2) % 2:
        raise ConfigError(
            key,
            f"ρ={format_ratio(ratio)} gives an odd number of reals per image at {image_size} px; "
            "choose an even number of latent channels",
        )
    return shape
