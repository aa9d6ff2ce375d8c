"""Shared fixtures: compose the real config tree with overrides; run the real entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from singexp.cli import quote_group_overrides
from singexp.config import CONF_DIR

# tiny models run far faster on one thread, above all on a loaded machine (OpenMP spin-waits)
torch.set_num_threads(1)

# a test run started in the background by a script (`cmd &` without job control) inherits
# SIGINT ignored, and so would every process it starts: the Ctrl-C tests need Python's own
# handler, as a terminal gives it
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_console() -> Iterator[None]:
    """Every test starts on one torch thread (a pipeline applies ``threads=auto``: the cores)
    and leaves pytest's log handlers without singexp's once-per-process console filter (a run
    in this process installs it on the root handlers, pytest's capture handler among them)."""
    import logging

    from singexp import console

    console._SAID.clear()  # what earlier tests said is not on this test's screen
    yield
    torch.set_num_threads(1)
    for handler in logging.getLogger().handlers:
        handler.removeFilter(console._FILTER)


os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _fresh_reuse_store() -> None:
    """Every test starts with nothing kept by singexp.reuse (a sweep's shared models)."""
    from singexp import reuse

    reuse.clear()


def run_if(*, cuda: bool) -> pytest.MarkDecorator:
    """The one GPU gate of the tests (Lightning's ``RunIf``, for what singexp needs): run the
    test only where a CUDA GPU is available (``cuda=True``) or only where none is."""
    have = torch.cuda.is_available()
    return pytest.mark.skipif(
        have != cuda, reason="needs a CUDA GPU" if cuda else "needs a machine without a CUDA GPU"
    )


#: ``@requires_gpu`` / ``@requires_no_gpu`` on a test: the GPU gate, never an ad-hoc skip
requires_gpu = run_if(cuda=True)
requires_no_gpu = run_if(cuda=False)

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


def tiny_unet(
    seed: int = 0,
    channels: tuple[int, int] = (16, 32),
    groups: int = 8,
    dtype: torch.dtype = torch.float32,
) -> UNet2DModel:
    """A tiny random frozen ε-prediction UNet for 16×16 images (two down/up blocks of
    ``channels``, ``groups`` norm groups), its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    model = UNet2DModel(
        sample_size=16,
        block_out_channels=channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=groups,
    )
    return model.to(dtype).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    """A tiny random ε-prediction UNet for 16×16 images (sampler tests)."""
    return tiny_unet()


def assert_grid_png(
    path: str | Path, rows: int, cols: int, size: int, shows: torch.Tensor | None = None
) -> None:
    """``path`` is a comparison grid PNG (``singexp.visualize.save_comparison_grid``) of ``rows``
    methods × ``cols`` images of ``size`` px, and, given ``shows`` (B, C, H, W) in [-1, 1], the
    pixels of those images appear in it unaltered (shown magnified without interpolation)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as png:
        assert png.format == "PNG"
        pixels = np.asarray(png.convert("RGB"))
    # the images at native resolution or a whole multiple of it (visualize.magnification),
    # each padded by 2 px with a label strip under each row, 1.5 in of row labels on the left
    from singexp.visualize import DPI, LABELS_INCHES

    pad = 2
    grid_h = rows * (size + 2 * pad + max(6, round(0.22 * size)))
    grid_w = cols * (size + pad) + pad
    assert pixels.shape[0] >= grid_h and pixels.shape[1] >= grid_w + LABELS_INCHES * DPI, (
        pixels.shape,
        (grid_h, grid_w),
    )
    if shows is not None:
        shown = {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
        tiles = ((shows.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        colours = {tuple(c) for c in tiles.reshape(-1, 3).tolist()}
        found = len(colours & shown) / len(colours)
        assert found > 0.95, f"only {found:.0%} of the images' colours are in {path}"


def randomize(net: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Give the zero-initialised output convolutions random weights (couplings ≠ identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * std)
    return net
