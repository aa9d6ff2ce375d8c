"""Any folder of images, resized (shorter side) and centre-cropped to a square."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from singexp.data.base import MIN_TRAIN_IMAGES, SPLIT_CODES, ImageDataModule, to_signed, warn_once
from singexp.errors import ConfigError, SingexpError
from singexp.points import file_digest

log = logging.getLogger("singexp.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
HOLDOUT_MODES: tuple[str, ...] = ("interleave", "tail")
#: what ``dataset.split_overlap`` does with files that two splits share (same content)
OVERLAP_MODES: tuple[str, ...] = ("error", "warn")
_PROGRESS_MIN = 2000  # show a progress bar when checking at least this many files
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_NAMED = 20  # skipped files named in the warning; beyond that, a file lists them all
# (path, mtime, size, image size) -> (why it cannot be used or None, has transparency)
#: (path, mtime, size, image_size) -> (why unusable or None, transparency, native (w, h))
_CHECKED: dict[tuple[str, int, int, int], tuple[str | None, bool, tuple[int, int]]] = {}


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


Colour = tuple[int, int, int]
WHITE: Colour = (255, 255, 255)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_rgb(image: Image.Image, background: Colour = WHITE) -> tuple[Image.Image, bool]:
    """8-bit RGB copy of a decoded image and whether it had real transparency: 16-bit grey is
    scaled (not clipped to white), alpha is composited on `background`."""
    if image.mode.startswith("I"):  # 16-bit grey PNG: "I;16" (or "I" in older Pillow)
        array = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(array / 257.0), 0, 255).astype(np.uint8), "L")
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:  # type: ignore[operator]  # Pillow types getextrema for any band count; one band gives (min, max)
            flat = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(flat, rgba).convert("RGB"), True
        return rgba.convert("RGB"), False
    return image.convert("RGB"), False


def decode(path: Path, size: int, background: Colour = WHITE) -> tuple[Image.Image, bool]:
    """All pixels of `path` as 8-bit RGB (JPEG: at a reduced scale that stays >= size)."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        image.load()
        return to_rgb(image, background)


def load_image(path: Path, size: int, background: Colour = WHITE) -> Tensor:
    """Decode, resize the shorter side to `size` (bicubic, antialiased), centre-crop."""
    image, _ = decode(path, size, background)
    w, h = image.size
    if min(w, h) != size:
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return to_signed(np.asarray(image, dtype=np.uint8))


def overlapping_files(splits: dict[str, list[Path]]) -> list[tuple[str, Path, str, Path]]:
    """``(split, file, other split, other file)`` for every file whose bytes another split holds
    too (a symlink, a hard link or a copy): sizes first, then the sha256 of the files whose size
    another split has, so a folder of distinct images is not read twice."""
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for split, files in splits.items():
        for path in files:
            by_size.setdefault(path.stat().st_size, []).append((split, path))
    found: list[tuple[str, Path, str, Path]] = []
    for group in by_size.values():
        if len({split for split, _ in group}) < 2:
            continue
        by_digest: dict[str, list[tuple[str, Path]]] = {}
        for split, path in group:
            by_digest.setdefault(file_digest(path), []).append((split, path))
        for same in by_digest.values():
            first_split, first = same[0]
            found += [(s, p, first_split, first) for s, p in same[1:] if s != first_split]
    return sorted(found, key=lambda row: (SPLIT_CODES[row[0]], str(row[1])))


def spread(n: int, k: int) -> list[int]:
    """`k` distinct indices spread evenly over range(n)."""
    return [int((i + 0.5) * n / k) for i in range(k)] if k > 0 else []


def _optional_cap(key: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"dataset.{key}", f"must be null or an integer >= 1, got {value!r}")
    return value


