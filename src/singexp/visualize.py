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


#: dots per inch of the comparison grids
DPI = 150
#: the image area's height the grid is magnified towards (the earlier 1.2 in per row, at least
#: 2 in): small images are magnified by a whole factor, large ones shown 1:1
ROW_INCHES, MIN_INCHES = 1.2, 2.0
#: inches left of the images for the row labels, and of margin elsewhere
LABELS_INCHES, MARGIN_INCHES = 1.5, 0.1


def magnification(grid_height_px: int, n_rows: int) -> int:
    """The whole factor the grid is shown at: as near :data:`ROW_INCHES` per row as a whole
    factor gets, never below 1 (each image pixel at least one pixel of the PNG)."""
    target = max(ROW_INCHES * n_rows, MIN_INCHES) * DPI
    return max(1, int(target // grid_height_px))


def comparison_figure(rows: Mapping[str, Tensor], title: str = "") -> Figure:
    """One labelled row per entry of ``rows`` (e.g. original | DeepJSCC | SING-Zero), with each
    image's PSNR against the ``original`` row (else the first) in small print under it.

    Images are shown at their native resolution or a whole multiple of it (every image pixel a
    k×k block of the PNG, no interpolation: :func:`magnification`; 256 px images 1:1), the axes
    placed at exact pixel positions: 1.5 in for the row labels on the left, the title above
    (wrapped to the figure's width, never cut: a one-column grid).
    """
    pad = 2
    n_rows = len(rows)
    h = max(images.shape[-2] for images in rows.values())
    label = max(6, round(0.22 * h))
    array = grid_array(rows, pad, label)
    k = magnification(array.shape[0], n_rows)
    img_h, img_w = array.shape[0] * k, array.shape[1] * k  # pixels of the PNG
    left, margin = round(LABELS_INCHES * DPI), round(MARGIN_INCHES * DPI)
    width = left + img_w + margin
    wrapped = ""
    top = margin
    if title:
        chars = max(12, int(width / DPI * 72 / (0.55 * 9)))  # ~0.55 em per character at 9 pt
        wrapped = textwrap.fill(title, chars)
        top += round((wrapped.count("\n") + 1) * 9 * 1.35 / 72 * DPI) + margin
    height = margin + img_h + top
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)  # no pyplot: no global state
    ax = fig.add_axes((left / width, margin / height, img_w / width, img_h / height))
    ax.imshow(array, interpolation="nearest", aspect="auto")  # the box has the grid's shape
    row_h = array.shape[0] / n_rows
    ax.set_yticks([row_h * i + pad + h / 2 for i in range(n_rows)], list(rows), fontsize=8)
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
        fig.suptitle(wrapped, fontsize=9, y=1 - margin / height, va="top")
    return fig


def save_comparison_grid(rows: Mapping[str, Tensor], path: str | Path, title: str = "") -> Path:
    """:func:`comparison_figure` of ``rows`` written to the PNG ``path``."""
    from singexp.faults import atomic_path

    path = Path(path)
    figure = comparison_figure(rows, title)
    with atomic_path(path) as tmp:  # never a torn PNG; a full disk is one line naming it
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path
