"""Random crops of the photographs shipped inside the scikit-image wheel (no download)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from singexp.data.base import (
    MIN_TRAIN_IMAGES,
    ImageDataModule,
    SeededImageDataset,
    check_positive,
    to_signed,
)
from singexp.errors import ConfigError, SingexpError

_CROP_TRIES = 8


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pair -> left view

    return load


# Colour photographs bundled in the scikit-image wheel (verified to load offline). `cat` is
# the same file as `chelsea`; colorwheel/logo are synthetic and eagle/lily/skin need pooch.
COLOUR_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
}
# Greyscale photographs, replicated to 3 channels; opt-in (not in the default lists).
GREY_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    name: _skimage(name) for name in ("camera", "moon", "coins", "brick", "grass", "gravel")
}
PHOTOS: dict[str, Callable[[], np.ndarray]] = {**COLOUR_PHOTOS, **GREY_PHOTOS}

DEFAULT_TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "motorcycle",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
)
DEFAULT_VAL_PHOTOS: tuple[str, ...] = ("rocket",)
DEFAULT_TEST_PHOTOS: tuple[str, ...] = ("chelsea",)


def load_photo(name: str, scale: float = 1.0) -> Tensor:
    """Photograph `name` as a float (3, H, W) tensor in [-1, 1], resized by `scale`."""
    if name not in PHOTOS:
        raise KeyError(name)
    try:
        array = PHOTOS[name]()
    except Exception as error:  # e.g. a stripped-down scikit-image install
        raise SingexpError(f"cannot load scikit-image photo {name!r}: {error}") from error
    array = np.asarray(array, dtype=np.uint8)
    photo = to_signed(array[:, :, :3] if array.ndim == 3 else array)  # grey -> 3 channels
    if scale != 1.0:
        h, w = photo.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        photo = F.interpolate(
            photo[None], size=size, mode="bilinear", antialias=scale < 1.0, align_corners=False
        )[0].clamp_(-1.0, 1.0)
    return photo.contiguous()


class PhotoCropsDataset(SeededImageDataset):
    """`length` crops; crop i depends only on (seed, split, i): photo, position and flip."""

    salt = 0x9B0705

    def __init__(
        self,
        photos: Sequence[Tensor],
        length: int,
        size: int,
        seed: int,
        split: str,
        flip: bool,
        min_std: float,
    ) -> None:
        super().__init__(length, seed, split)
        self.photos = list(photos)
        self.size = size
        self.flip = flip
        self.min_std = min_std

    def draw(self, rng: np.random.Generator) -> Tensor:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        h, w = photo.shape[-2:]
        best, best_std = None, -1.0
        for _ in range(_CROP_TRIES):  # avoid flat crops (black borders, sky) when possible
            top = int(rng.integers(h - self.size + 1))
            left = int(rng.integers(w - self.size + 1))
            crop = photo[:, top : top + self.size, left : left + self.size]
            std = float(crop.std()) / 2.0  # std in [0, 1] units
            if std > best_std:
                best, best_std = crop, std
            if std >= self.min_std:
                break
        assert best is not None
        if self.flip and rng.uniform() < 0.5:
            best = best.flip(-1)
        return best.clone()


class PhotosDataModule(ImageDataModule):
    """Crops of scikit-image's bundled photos; val/test photos are held out from training."""

    def __init__(
        self,
        name: str = "photos",
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        min_train_images: int = MIN_TRAIN_IMAGES,
        content: str | None = None,
        train_size: int = 8192,
        val_size: int = 256,
        test_size: int = 256,
        photo_scale: float = 0.5,
        train_photos: Sequence[str] = DEFAULT_TRAIN_PHOTOS,
        val_photos: Sequence[str] = DEFAULT_VAL_PHOTOS,
        test_photos: Sequence[str] = DEFAULT_TEST_PHOTOS,
        flip: bool = True,
        min_std: float = 0.03,
        eval_seed: int | None = None,
    ) -> None:
        super().__init__(
            name, image_size, batch_size, num_workers, seed, min_train_images, content=content
        )
        self.sizes = {
            "train": check_positive("dataset.train_size", train_size),
            "val": check_positive("dataset.val_size", val_size),
            "test": check_positive("dataset.test_size", test_size),
        }
        if not isinstance(photo_scale, int | float) or not 0.0 < photo_scale <= 4.0:
            raise ConfigError("dataset.photo_scale", f"must be in (0, 4], got {photo_scale!r}")
        self.photo_scale = float(photo_scale)
        self.photo_names = {
            "train": self._names("train_photos", train_photos),
            "val": self._names("val_photos", val_photos),
            "test": self._names("test_photos", test_photos),
        }
        for split in ("val", "test"):
            shared = sorted(set(self.photo_names[split]) & set(self.photo_names["train"]))
            if shared:
                raise ConfigError(
                    f"dataset.{split}_photos",
                    f"{', '.join(shared)} also in dataset.train_photos; held-out photos must "
                    "not be used for training",
                )
        self.flip = bool(flip)
        self.min_std = float(min_std)
        self.eval_seed = eval_seed
        self._photos: dict[str, Tensor] = {}

    @staticmethod
    def _names(key: str, names: Sequence[str]) -> list[str]:
        if isinstance(names, str):
            names = [names]
        names = list(names)
        if not names:
            raise ConfigError(f"dataset.{key}", "must list at least one photo")
        unknown = [n for n in names if n not in PHOTOS]
        if unknown:
            raise ConfigError(
                f"dataset.{key}",
                f"unknown photo {unknown[0]!r}; choose from {', '.join(PHOTOS)}",
            )
        return names

    def photo(self, name: str) -> Tensor:
        """A (scaled) photograph, loaded once; checks it is large enough to crop."""
        if name not in self._photos:
            photo = load_photo(name, self.photo_scale)
            h, w = photo.shape[-2:]
            if min(h, w) < self.image_size:
                raise ConfigError(
                    "dataset.photo_scale",
                    f"photo {name!r} is {h}x{w} after scaling by {self.photo_scale}, smaller "
                    f"than dataset.image_size={self.image_size}; raise dataset.photo_scale",
                )
            self._photos[name] = photo
        return self._photos[name]

    def make_split(self, split: str) -> PhotoCropsDataset:
        """Crops of the split's photographs (train crops may be flipped)."""
        seed = self.seed if split == "train" or self.eval_seed is None else self.eval_seed
        return PhotoCropsDataset(
            [self.photo(n) for n in self.photo_names[split]],
            self.sizes[split],
            self.image_size,
            seed,
            split,
            flip=self.flip and split == "train",
            min_std=self.min_std,
        )

    def details(self) -> str:
        """Which photographs each split uses."""
        return (
            f"scale {self.photo_scale:g}, photos train={'+'.join(self.photo_names['train'])} "
            f"val={'+'.join(self.photo_names['val'])} test={'+'.join(self.photo_names['test'])}"
        )
