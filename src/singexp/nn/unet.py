"""The diffusion prior's network: an unconditional ε-prediction diffusers ``UNet2DModel``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models import UNet2DModel  # not `diffusers`: dummies under TYPE_CHECKING

from singexp.errors import ConfigError


def default_norm_groups(channels: Sequence[int]) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 that divides every channel count."""
    for groups in (32, 16, 8, 4, 2, 1):
        if all(int(c) % groups == 0 for c in channels):
            return groups
    return 1


def build_unet(
    sample_size: int,
    in_channels: int = 3,
    block_out_channels: Sequence[int] = (32, 64, 128),
    layers_per_block: int = 1,
    attention: bool | Sequence[bool] = False,
    norm_num_groups: int | None = None,
    attention_head_dim: int = 8,
    dropout: float = 0.0,
) -> UNet2DModel:
    """An unconditional ε-prediction ``UNet2DModel`` for ``sample_size``² images.

    ``attention``: False (default: no attention block anywhere — attention is what costs on a
    CPU, docs/guide/methods.md), True (attention in the lowest-resolution level only) or one
    flag per level.
    ``norm_num_groups``: GroupNorm groups; None picks the largest of 32, 16, ... dividing
    every entry of ``block_out_channels``.
    """
    channels = tuple(int(c) for c in block_out_channels)
    if not channels:
        raise ConfigError("prior.block_out_channels", "must list at least one channel count")
    levels = len(channels)
    if isinstance(attention, bool):
        flags = [False] * levels
        if attention:
            flags[-1] = True
    else:
        flags = [bool(a) for a in attention]
        if len(flags) != levels:
            raise ConfigError(
                "prior.attention",
                f"needs one flag per level ({levels}), got {len(flags)}",
            )
    factor = 2 ** (levels - 1)
    if sample_size % factor:
        raise ConfigError(
            "dataset.image_size",
            f"{sample_size} is not divisible by {factor} "
            f"(the UNet downsamples {levels - 1} times); change prior.block_out_channels",
        )
    groups = default_norm_groups(channels) if norm_num_groups is None else int(norm_num_groups)
    if any(c % groups for c in channels):
        raise ConfigError(
            "prior.norm_num_groups", f"{groups} must divide every channel count {list(channels)}"
        )
    return UNet2DModel(
        sample_size=int(sample_size),
        in_channels=int(in_channels),
        out_channels=int(in_channels),
        block_out_channels=channels,
        layers_per_block=int(layers_per_block),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in flags),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(flags)),
        norm_num_groups=groups,
        attention_head_dim=int(attention_head_dim),
        dropout=float(dropout),
        add_attention=any(flags),  # the mid block's attention follows the levels' choice
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())
