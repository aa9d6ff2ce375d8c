"""Any folder of images, resized (shorter side) and centre-cropped to a square."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from singexp.data.base import SPLITS, ImageDataModule, to_signed
from singexp.errors import ConfigError, SingexpError

log = logging.getLogger("singexp.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
HOLDOUT_MODES: tuple[str, ...] = ("interleave", "tail")
_PROGRESS_MIN = 2000  # show a progress bar when checking at least this many files
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, case-insensitive extension), sorted by path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def is_readable(path: Path) -> bool:
    """Whether PIL can identify and verify the file (cheap; does not decode all pixels)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:
        return False
    return True


def load_image(path: Path, size: int) -> Tensor:
    """Decode, resize the shorter side to `size` (bicubic, antialiased), centre-crop."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that stays >= size
        image = image.convert("RGB")
    w, h = image.size
    if min(w, h) != size:
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return to_signed(np.asarray(image, dtype=np.uint8))


def spread(n: int, k: int) -> list[int]:
    """`k` distinct indices spread evenly over range(n)."""
    return [int((i + 0.5) * n / k) for i in range(k)] if k > 0 else []


def _optional_cap(key: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"dataset.{key}", f"must be null or an integer >= 1, got {value!r}")
    return value


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


class ImageFileDataset(Dataset[Tensor]):
    """Images from a list of files; a file that fails to decode is replaced by the next one."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files = files
        self.size = size
        self._warned = False

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        n = len(self.files)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for offset in range(n):
            path = self.files[(index + offset) % n]
            try:
                return load_image(path, self.size)
            except _DECODE_ERRORS as error:
                if not self._warned:
                    self._warned = True
                    log.warning("cannot decode %s (%s); using the next image instead", path, error)
        raise SingexpError(f"none of the {n} images could be decoded (first: {self.files[0]})")


class ImageFolderDataModule(ImageDataModule):
    """Images from `root`: `train/`, `test/` (and `val/`) subfolders if present, else a split."""

    def __init__(
        self,
        name: str = "image_folder",
        image_size: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        root: str | os.PathLike[str] | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        holdout: str = "interleave",
        max_images: int | None = None,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        train_dir: str = "train",
        val_dir: str | None = "val",
        test_dir: str = "test",
    ) -> None:
        super().__init__(name, image_size, batch_size, num_workers, seed)
        self.root = self._check_root(root)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(value, int | float) or not 0.0 < value < 1.0:
                raise ConfigError(f"dataset.{key}", f"must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError("dataset.test_fraction", "val_fraction + test_fraction must be < 1")
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        if holdout not in HOLDOUT_MODES:
            raise ConfigError("dataset.holdout", f"must be one of {HOLDOUT_MODES}, got {holdout!r}")
        self.holdout = holdout
        self.max_images = _optional_cap("max_images", max_images)
        self.caps = {
            "train": _optional_cap("train_size", train_size),
            "val": _optional_cap("val_size", val_size),
            "test": _optional_cap("test_size", test_size),
        }
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.layout = ""
        self.skipped: list[Path] = []
        self._files: dict[str, list[Path]] | None = None

    @staticmethod
    def _check_root(root: str | os.PathLike[str] | None) -> Path:
        fix = "set dataset.root=/path/to/images"
        if root is None or not str(root).strip():
            raise ConfigError("dataset.root", f"is not set; {fix}")
        from hydra.utils import to_absolute_path

        path = Path(to_absolute_path(os.path.expandvars(os.path.expanduser(str(root).strip()))))
        if not path.exists():
            raise ConfigError("dataset.root", f"{path} does not exist; {fix}")
        if not path.is_dir():
            raise ConfigError("dataset.root", f"{path} is not a directory; {fix}")
        return path

    # ---- file lists --------------------------------------------------------------------------
    def _holdout(self, files: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
        """Split `files` into (kept, held out) with ~fraction of them held out."""
        k = _count(len(files), fraction)
        if self.holdout == "tail":
            return files[: len(files) - k], files[len(files) - k :]
        chosen = set(spread(len(files), k))
        kept = [f for i, f in enumerate(files) if i not in chosen]
        return kept, [files[i] for i in sorted(chosen)]

    def _images_in(self, folder: Path) -> list[Path]:
        files = find_images(folder)
        if not files:
            raise ConfigError(
                "dataset.root",
                f"no images ({'/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}) found under "
                f"{folder}; point dataset.root at a folder of images",
            )
        return files

    def _split_files(self) -> dict[str, list[Path]]:
        """Candidate files of each split, before the readability check."""
        train_dir, test_dir = self.root / self.train_dir, self.root / self.test_dir
        if train_dir.is_dir() and test_dir.is_dir():
            train, test = self._images_in(train_dir), self._images_in(test_dir)
            val_dir = self.root / self.val_dir if self.val_dir else None
            if val_dir is not None and val_dir.is_dir():
                val = self._images_in(val_dir)
                self.layout = f"{self.train_dir}/{self.val_dir}/{self.test_dir} subfolders"
            else:
                train, val = self._holdout(train, self.val_fraction)
                self.layout = (
                    f"{self.train_dir}/{self.test_dir} subfolders, val = "
                    f"{self.val_fraction:g} of {self.train_dir}"
                )
        else:
            files = self._images_in(self.root)
            rest, test = self._holdout(files, self.test_fraction)
            train, val = self._holdout(rest, self.val_fraction / (1.0 - self.test_fraction))
            self.layout = (
                f"{self.holdout} split of {len(files)} files "
                f"(val {self.val_fraction:g}, test {self.test_fraction:g})"
            )
        splits = {"train": train, "val": val, "test": test}
        for split, files in splits.items():
            if not files:
                raise ConfigError(
                    "dataset.root",
                    f"too few images under {self.root} for a {split} split; add images or "
                    f"adjust dataset.val_fraction/dataset.test_fraction",
                )
            cap = self.caps[split] if self.caps[split] is not None else self.max_images
            if cap is not None and len(files) > cap:
                splits[split] = [files[i] for i in spread(len(files), cap)]
        return splits

    def _readable(self, files: list[Path], description: str) -> list[Path]:
        if len(files) < _PROGRESS_MIN:
            checked = [(f, is_readable(f)) for f in files]
        else:
            from rich.progress import track

            checked = [(f, is_readable(f)) for f in track(files, description, transient=True)]
        self.skipped.extend(f for f, ok in checked if not ok)
        return [f for f, ok in checked if ok]

    def files(self, split: str) -> list[Path]:
        """Readable image files of one split (scans and checks the folder on first use)."""
        if self._files is None:
            candidates = self._split_files()
            self.skipped = []
            files = {s: self._readable(candidates[s], f"checking {s} images") for s in SPLITS}
            if self.skipped:
                log.warning(
                    "skipped %d unreadable files under %s (first: %s)",
                    len(self.skipped),
                    self.root,
                    self.skipped[0],
                )
            for s in SPLITS:
                if not files[s]:
                    raise ConfigError(
                        "dataset.root",
                        f"no readable images for the {s} split under {self.root} "
                        f"({len(candidates[s])} files could not be read)",
                    )
            self._files = files
        return self._files[split]

    def make_split(self, split: str) -> ImageFileDataset:
        """Images of one split, decoded on access."""
        return ImageFileDataset(self.files(split), self.image_size)

    def details(self) -> str:
        """Root folder, split layout and skipped files."""
        skipped = f", {len(self.skipped)} unreadable skipped" if self.skipped else ""
        return f"root {self.root} ({self.layout}{skipped})"
