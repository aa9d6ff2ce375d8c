"""Figures people look at: labelled comparison grids of images (one row per method)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, 3) uint8 (grey images are replicated)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def grid_array(rows: Mapping[str, Tensor], pad: int = 2) -> np.ndarray:
    """One uint8 image: each row the images of one method, side by side, white padding."""
    strips = []
    for images in rows.values():
        tiles = to_uint8(images)
        b, h, w, _ = tiles.shape
        strip = np.full((h + 2 * pad, b * (w + pad) + pad, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            strip[pad : pad + h, pad + i * (w + pad) : pad + i * (w + pad) + w] = tile
        strips.append(strip)
    width = max(s.shape[1] for s in strips)
    strips = [
        np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips
    ]
    return np.concatenate(strips, axis=0)


def save_comparison_grid(rows: Mapping[str, Tensor], path: str | Path, title: str = "") -> Path:
    """A PNG with one labelled row per entry of ``rows`` (e.g. original | DeepJSCC | SING-Zero).

    Images are shown at their native resolution, magnified without interpolation.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid_array(rows)
    n_rows = len(rows)
    height_in = max(1.2 * n_rows, 2.0)
    width_in = height_in * array.shape[1] / array.shape[0] + 1.5
    fig = Figure(figsize=(width_in, height_in), dpi=150)  # no pyplot: no global state, no GUI
    ax = fig.add_subplot()
    ax.imshow(array, interpolation="nearest")
    row_h = array.shape[0] / n_rows
    ax.set_yticks([row_h * (i + 0.5) for i in range(n_rows)], list(rows))
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path
