"""Paired data for the SING-INN network (paper: SING-INN): (x, x̂ = DeepJSCC(x, snr), snr).

The pairs are made on the fly from an ordinary image batch and a trained, frozen DeepJSCC
codec, with one SNR per image drawn uniformly from the training range: every epoch sees new
channel noise and new SNRs, and no paired data set has to be stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from singexp.channel import SNRSampler


class Pairs(NamedTuple):
    """A batch of training pairs: images x, DeepJSCC outputs x̂ (both (B, 3, H, W)), SNRs (B,)."""

    x: Tensor
    x_hat: Tensor
    snr_db: Tensor


def freeze(codec: Any) -> nn.Module:
    """The DeepJSCC network of ``codec`` (a DeepJSCCModule or a DeepJSCC), in eval mode and
    without gradients."""
    net = codec.codec if hasattr(codec, "codec") else codec
    return net.eval().requires_grad_(False)


@torch.no_grad()
def make_pairs(
    codec: Any,
    x: Tensor,
    snr_db: Tensor | tuple[float, float] | float,
    generator: torch.Generator | None = None,
) -> Pairs:
    """Send the batch ``x`` through the frozen ``codec`` at ``snr_db``.

    ``snr_db``: one value per image (B,), a number, or a range (low, high) drawn uniformly per
    image. ``generator`` (on x's device) makes the SNR draw and the channel noise reproducible.
    """
    net = freeze(codec)
    param = next(net.parameters(), None)
    if param is not None and param.device != x.device:
        net.to(x.device)
    b = x.shape[0]
    if isinstance(snr_db, tuple | list):
        snr = SNRSampler(float(snr_db[0]), float(snr_db[1])).sample(b, x.device, generator)
    else:
        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=x.device)
        snr = snr.expand(b).clone() if snr.ndim == 0 else snr
    x_hat = net(x, snr, generator)
    return Pairs(x, x_hat.to(x.dtype), snr)


class PairMaker:
    """Makes training pairs from image batches with a frozen codec and a training SNR range.

    >>> maker = PairMaker(codec, (-5.0, 5.0))
    >>> x, x_hat, snr = maker(batch)
    """

    def __init__(self, codec: Any, snr_range: tuple[float, float] = (-5.0, 5.0)) -> None:
        low, high = float(snr_range[0]), float(snr_range[1])
        if low > high:
            raise ValueError(f"snr_range must be (low, high) with low ≤ high, got {snr_range}")
        self.codec = freeze(codec)
        self.snr_range = (low, high)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Pairs:
        return make_pairs(self.codec, x, self.snr_range, generator)

    def at(self, x: Tensor, snr_db: float, generator: torch.Generator | None = None) -> Pairs:
        """Pairs at one fixed SNR (validation)."""
        return make_pairs(self.codec, x, float(snr_db), generator)
