"""Shared fixtures: compose the real config tree with overrides; run the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from singexp.config import CONF_DIR, quote_group_overrides

# tiny models run far faster on one thread, above all on a loaded machine (OpenMP spin-waits)
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

# a run that finishes in seconds on 2 CPU cores
FAST = ["debug=fast", "logger=none", "callbacks=none", "print_config=false"]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/config.yaml with overrides; outputs go to tmp_path."""

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                "config",
                overrides=quote_group_overrides([f"paths.output_dir={tmp_path}", *overrides]),
            )

    return _make


def run_cli(
    *args: str, cwd: Path, env: dict[str, str | None] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m singexp ARGS`` as a user would, in ``cwd``."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None removes a variable
    return subprocess.run(
        [sys.executable, "-m", "singexp", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    """A tiny random ε-prediction UNet for 16×16 images (sampler tests)."""
    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    return model.eval().requires_grad_(False)


def randomize(net: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Give the zero-initialised output convolutions random weights (couplings ≠ identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * std)
    return net
