"""Procedural images: anti-aliased coloured shapes on flat, gradient or textured backgrounds."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from singexp.data.base import MIN_TRAIN_IMAGES, ImageDataModule, SeededImageDataset, check_positive
from singexp.errors import ConfigError

_BACKGROUNDS = ("flat", "gradient", "stripes", "checkers", "noise")
# the default share of each background kind (conf/dataset/shapes.yaml: dataset.backgrounds)
DEFAULT_BACKGROUNDS = {
    "flat": 0.2,
    "gradient": 0.25,
    "stripes": 0.2,
    "checkers": 0.15,
    "noise": 0.2,
}
_SHAPES = ("ellipse", "rectangle", "triangle", "ring")
Array = np.ndarray


def supersampling(size: int) -> int:
    """Supersampling factor used to anti-alias an image of `size` pixels."""
    return 4 if size <= 64 else 2


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates in [0, 1]: x as (1, n), y as (n, 1)."""
    c = ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)
    return c[None, :], c[:, None]


@lru_cache(maxsize=16)
def _interp(n: int, k: int) -> Array:
    """(n, k) weights for smooth (smoothstep) interpolation of k control points to n pixels."""
    pos = (np.arange(n, dtype=np.float64) + 0.5) / n * (k - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, k - 2)
    t = pos - lo
    t = t * t * (3 - 2 * t)
    w = np.zeros((n, k), dtype=np.float32)
    w[np.arange(n), lo] = 1 - t
    w[np.arange(n), lo + 1] += t
    return w


def _colour(rng: np.random.Generator) -> Array:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


def _distinct_colour(rng: np.random.Generator, avoid: Array) -> Array:
    """A random colour, redrawn a few times if too close to `avoid`."""
    colour = _colour(rng)
    for _ in range(4):
        if np.abs(colour - avoid).sum() > 0.45:
            break
        colour = _colour(rng)
    return colour


def _projection(rng: np.random.Generator, x: Array, y: Array) -> tuple[Array, Array]:
    """Coordinates rotated by a random angle around the image centre."""
    a = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    dx, dy = x - 0.5, y - 0.5
    return dx * c + dy * s, dy * c - dx * s


def background_probabilities(weights: Mapping[str, float] | None = None) -> tuple[float, ...]:
    """Probabilities of the background kinds, in the order of ``_BACKGROUNDS``.

    ``weights``: kind -> non-negative weight (normalised here; a kind left out gets 0);
    None = the default mix. Unknown kinds, negative weights or an all-zero mix are config errors.
    """
    if weights is None:
        weights = DEFAULT_BACKGROUNDS
    unknown = sorted(set(weights) - set(_BACKGROUNDS))
    if unknown:
        raise ConfigError(
            "dataset.backgrounds", f"unknown kind(s) {unknown}; use some of {list(_BACKGROUNDS)}"
        )
    values = [float(weights.get(kind, 0.0)) for kind in _BACKGROUNDS]
    if not all(v >= 0 for v in values) or not sum(values) > 0:  # NaN fails both
        raise ConfigError(
            "dataset.backgrounds", f"weights must be >= 0 with a positive sum, got {dict(weights)}"
        )
    total = sum(values)
    return tuple(v / total for v in values)


_DEFAULT_P = background_probabilities()  # validated once, not per image


