"""Figures people look at: labelled comparison grids of images (one row per method, each
restored image with its PSNR under it)."""

from __future__ import annotations

import math
import textwrap
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


def grid_array(rows: Mapping[str, Tensor], pad: int = 2, label: int = 0) -> np.ndarray:
    """One uint8 image: each row the images of one method, side by side, white padding;
    ``label`` more white pixels below each row (room for per-image numbers)."""
    strips = []
    for images in rows.values():
        tiles = to_uint8(images)
        b, h, w, _ = tiles.shape
        strip = np.full((h + 2 * pad + label, b * (w + pad) + pad, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            strip[pad : pad + h, pad + i * (w + pad) : pad + i * (w + pad) + w] = tile
        strips.append(strip)
    width = max(s.shape[1] for s in strips)
    strips = [
        np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips
    ]
    return np.concatenate(strips, axis=0)


def psnr_db(images: Tensor, reference: Tensor) -> list[float]:
    """Per-image PSNR (dB) of ``images`` against ``reference``, both in [-1, 1] (peak 2)."""
    a = images.detach().float().cpu().clamp(-1, 1)
    b = reference.detach().float().cpu().clamp(-1, 1)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return [math.inf if m == 0 else 10 * math.log10(4.0 / float(m)) for m in mse]


def _reference(rows: Mapping[str, Tensor]) -> str | None:
    """The row the numbers compare with: ``original`` if present, else the first row."""
    return "original" if "original" in rows else next(iter(rows), None)


def comparison_figure(rows: Mapping[str, Tensor], title: str = "") -> Figure:
    """One labelled row per entry of ``rows`` (e.g. original | DeepJSCC | SING-Zero), with each
    image's PSNR against the ``original`` row (else the first) in small print under it.

    Images are shown at their native resolution, magnified without interpolation. The figure is
    1.2 in per row (at least 2 in) high and as wide as the image grid plus 1.5 in for the row
    labels; a title wider than that is wrapped, never cut (a one-column grid).
    """
    pad = 2
    n_rows = len(rows)
    h = max(images.shape[-2] for images in rows.values())
    label = max(6, round(0.22 * h))
    plain = grid_array(rows, pad)  # the figure's size follows the grid without the numbers
    array = grid_array(rows, pad, label)
    height_in = max(1.2 * n_rows, 2.0)
    width_in = height_in * plain.shape[1] / plain.shape[0] + 1.5
    fig = Figure(figsize=(width_in, height_in), dpi=150)  # no pyplot: no global state, no GUI
    ax = fig.add_subplot()
    ax.imshow(array, interpolation="nearest")
    row_h = array.shape[0] / n_rows
    ax.set_yticks([row_h * i + pad + h / 2 for i in range(n_rows)], list(rows))
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    reference = _reference(rows)
    for r, (name, images) in enumerate(rows.items()):
        if reference is None or name == reference or images.shape != rows[reference].shape:
            continue
        w = images.shape[-1]
        for i, value in enumerate(psnr_db(images, rows[reference])):
            text = "PSNR ∞" if math.isinf(value) else f"PSNR {value:.1f} dB"
            x = pad + i * (w + pad) + w / 2
            y = r * row_h + pad + images.shape[-2] + pad / 2 + label / 2
            ax.text(x, y, text, fontsize=5, ha="center", va="center")
    if title:
        chars = max(12, int(width_in * 72 / (0.55 * 9)))  # ~0.55 em per character at 9 pt
        fig.suptitle(textwrap.fill(title, chars), fontsize=9)
    fig.tight_layout()
    return fig


def save_comparison_grid(rows: Mapping[str, Tensor], path: str | Path, title: str = "") -> Path:
    """:func:`comparison_figure` of ``rows`` written to the PNG ``path``."""
    from singexp.faults import atomic_path

    path = Path(path)
    figure = comparison_figure(rows, title)
    with atomic_path(path) as tmp:  # never a torn PNG; a full disk is one line naming it
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path
