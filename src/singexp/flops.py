"""FLOPs of the diffusion prior per image, counted with ``torch.utils.flop_counter``.

    python -m singexp.flops            # the embedded UNet and the 256 px CelebA-HQ DDPM

One SING step calls the UNet once per image (SING-INN's DPS gradient adds the backward pass to
the UNet's input, counted too: :func:`step_flops`), so a restoration costs ``steps ×
step_flops`` per image. Counting follows torch's :class:`FlopCounterMode`: a
multiply–add is 2 FLOPs (a k×k convolution from C_in to C_out channels on an H×W output:
2·C_in·C_out·k²·H·W), and only matrix products and convolutions are counted (norms, activations
and additions are a few percent more).

The paper's prior, ``google/ddpm-ema-celebahq-256`` (Ho et al. 2020's CelebA-HQ model in
diffusers), is counted from its architecture alone (:data:`CELEBAHQ_256_UNET`, the model card's
``config.json``): the model is built on PyTorch's ``meta`` device, which has shapes but no
storage, so nothing is downloaded or allocated.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

#: the UNet2DModel architecture of google/ddpm-celebahq-256 and google/ddpm-ema-celebahq-256
#: (their config.json; 113.7 M parameters): the paper's prior (paper: experiments)
CELEBAHQ_256_UNET: dict[str, Any] = {
    "sample_size": 256,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 1,
    "flip_sin_to_cos": False,
    "down_block_types": (
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "AttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
    ),
    "block_out_channels": (128, 128, 256, 256, 512, 512),
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,
    "act_fn": "silu",
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``fn()`` runs, as torch's :class:`FlopCounterMode` counts them (a multiply–add
    = 2 FLOPs; matrix products and convolutions, forward and any backward inside ``fn``)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def unet_flops(unet: Any, batch: int = 1, backward: bool = False) -> int:
    """FLOPs per image of one call of a diffusers ``UNet2DModel`` on ``batch`` images; with
    ``backward`` also the gradient w.r.t. its input (SING-INN's DPS guidance differentiates
    through the UNet; the weights need no gradient), counted on the backward pass itself.

    Works on a model on the ``meta`` device (no weights): the counter needs shapes only."""
    config = unet.config
    size = config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    param = next(unet.parameters())
    x = torch.zeros(batch, config.in_channels, h, w, device=param.device, dtype=param.dtype)
    t = torch.full((batch,), 500, device=param.device, dtype=torch.long)
    weights = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)
    try:
        if not backward:
            with torch.no_grad():
                return count_flops(lambda: unet(x, t)) // batch
        x.requires_grad_(True)

        def forward_backward() -> None:
            # .backward(): FlopCounterMode's hooks reject autograd.grad on a leaf (torch 2.x)
            unet(x, t).sample.sum().backward()

        return count_flops(forward_backward) // batch
    finally:
        for p, flag in zip(unet.parameters(), weights, strict=True):
            p.requires_grad_(flag)


#: what one sampling step of each method costs per image: UNet calls with or without the
#: gradient through the UNet (SING-INN's default ``gradient: dps``); A, the INN and the
#: scheduler are negligible next to the UNet and not counted
STEP_BACKWARD = {"sing_zero": False, "sing_inn": True, "deepjscc": False}


def step_flops(unet: Any, method: str = "sing_zero") -> int:
    """FLOPs per image of one sampling step of ``method`` (:data:`STEP_BACKWARD`)."""
    return unet_flops(unet, backward=STEP_BACKWARD.get(method, False))


def celebahq_unet(device: str = "meta") -> Any:
    """google/ddpm-ema-celebahq-256's UNet built from :data:`CELEBAHQ_256_UNET` without weights
    (on ``meta``: shapes only; on ``cpu``: random weights)."""
    from diffusers import UNet2DModel

    with torch.device(device):
        unet: Any = UNet2DModel(**CELEBAHQ_256_UNET)
        return unet.eval()


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prior_costs(embedded: Any = None) -> dict[str, dict[str, float]]:
    """Parameters and forward GFLOP per image of the embedded prior (``embedded``: a loaded
    UNet; default the shipped one) and of the 256 px CelebA-HQ DDPM (architecture only)."""
    if embedded is None:
        from singexp.models.prior import load_prior

        embedded = load_prior("embedded", expected_size=None)
    out = {}
    for name, unet in (("embedded", embedded), ("ddpm_celebahq_256", celebahq_unet())):
        out[name] = {
            "parameters": float(parameter_count(unet)),
            "gflop_per_step": unet_flops(unet) / 1e9,
            "gflop_per_step_with_gradient": unet_flops(unet, backward=True) / 1e9,
            "image_size": float(unet.config["sample_size"]),
        }
    return out


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m singexp.flops",
        description="Parameters and GFLOP per image per UNet call of the embedded prior and "
        "the 256 px CelebA-HQ DDPM (torch.utils.flop_counter).",
    ).parse_args()
    print(json.dumps(prior_costs(), indent=2))


if __name__ == "__main__":
    main()