def _colour(value: Sequence[int]) -> Colour:
    """`dataset.alpha_background` as an (r, g, b) tuple of 0..255 integers."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    if len(items) != 3 or any(
        isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in items
    ):
        raise ConfigError(
            "dataset.alpha_background", f"must be [r, g, b] with 0..255 integers, got {value!r}"
        )
    return (items[0], items[1], items[2])


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 and n > 0 else 0


class ImageFileDataset(Dataset[Tensor]):
    """Images from a list of files checked when indexed; a file that no longer decodes is an
    error naming it, never replaced by another image."""

    def __init__(
        self, files: list[Path], size: int, root: Path | None = None, background: Colour = WHITE
    ) -> None:
        self.files = files
        self.size = size
        self.root = root
        self.background = background

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        n = len(self.files)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        path = self.files[index]
        try:
            return load_image(path, self.size, self.background)
        except _DECODE_ERRORS as error:
            raise SingexpError(
                f"cannot decode {path} ({error}); it decoded when the data set was indexed: "
                "was it changed since?"
            ) from error

    def describe_item(self, index: int) -> dict[str, Any]:
        """Where item `index` comes from: its file, relative to the data set root."""
        path = self.files[index]
        if self.root is not None and path.is_relative_to(self.root):
            return {"file": path.relative_to(self.root).as_posix()}
        return {"file": str(path)}


class ImageFolderDataModule(ImageDataModule):
    """Images from `root`: `train/`, `test/` (and `val/`) subfolders if present, else a split."""

    def __init__(
        self,
        name: str = "image_folder",
        image_size: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        min_train_images: int = MIN_TRAIN_IMAGES,
        content: str | None = None,
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
        min_test_images: int = 16,
        alpha_background: Sequence[int] = WHITE,
        split_overlap: str = "error",
    ) -> None:
        super().__init__(
            name, image_size, batch_size, num_workers, seed, min_train_images, content=content
        )
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
        if isinstance(min_test_images, bool) or not isinstance(min_test_images, int):
            raise ConfigError(
                "dataset.min_test_images", f"must be an integer, got {min_test_images!r}"
            )
        self.min_test_images = min_test_images
        self.alpha_background = _colour(alpha_background)
        if split_overlap not in OVERLAP_MODES:
            raise ConfigError(
                "dataset.split_overlap", f"must be one of {OVERLAP_MODES}, got {split_overlap!r}"
            )
        self.split_overlap = split_overlap
        self.layout = ""
        self._test_only = False  # a test/ subfolder and no other images: no train/val split
        self.skipped: dict[Path, str] = {}  # file -> why it was skipped
        self.transparent: list[Path] = []
        self.small: list[tuple[Path, tuple[int, int]]] = []  # smaller than image_size: upscaled
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

    def _images_in(self, folder: Path, exclude: Path | None = None) -> list[Path]:
        """The image files under `folder` (not under `exclude`) that decode; bad ones are
        skipped here, at indexing, before any split is made."""
        files = [f for f in find_images(folder) if exclude is None or not f.is_relative_to(exclude)]
        if not files and exclude is not None:
            return []
        if not files:
            raise ConfigError(
                "dataset.root",
                f"no images ({'/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}) found under "
                f"{folder}; point dataset.root at a folder of images",
            )
        readable = self._readable(files, f"checking images under {folder}")
        if not readable:
            raise ConfigError(
                "dataset.root",
                f"no readable images under {folder} ({len(files)} files could not be decoded)",
            )
        return readable

    def _split_files(self) -> dict[str, list[Path]]:
        """Readable files of each split."""
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
        elif test_dir.is_dir():  # test/ alone is the test split; the other files train
            test = self._images_in(test_dir)
            rest = self._images_in(self.root, exclude=test_dir)
            train, val = self._holdout(rest, self.val_fraction) if rest else ([], [])
            self._test_only = not rest
            self.layout = (
                f"{self.test_dir}/ subfolder = test, val = {self._rule(len(rest), len(val))} "
                f"of the other {len(rest)} files, the rest train"
                if rest
                else f"only a {self.test_dir}/ subfolder: test only, nothing to train on"
            )
        else:
            files = self._images_in(self.root)
            rest, test = self._holdout(files, self.test_fraction)
            train, val = self._holdout(rest, self.val_fraction / (1.0 - self.test_fraction))
            self.layout = (
                f"split of {len(files)} files by sorted path: test = "
                f"{self._rule(len(files), len(test))} (test_fraction {self.test_fraction:g}), "
                f"val = {self._rule(len(rest), len(val))} of the rest"
            )
        splits = {"train": train, "val": val, "test": test}
        for split, files in splits.items():
            if not files and (split == "test" or not self._test_only):
                raise ConfigError(
                    "dataset.root",
                    f"too few images under {self.root} for a {split} split; add images or "
                    f"adjust dataset.val_fraction/dataset.test_fraction",
                )
            cap = self.caps[split] if self.caps[split] is not None else self.max_images
            if cap is not None and len(files) > cap:
                splits[split] = [files[i] for i in spread(len(files), cap)]
                self.layout += f"; {split} capped at {cap} (evenly spread)"
        self._check_overlap(splits)
        return splits

    def _check_overlap(self, splits: dict[str, list[Path]]) -> None:
        """Files that two splits share by content (a train/ of symlinks to test/ made
        the mean-image baseline the test images' mean) are an error naming them, or with
        ``dataset.split_overlap=warn`` one warning."""
        shared = overlapping_files(splits)
        if not shared:
            return
        names = [f"{self._name(a)} ({s}) = {self._name(b)} ({t})" for s, a, t, b in shared]
        listing = ", ".join(names[:_NAMED]) + (
            f", ... ({len(names)} in all)" if len(names) > _NAMED else ""
        )
        files = f"{len(shared)} file{'s' if len(shared) > 1 else ''}"
        what = f"{files} under {self.root} in two splits (same content): {listing}"
        if self.split_overlap == "warn":
            warn_once(f"{what}; the test metrics are not of held-out images")
            return
        raise ConfigError(
            "dataset.split_overlap",
            f"{what}; remove them from one split, or set dataset.split_overlap=warn to run anyway",
        )

    def _rule(self, n: int, k: int) -> str:
        """How `k` of `n` sorted files are held out (the split rule the split line states)."""
        return f"the last {k}" if self.holdout == "tail" else f"{k} evenly spread"

    def _check(self, path: Path) -> tuple[str | None, bool, tuple[int, int]]:
        """(why `path` cannot be used or None, whether it has transparency, its size as decoded:
        native where smaller than ``image_size``), cached per file."""
        try:
            stat = path.stat()
        except OSError as error:
            return str(error), False, (0, 0)
        key = (str(path), stat.st_mtime_ns, stat.st_size, self.image_size)
        if key not in _CHECKED:
            try:
                image, transparent = decode(path, self.image_size, self.alpha_background)
                _CHECKED[key] = (None, transparent, image.size)
            except Exception as error:  # any failure to decode skips the file
                _CHECKED[key] = (str(error) or type(error).__name__, False, (0, 0))
        return _CHECKED[key]

    def _readable(self, files: list[Path], description: str) -> list[Path]:
        """The files that decode completely, as they will be loaded (a truncated JPEG does not);
        the others are recorded in `skipped`, never replaced by another image."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(self._check, files)
            if len(files) >= _PROGRESS_MIN:
                from singexp.progress import track

                results = track(results, description, total=len(files))
            checked = list(zip(files, results, strict=True))
        self.skipped.update({f: why for f, (why, _, _) in checked if why is not None})
        self.transparent += [f for f, (why, alpha, _) in checked if why is None and alpha]
        self.small += [
            (f, size)
            for f, (why, _, size) in checked
            if why is None and min(size) < self.image_size
        ]
        return [f for f, (why, _, _) in checked if why is None]

    def _name(self, path: Path) -> str:
        inside = path.is_relative_to(self.root)
        return path.relative_to(self.root).as_posix() if inside else str(path)

    def _report(self) -> None:
        """One warning naming every skipped file (the first few, and a file listing all), one
        note on transparency, one warning on a small test split."""
        if self.skipped:
            names = [self._name(f) for f in self.skipped]
            listing = ", ".join(names[:_NAMED])
            if len(names) > _NAMED:
                listed = Path(tempfile.gettempdir()) / (
                    f"singexp-skipped-{hashlib.sha1(str(self.root).encode()).hexdigest()[:10]}.txt"
                )
                rows = zip(names, self.skipped.values(), strict=True)
                listed.write_text("".join(f"{name}\t{why}\n" for name, why in rows))
                listing += f", ... (all {len(names)} with the reasons in {listed})"
            warn_once(
                f"skipped {len(names)} unreadable files under {self.root} (they do not decode): "
                f"{listing}"
            )
        if self.transparent:
            warn_once(
                f"{len(self.transparent)} images under {self.root} have transparency (first: "
                f"{self._name(self.transparent[0])}); composited on dataset.alpha_background="
                f"{list(self.alpha_background)}"
            )
        if self.small:
            path, (w, h) = min(self.small, key=lambda item: min(item[1]))  # the most upscaled
            sizes = sorted({f"{a}x{b}" for _, (a, b) in self.small})
            native = ", ".join(sizes[:3]) + (", ..." if len(sizes) > 3 else "")
            warn_once(
                f"{len(self.small)} images under {self.root} are smaller than dataset.image_size="
                f"{self.image_size} (native {native}; e.g. {self._name(path)}): upscaled up to "
                f"{self.image_size / min(w, h):g}x, so the metrics are of interpolated pixels; "
                f"set dataset.image_size={min(w, h)} to use them at their own size"
            )
        test = len(self._files["test"]) if self._files else 0
        if test < self.min_test_images:
            warn_once(
                f"the test split of {self.root} has only {test} images (< dataset.min_test_images"
                f"={self.min_test_images}): its metrics are noisy; add test images or raise "
                "dataset.test_fraction / dataset.test_size"
            )

    def files(self, split: str) -> list[Path]:
        """Readable image files of one split (scans and checks the folder on first use)."""
        if self._files is None:
            self.skipped, self.transparent, self.small = {}, [], []
            self._files = self._split_files()
            self._report()
        return self._files[split]

    def make_split(self, split: str) -> ImageFileDataset:
        """Images of one split, decoded on access."""
        return ImageFileDataset(
            self.files(split), self.image_size, self.root, self.alpha_background
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Tensor]:
        if not self.files(split):  # only a test/ subfolder: nothing to train or validate on
            raise ConfigError(
                "dataset.root",
                f"{self.root} holds only {self.test_dir}/ (the test split); the {split} split "
                f"needs images under {self.root / self.train_dir} or beside {self.test_dir}/",
            )
        return super()._loader(split, shuffle)

    def details(self) -> str:
        """Root folder, split layout and skipped files."""
        skipped = f", {len(self.skipped)} unreadable skipped" if self.skipped else ""
        return f"root {self.root} ({self.layout}{skipped})"
