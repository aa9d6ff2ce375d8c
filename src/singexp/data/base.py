"""Common base for the image data modules: splits, loaders, fixed test images, mean image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from singexp.errors import ConfigError

log = logging.getLogger("singexp.data")

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: what a restoration run may evaluate (``evaluate.split``): the test images, or the validation
#: images when a method is tuned (tuning never reads the test images)
EVALUATION_SPLITS: tuple[str, ...] = ("test", "val")
MEAN_IMAGE_MAX: int = 2048
#: default of ``dataset.min_train_images``: a training split below it is warned about
MIN_TRAIN_IMAGES: int = 100


def to_signed(images: np.ndarray | Tensor) -> Tensor:
    """uint8 HWC array (or CHW tensor) in [0, 255] -> float32 CHW tensor in [-1, 1]."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            images = np.repeat(images[:, :, None], 3, axis=2)
        images = torch.from_numpy(np.array(images)).permute(2, 0, 1)  # copy: may be read-only
    return images.to(torch.float32).div(127.5).sub(1.0)


def check_positive(key: str, value: int) -> int:
    """Raise a ConfigError unless `value` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"must be a positive integer, got {value!r}")
    return value


SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}

_SAID: set[str] = set()  # lines said once per process (several jobs build the same data)


def say_once(message: str, level: int = logging.INFO) -> None:
    """Log `message` on ``singexp.data`` unless this process has already said it."""
    if message not in _SAID:
        _SAID.add(message)
        log.log(level, message)


def warn_once(message: str) -> None:
    """A warning on ``singexp.data``, once per process."""
    say_once(message, logging.WARNING)


class SeededImageDataset(Dataset[Tensor]):
    """``length`` images; image i is drawn by :meth:`draw` from a numpy generator seeded by
    (``salt``, split, i, seed) alone, so it is the same in every process and on every call."""

    salt: int = 0  # separates a subclass's streams from any other generator with the same seed

    def __init__(self, length: int, seed: int, split: str) -> None:
        self.length = length
        self.seed = seed
        self.split_code = SPLIT_CODES[split]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        rng = np.random.default_rng([self.salt, self.split_code, index, self.seed % 2**63])
        return self.draw(rng)

    def draw(self, rng: np.random.Generator) -> Tensor:
        raise NotImplementedError

    def describe_item(self, index: int) -> dict[str, Any]:
        """Where item `index` comes from: the generated sample's index and seed."""
        return {"sample": index, "seed": self.seed}


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses implement `make_split`; batches are float tensors (B, 3, H, W)."""

    def __init__(
        self,
        name: str,
        image_size: int,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        min_train_images: int = MIN_TRAIN_IMAGES,
        content: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # what the images are (``dataset.content``): the data set models' ``trained_on`` is
        # compared with; None: the data set's name says it
        self.content = None if content is None else str(content)
        self.image_size = check_positive("dataset.image_size", image_size)
        self.batch_size = check_positive("dataset.batch_size", batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(
                "dataset.num_workers", f"must be an integer >= 0, got {num_workers!r}"
            )
        self.num_workers = num_workers
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("dataset.seed", f"must be an integer, got {seed!r}")
        self.seed = seed
        if (
            isinstance(min_train_images, bool)
            or not isinstance(min_train_images, int)
            or min_train_images < 0
        ):
            raise ConfigError(
                "dataset.min_train_images",
                f"must be an integer >= 0 (0: never warn), got {min_train_images!r}",
            )
        #: a model trained on fewer images than this is warned about (singexp.callbacks)
        self.min_train_images = min_train_images
        self.datasets: dict[str, Dataset[Tensor]] = {}
        self._mean_image: Tensor | None = None

    # ---- to implement ----------------------------------------------------------------------
    def make_split(self, split: str) -> Dataset[Tensor]:
        """Build the dataset of one split ("train", "val" or "test"); items are (3, H, W)."""
        raise NotImplementedError

    # ---- lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build all splits once (later calls are no-ops)."""
        if self.datasets:
            return
        self.datasets = {split: self.make_split(split) for split in SPLITS}
        say_once(self.describe())  # the split sizes and rule, once per run

    def split(self, split: str) -> Dataset[Tensor]:
        """The dataset of one split (sets the module up if needed)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.setup()
        return self.datasets[split]

    @property
    def train_dataset(self) -> Dataset[Tensor]:
        """The training split (sets the module up if needed)."""
        return self.split("train")

    @property
    def val_dataset(self) -> Dataset[Tensor]:
        """The validation split (sets the module up if needed)."""
        return self.split("val")

    @property
    def test_dataset(self) -> Dataset[Tensor]:
        """The test split (sets the module up if needed)."""
        return self.split("test")

    def split_size(self, split: str) -> int:
        """Number of images in a split."""
        return len(self.split(split))  # type: ignore[arg-type]

    def _loading(self) -> dict[str, Any]:
        """How every loader of this data module loads: workers and pinned memory."""
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Tensor]:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.split(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            generator=generator,
            **self._loading(),
        )

    def train_dataloader(self) -> DataLoader[Tensor]:
        """Shuffled training batches; the order is seeded (it differs per epoch, per seed)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Tensor]:
        """Validation batches in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Tensor]:
        """Test batches in a fixed order."""
        return self._loader("test", shuffle=False)

    def sharded_test_dataloader(
        self, split: str = "test", images: int | None = None
    ) -> DataLoader[Tensor]:
        """The batches of :meth:`test_dataloader` (of ``split``: ``val`` when tuning),
        shared by whole batches between the processes of a DDP run
        (:class:`~singexp.distributed.ShardedBatches`): in one process, the same batches in the
        same order; ``images``: only the first ones of the split (``evaluate.images``). Give the
        trainer ``use_distributed_sampler=False``."""
        from singexp.distributed import ShardedBatches

        if split not in EVALUATION_SPLITS:
            raise ConfigError(
                "evaluate.split", f"must be one of {list(EVALUATION_SPLITS)}, got {split!r}"
            )
        if self.split_size(split) == 0:
            raise ConfigError(
                "evaluate.split",
                f"{self.name} has no {split} images; choose evaluate.split="
                f"{'test' if split == 'val' else 'val'} or give the data a {split} split",
            )
        dataset = self.split(split)
        if images is not None:
            if isinstance(images, bool) or not isinstance(images, int) or images < 1:
                raise ConfigError(
                    "evaluate.images", f"must be null (all) or an integer >= 1, got {images!r}"
                )
            dataset = Subset(dataset, range(min(images, len(dataset))))  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_sampler=ShardedBatches(len(dataset), self.batch_size),  # type: ignore[arg-type]
            **self._loading(),
        )

    # ---- helpers -----------------------------------------------------------------------------
    def test_images(self, n: int) -> Tensor:
        """The first `n` test images stacked as (min(n, test size), 3, H, W)."""
        ds = self.split("test")
        count = min(int(n), len(ds))  # type: ignore[arg-type]
        if count < 1:
            raise ValueError(f"test_images needs n >= 1, got {n}")
        return torch.stack([ds[i] for i in range(count)])

    def mean_image(self) -> Tensor:
        """Mean (3, H, W) of up to 2048 training images spread evenly over the split (cached)."""
        if self._mean_image is None:
            ds = self.split("train")
            size = len(ds)  # type: ignore[arg-type]
            if size < 1:
                raise ConfigError("dataset", f"{self.name} has no training images to average")
            count = min(size, MEAN_IMAGE_MAX)
            indices = np.linspace(0, size - 1, count).round().astype(int)
            total = torch.zeros(3, self.image_size, self.image_size, dtype=torch.float64)
            for i in indices:
                total += ds[int(i)].to(torch.float64)
            self._mean_image = (total / count).to(torch.float32)
        return self._mean_image.clone()

    def details(self) -> str:
        """Subclass-specific part of `describe` (e.g. the source of the images)."""
        return ""

    def describe(self) -> str:
        """One line describing the data (sets the module up), e.g. for logs."""
        sizes = "/".join(str(self.split_size(s)) for s in SPLITS)
        extra = f", {self.details()}" if self.details() else ""
        return (
            f"{self.name}: {self.image_size}px RGB, train/val/test = {sizes}, "
            f"batch {self.batch_size}{extra}"
        )


def indexed_data(run: Any, state: Any = None) -> Any:
    """The run's data module (``run.dataset``), indexed (files checked, splits made and said: a
    bad folder, a split overlap fail here), once per run (kept in ``state``, the run's
    :class:`~singexp.state.RunState`, when given): the task layer calls it before the loggers
    start, the jobs reuse it."""
    if state is not None and state.datamodule is not None:
        return state.datamodule
    from singexp.instantiate import build
    from singexp.reuse import config_identity, folder_identity, reused

    def setup() -> Any:
        datamodule = build(run.data.spec)
        datamodule.setup()
        return datamodule

    # the points of a sweep share it (and its mean image): singexp.reuse; a folder's
    # files are part of the key, so a changed folder is indexed again
    root = run.data.spec.get("root")
    files = folder_identity(root) if root and Path(str(root)).is_dir() else ()
    datamodule = reused(("data", config_identity(run.data.spec), files), setup)
    if state is not None:
        state.datamodule = datamodule
    return datamodule


def training_split(datamodule: Any, purpose: str) -> Any:
    """The training split for ``purpose``; a test-only data set is a one-line error naming it."""
    if datamodule.split_size("train") == 0:
        raise ConfigError(
            "dataset.root",
            f"{purpose} needs training images and {datamodule.name} has none (a test-only data "
            "set); add a train/ folder or choose a setting that needs none",
        )
    return datamodule.train_dataset