def _background(rng: np.random.Generator, n: int, p: tuple[float, ...] | None = None) -> Array:
    """A (3, n, n) background: flat, gradient, stripes, checkers or smooth noise.

    ``p``: probabilities of the kinds in the order of ``_BACKGROUNDS`` (None = the default mix).
    """
    x, y = _grid(n)
    kind = _BACKGROUNDS[rng.choice(len(_BACKGROUNDS), p=_DEFAULT_P if p is None else p)]
    c0 = _colour(rng)
    if kind == "flat":
        return np.broadcast_to(c0[:, None, None], (3, n, n)).copy()
    if kind == "noise":
        k = int(rng.integers(2, 6))
        grid = rng.uniform(0, 1, (3, k, k)).astype(np.float32)
        w = _interp(n, k)
        return w @ grid @ w.T
    c1 = _distinct_colour(rng, c0)
    u, v = _projection(rng, x, y)
    if kind == "gradient":
        t = np.clip(0.5 + u * np.float32(rng.uniform(0.8, 1.6)), 0, 1)
    elif kind == "stripes":
        period = np.float32(rng.uniform(0.08, 0.3))
        t = ((u / period) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    else:  # checkers
        cell = np.float32(rng.uniform(0.1, 0.3))
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    return c0[:, None, None] + t[None] * (c1 - c0)[:, None, None]


def _shape_mask(rng: np.random.Generator, x: Array, y: Array) -> Array:
    """Boolean (n, n) mask of one random shape."""
    kind = _SHAPES[int(rng.integers(len(_SHAPES)))]
    cx, cy = rng.uniform(0.12, 0.88, 2).astype(np.float32)
    radius = np.float32(rng.uniform(0.08, 0.32))
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    dx, dy = x - cx, y - cy
    if kind == "triangle":
        angles = a + np.sort(rng.uniform(0, 2 * np.pi, 3))
        angles[1] = max(angles[1], angles[0] + 0.9)
        angles[2] = min(max(angles[2], angles[1] + 0.9), angles[0] + 2 * np.pi - 0.9)
        px = (cx + radius * np.cos(angles)).astype(np.float32)
        py = (cy + radius * np.sin(angles)).astype(np.float32)
        inside = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
        for i in range(3):
            j = (i + 1) % 3
            inside &= (px[j] - px[i]) * (y - py[i]) - (py[j] - py[i]) * (x - px[i]) >= 0
        return inside
    u = dx * c + dy * s
    v = dy * c - dx * s
    ra = radius
    rb = radius * np.float32(rng.uniform(0.45, 1.0))
    if kind == "rectangle":
        return (np.abs(u) <= ra) & (np.abs(v) <= rb)
    r2 = (u / ra) ** 2 + (v / rb) ** 2
    if kind == "ellipse":
        return r2 <= 1.0
    inner = np.float32(rng.uniform(0.35, 0.75))
    return (r2 <= 1.0) & (r2 >= inner * inner)


def render_shapes(
    rng: np.random.Generator,
    size: int,
    min_shapes: int = 1,
    max_shapes: int = 5,
    backgrounds: tuple[float, ...] | None = None,
) -> Array:
    """Render one (3, size, size) float32 image in [0, 1] from `rng`.

    ``backgrounds``: probabilities of the background kinds (:func:`background_probabilities`).
    """
    ss = supersampling(size)
    n = size * ss
    x, y = _grid(n)
    image = _background(rng, n, backgrounds)
    mean = image[:, :: 2 * ss, :: 2 * ss].reshape(3, -1).mean(1)
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        mask = _shape_mask(rng, x, y)
        colour = _distinct_colour(rng, mean)
        if rng.uniform() < 0.3:  # soft linear shading across the shape
            u, _ = _projection(rng, x, y)
            shade = u * np.float32(rng.uniform(-0.6, 0.6))
            for c in range(3):
                np.copyto(image[c], colour[c] + shade, where=mask)
        else:
            for c in range(3):
                image[c][mask] = colour[c]
    return np.clip(_box_downsample(image, ss), 0.0, 1.0)


@lru_cache(maxsize=8)
def _box_matrix(size: int, factor: int) -> Array:
    """(size, size * factor) matrix averaging blocks of `factor` samples."""
    return np.kron(np.eye(size, dtype=np.float32), np.full((1, factor), 1.0 / factor, np.float32))


def _box_downsample(image: Array, factor: int) -> Array:
    """Average non-overlapping factor x factor blocks of a (3, n, n) image."""
    n = image.shape[-1]
    if n > 256:  # large images: the reshape-sum is cheaper than the matrix products
        size = n // factor
        blocks = image.reshape(3, size, factor, size, factor)
        return blocks.mean(axis=(2, 4), dtype=np.float32)
    box = _box_matrix(n // factor, factor)
    return box @ image @ box.T


class ShapesDataset(SeededImageDataset):
    """`length` procedural images; image i depends only on (seed, split, i)."""

    salt = 0x5AA9E5

    def __init__(
        self,
        size: int,
        length: int,
        seed: int,
        split: str,
        min_shapes: int,
        max_shapes: int,
        backgrounds: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(length, seed, split)
        self.size = size
        self.min_shapes = min_shapes
        self.max_shapes = max_shapes
        self.backgrounds = backgrounds

    def draw(self, rng: np.random.Generator) -> Tensor:
        image = render_shapes(rng, self.size, self.min_shapes, self.max_shapes, self.backgrounds)
        return torch.from_numpy(image).mul_(2.0).sub_(1.0)


class ShapesDataModule(ImageDataModule):
    """Coloured shapes (ellipses, rectangles, triangles, rings) on varied backgrounds."""

    def __init__(
        self,
        name: str = "shapes",
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        min_train_images: int = MIN_TRAIN_IMAGES,
        content: str | None = None,
        train_size: int = 8192,
        val_size: int = 256,
        test_size: int = 256,
        min_shapes: int = 1,
        max_shapes: int = 5,
        eval_seed: int | None = None,
        backgrounds: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(
            name, image_size, batch_size, num_workers, seed, min_train_images, content=content
        )
        self.sizes = {
            "train": check_positive("dataset.train_size", train_size),
            "val": check_positive("dataset.val_size", val_size),
            "test": check_positive("dataset.test_size", test_size),
        }
        self.min_shapes = check_positive("dataset.min_shapes", min_shapes)
        self.max_shapes = check_positive("dataset.max_shapes", max_shapes)
        if self.max_shapes < self.min_shapes:
            raise ConfigError(
                "dataset.max_shapes", f"must be >= dataset.min_shapes ({self.min_shapes})"
            )
        self.eval_seed = eval_seed
        self.backgrounds = background_probabilities(backgrounds)

    def make_split(self, split: str) -> ShapesDataset:
        """The procedural dataset of one split (images are generated on access)."""
        seed = self.seed if split == "train" or self.eval_seed is None else self.eval_seed
        return ShapesDataset(
            self.image_size,
            self.sizes[split],
            seed,
            split,
            self.min_shapes,
            self.max_shapes,
            self.backgrounds,
        )

    def details(self) -> str:
        """Shape count range."""
        return f"{self.min_shapes}-{self.max_shapes} procedural shapes per image"
