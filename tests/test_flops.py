"""FLOP counting (singexp.flops) pinned against the convolution formula and the paper's prior."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from singexp.flops import CELEBAHQ_256_UNET, celebahq_unet, count_flops, parameter_count, unet_flops


@pytest.mark.parametrize(("cin", "cout", "k", "size"), [(3, 8, 3, 16), (16, 4, 1, 8), (4, 4, 5, 7)])
def test_conv_flops_match_the_formula(cin: int, cout: int, k: int, size: int) -> None:
    """A k×k convolution (stride 1, 'same' padding): 2·C_in·C_out·k²·H·W FLOPs per image (one
    multiply–add per weight per output pixel, 2 FLOPs each)."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    x = torch.zeros(1, cin, size, size)
    with torch.no_grad():
        flops = count_flops(lambda: conv(x))
    assert flops == 2 * cin * cout * k * k * size * size
    # a batch of 3 costs 3×
    with torch.no_grad():
        assert count_flops(lambda: conv(torch.zeros(3, cin, size, size))) == 3 * flops


def test_celebahq_prior_counted_on_meta_without_weights() -> None:
    unet = celebahq_unet()
    assert next(unet.parameters()).device.type == "meta"  # nothing allocated
    assert parameter_count(unet) == pytest.approx(113.7e6, rel=1e-3)  # the model card's size
    forward = unet_flops(unet)
    assert forward == pytest.approx(497e9, rel=0.01)  # docs/guide/methods.md: ~496 GFLOP per step
    assert CELEBAHQ_256_UNET["sample_size"] == 256


def test_input_gradient_costs_one_more_forward(unet: nn.Module) -> None:
    """SING-INN's DPS step: forward + backward to the input ≈ 2× the forward's FLOPs (the
    weights need no gradient); the weights' requires_grad flags are restored."""
    forward = unet_flops(unet)
    both = unet_flops(unet, backward=True)
    assert 1.8 * forward <= both <= 2.2 * forward
    assert not any(p.requires_grad for p in unet.parameters())  # as the fixture left them
