"""Behavioural tests of the data modules (shapes, scikit-image photos, image folders)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from singexp.data import (
    DATASETS,
    ImageDataModule,
    ImageFolderDataModule,
    PhotosDataModule,
    ShapesDataModule,
    folder,
)
from singexp.data.photos import COLOUR_PHOTOS, PHOTOS, load_photo
from singexp.data.shapes import DEFAULT_BACKGROUNDS, background_probabilities
from singexp.errors import ConfigError, SingexpError

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


def shapes(seed: int = 0, **kwargs: object) -> ShapesDataModule:
    args: dict[str, object] = {"train_size": 64, "val_size": 16, "test_size": 16, "batch_size": 8}
    args.update(kwargs)
    return ShapesDataModule(seed=seed, **args)  # type: ignore[arg-type]


def first(dm: ImageDataModule, split: str, n: int = 8) -> torch.Tensor:
    ds = dm.split(split)
    return torch.stack([ds[i] for i in range(n)])


def check_images(x: torch.Tensor, size: int) -> None:
    assert x.dtype == torch.float32
    assert x.shape[1:] == (3, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0


# ---- shapes ------------------------------------------------------------------------------------
def test_shapes_deterministic_by_seed_and_split() -> None:
    a, b, c = shapes(seed=1), shapes(seed=1), shapes(seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(first(a, split), first(b, split))
        assert not torch.equal(first(a, split), first(c, split))
    assert not torch.equal(first(a, "train"), first(a, "val"))
    assert not torch.equal(first(a, "val"), first(a, "test"))
    # repeated access gives the same image
    assert torch.equal(a.split("train")[3], a.split("train")[3])


def test_shapes_same_in_another_process(tmp_path: Path) -> None:
    code = (
        "import sys, torch; from singexp.data import ShapesDataModule as S; "
        "torch.save(S(seed=5).split('test')[7], sys.argv[1])"
    )
    out = tmp_path / "image.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=60)
    other = torch.load(out)
    assert torch.equal(other, ShapesDataModule(seed=5).split("test")[7])


def test_shapes_eval_seed_pins_val_and_test() -> None:
    a, b = shapes(seed=1, eval_seed=0), shapes(seed=2, eval_seed=0)
    assert torch.equal(first(a, "test"), first(b, "test"))
    assert not torch.equal(first(a, "train"), first(b, "train"))


@pytest.mark.parametrize("size", [16, 32, 48])
def test_shapes_range_shape_and_content(size: int) -> None:
    x = first(shapes(image_size=size), "train", 32)
    check_images(x, size)
    assert x.std() > 0.2
    per_image_std = x.flatten(1).std(dim=1)
    assert (per_image_std > 0.02).float().mean() > 0.9  # almost no flat images
    colours = torch.unique((x.permute(0, 2, 3, 1).reshape(-1, 3) * 8).round(), dim=0)
    assert len(colours) > 50
    # anti-aliased: edge pixels take intermediate values, not only the shape colours
    assert len(torch.unique(x[0])) > 20


def test_shapes_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.image_size"):
        ShapesDataModule(image_size=0)
    with pytest.raises(ConfigError, match=r"dataset\.train_size"):
        ShapesDataModule(train_size=-3)
    with pytest.raises(ConfigError, match=r"dataset\.max_shapes"):
        ShapesDataModule(min_shapes=4, max_shapes=2)


def edge_share(x: torch.Tensor) -> float:
    """Share of horizontally adjacent pixel pairs that differ by more than 0.3 (a hard edge)."""
    return float(((x[..., 1:] - x[..., :-1]).abs().amax(dim=1) > 0.3).float().mean())


def test_shapes_backgrounds_option_sets_the_mix() -> None:
    assert background_probabilities() == tuple(
        DEFAULT_BACKGROUNDS[k] for k in ("flat", "gradient", "stripes", "checkers", "noise")
    )
    assert background_probabilities({"stripes": 2, "checkers": 2}) == (0, 0, 0.5, 0.5, 0)
    # the default mix is the documented one: None and the explicit weights give the same images
    explicit = shapes(backgrounds=dict(DEFAULT_BACKGROUNDS))
    assert torch.equal(first(shapes(), "train", 16), first(explicit, "train", 16))
    # stripes/checkers only: hard edges everywhere; flat only: edges on the shapes' outlines only
    periodic = first(shapes(backgrounds={"stripes": 1, "checkers": 1}, max_shapes=1), "test", 16)
    flat = first(shapes(backgrounds={"flat": 1}, max_shapes=1), "test", 16)
    check_images(periodic, 32)
    assert edge_share(periodic) > 3 * edge_share(flat)
    assert edge_share(periodic) > 0.15


def test_shapes_backgrounds_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.backgrounds.*unknown kind.*'dots'"):
        ShapesDataModule(backgrounds={"dots": 1.0})
    with pytest.raises(ConfigError, match=r"dataset\.backgrounds.*>= 0"):
        ShapesDataModule(backgrounds={"flat": 1.0, "stripes": -0.5})
    with pytest.raises(ConfigError, match=r"dataset\.backgrounds.*positive sum"):
        ShapesDataModule(backgrounds={"flat": 0.0})
    with pytest.raises(ConfigError, match=r"dataset\.backgrounds"):
        ShapesDataModule(backgrounds={"flat": float("nan"), "stripes": 1.0})


# ---- base behaviour (through shapes) -----------------------------------------------------------
def test_loaders_batches_and_seeded_shuffle() -> None:
    a, b = shapes(seed=3), shapes(seed=3)
    for dm in (a, b):
        dm.setup("fit")
    batch_a, batch_b = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
    assert isinstance(batch_a, torch.Tensor) and batch_a.shape == (8, 3, 32, 32)
    assert torch.equal(batch_a, batch_b)  # same seed -> same shuffled order
    assert not torch.equal(batch_a, first(a, "train"))  # shuffled
    assert torch.equal(next(iter(a.val_dataloader())), first(a, "val"))
    assert torch.equal(next(iter(a.test_dataloader())), first(a, "test"))
    assert sum(len(x) for x in a.train_dataloader()) == 64  # drop_last=False
    assert (
        sum(len(x) for x in ShapesDataModule(train_size=10, batch_size=4).train_dataloader()) == 10
    )


def test_test_images_mean_image_describe() -> None:
    dm = shapes(train_size=10)
    assert torch.equal(dm.test_images(5), first(dm, "test", 5))
    assert dm.test_images(1000).shape == (16, 3, 32, 32)  # capped at the test size
    assert len(dm.test_dataset) == 16 and len(dm.train_dataset) == 10  # type: ignore[arg-type]
    mean = dm.mean_image()
    assert mean.shape == (3, 32, 32)
    torch.testing.assert_close(mean, first(dm, "train", 10).mean(0))
    text = dm.describe()
    assert "\n" not in text and "shapes" in text and "64" not in text.split("batch")[0]


# ---- photos ------------------------------------------------------------------------------------
def test_photos_load_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in PHOTOS:
        photo = load_photo(name, 0.5)
        assert photo.shape[0] == 3 and min(photo.shape[1:]) >= 64
        assert photo.min() >= -1 and photo.max() <= 1
    for name in COLOUR_PHOTOS:  # colour photos really have colour
        photo = load_photo(name, 0.25)
        assert (photo[0] - photo[2]).abs().mean() > 0.02, name


def test_photos_splits_held_out_and_deterministic() -> None:
    dm = PhotosDataModule(seed=0, train_size=64, val_size=16, test_size=16)
    names = dm.photo_names
    assert not set(names["test"]) & set(names["train"])
    assert not set(names["val"]) & set(names["train"])
    dm.setup()
    train_photos = dm.split("train").photos  # type: ignore[attr-defined]
    test_photos = dm.split("test").photos  # type: ignore[attr-defined]
    assert all(t is not p for t in test_photos for p in train_photos)
    x = first(dm, "train", 32)
    check_images(x, 32)
    assert x.flatten(1).std(dim=1).mean() > 0.05
    again = PhotosDataModule(seed=0, train_size=64, val_size=16, test_size=16)
    assert torch.equal(first(again, "test"), first(dm, "test"))
    other = PhotosDataModule(seed=1, train_size=64, val_size=16, test_size=16)
    assert not torch.equal(first(other, "train"), x[:8])
    assert "chelsea" in dm.describe()


def test_photos_test_crops_come_from_test_photo() -> None:
    dm = PhotosDataModule(image_size=16, test_size=4, photo_scale=0.25, test_photos=["chelsea"])
    photo = load_photo("chelsea", 0.25)
    crop = dm.split("test")[0]
    windows = photo.unfold(1, 16, 1).unfold(2, 16, 1)  # (3, H', W', 16, 16)
    diff = (windows - crop[:, None, None]).abs().amax(dim=(0, 3, 4))
    assert diff.min() == 0


def test_photos_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.test_photos"):
        PhotosDataModule(test_photos=["astronaut"])
    with pytest.raises(ConfigError, match=r"dataset\.train_photos"):
        PhotosDataModule(train_photos=["no_such_photo"])
    with pytest.raises(ConfigError, match=r"dataset\.photo_scale"):
        PhotosDataModule(image_size=128, photo_scale=0.25).setup()


# ---- image folders -----------------------------------------------------------------------------
def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour) + size[0])
    array = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(array.astype(np.uint8)).save(path)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for i in range(8):
        write_png(root / f"img{i}.png", (40 + 5 * i, 30 + 3 * i), (30 * i, 100, 200 - 20 * i))
    write_png(root / "nested" / "deep" / "UPPER.PNG", (50, 70), (10, 200, 10))
    Image.new("RGB", (64, 48), (200, 50, 50)).save(root / "photo.JPG", quality=90)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_loads_good_files_and_warns_once(
    image_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = ImageFolderDataModule(root=str(image_dir), image_size=24, batch_size=4, min_test_images=1)
    with caplog.at_level(logging.WARNING, logger="singexp.data"):
        dm.setup("fit")
        dm.setup("test")
        text = dm.describe()
    records = [r for r in caplog.records if r.name == "singexp.data"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "skipped 1 unreadable" in message and "broken.png" in message
    files = [f for s in ("train", "val", "test") for f in dm.files(s)]
    assert len(files) == 10 and len(set(files)) == 10
    assert all(f.name != "broken.png" for f in files)
    assert {"UPPER.PNG", "photo.JPG"} <= {f.name for f in files}
    assert min(dm.split_size(s) for s in ("val", "test")) >= 1
    batch = next(iter(dm.train_dataloader()))
    check_images(batch, 24)
    assert "\n" not in text and "1 unreadable" in text


def test_folder_resize_and_centre_crop(tmp_path: Path) -> None:
    array = np.zeros((30, 90, 3), dtype=np.uint8)  # wide: red | green | blue thirds
    array[:, :30, 0] = array[:, 30:60, 1] = array[:, 60:, 2] = 255
    root = tmp_path / "wide"
    root.mkdir()
    for i in range(3):
        array[0, 0, 0] = i  # distinct files (a file in two splits is an error), outside the crop
        Image.fromarray(array).save(root / f"{i}.png")
    dm = ImageFolderDataModule(root=root, image_size=20, val_fraction=0.3, test_fraction=0.3)
    image = dm.split("train")[0]
    assert image.shape == (3, 20, 20)  # shorter side 30 -> 20, width 90 -> 60, centre 20
    assert (image[1] > 0.9).all() and (image[0] < -0.9).all() and (image[2] < -0.9).all()


def test_folder_decode_failure_later_is_an_error_not_a_substitute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "late"
    root.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(root / f"{i}.png")
    dm = ImageFolderDataModule(
        root=root, image_size=16, val_fraction=0.25, test_fraction=0.25, holdout="tail"
    )
    assert [f.name for f in dm.files("train")] == ["0.png", "1.png"]
    original = folder.load_image

    def flaky(path: Path, size: int, background: tuple[int, int, int]) -> torch.Tensor:
        if path.name == "0.png":  # passed the indexing check, fails later (file changed)
            raise OSError("image file is truncated")
        return original(path, size, background)

    monkeypatch.setattr(folder, "load_image", flaky)
    with pytest.raises(SingexpError, match=r"0\.png.*truncated"):
        dm.split("train")[0]
    assert torch.equal(dm.split("train")[1], original(root / "1.png", 16, (255, 255, 255)))


def test_folder_split_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for i in range(6):
        write_png(root / "train" / f"a{i}.png", (20, 20), (i * 40 + 10, 0, 0))
    for i in range(2):
        write_png(root / "test" / f"b{i}.png", (20, 20), (0, i * 40, 0))
    dm = ImageFolderDataModule(root=root, image_size=16, val_fraction=0.2)
    assert [f.parent.name for f in dm.files("test")] == ["test", "test"]
    assert {f.parent.name for f in dm.files("train") + dm.files("val")} == {"train"}
    assert len(dm.files("val")) == 1 and len(dm.files("train")) == 5
    for i in range(3):
        write_png(root / "val" / f"c{i}.png", (20, 20), (0, 0, i * 40 + 10))
    dm = ImageFolderDataModule(root=root, image_size=16)
    assert [f.parent.name for f in dm.files("val")] == ["val"] * 3
    assert len(dm.files("train")) == 6


def test_folder_tinyimagenet_layout(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    for k, wnid in enumerate(("n01", "n02")):  # distinct files: two splits may not share one
        for i in range(5):
            colour = (i + 20 * k, 9, 9)
            write_png(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64), colour)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    for i in range(3):
        write_png(root / "val" / "images" / f"val_{i}.JPEG", (64, 64), (9, i, 9))
        write_png(root / "test" / "images" / f"test_{i}.JPEG", (64, 64), (9, 9, i))
    cfg = OmegaConf.create({"seed": 0, "dataset": OmegaConf.load(CONF / "tinyimagenet.yaml")})
    dm = instantiate(cfg.dataset, root=str(root))
    assert {f.name for f in dm.files("test")} == {f"val_{i}.JPEG" for i in range(3)}
    assert len(dm.files("train")) + len(dm.files("val")) == 10
    assert {f.parts[-3] for f in dm.files("train")} == {"n01", "n02"}


def test_folder_tail_holdout_and_caps(tmp_path: Path) -> None:
    root = tmp_path / "ffhq"
    for i in range(14):
        write_png(root / f"{i:05d}.png", (16, 16), (i * 10, 0, 0))
    dm = ImageFolderDataModule(
        root=root, image_size=8, holdout="tail", test_fraction=1 / 7, val_fraction=1 / 14
    )
    assert [f.name for f in dm.files("test")] == ["00012.png", "00013.png"]
    assert [f.name for f in dm.files("val")] == ["00011.png"]
    capped = ImageFolderDataModule(root=root, image_size=8, max_images=3, test_size=1)
    assert capped.split_size("train") == 3 and capped.split_size("test") == 1


@pytest.mark.parametrize("root", [None, "", "   "])
def test_folder_root_not_set(root: str | None) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.root") as info:
        ImageFolderDataModule(root=root)
    assert "dataset.root=" in str(info.value) and "\n" not in str(info.value)


def test_folder_root_missing_empty_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.root.*does not exist"):
        ImageFolderDataModule(root=tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"dataset\.root.*not a directory"):
        ImageFolderDataModule(root=tmp_path / "file.png")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(ConfigError, match=r"dataset\.root.*no images"):
        ImageFolderDataModule(root=empty).setup()
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(4):
        (bad / f"{i}.png").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"dataset\.root.*no readable images"):
        ImageFolderDataModule(root=bad).setup()


def test_folder_fraction_errors(image_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.test_fraction"):
        ImageFolderDataModule(root=image_dir, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction"):
        ImageFolderDataModule(root=image_dir, val_fraction=0)


# ---- hydra configs -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS)
def test_configs_instantiate(name: str, image_dir: Path) -> None:
    path = CONF / f"{name}.yaml"
    cfg = OmegaConf.create({"seed": 7, "dataset": OmegaConf.load(path)})
    node = cfg.dataset
    assert node.name == name and node.num_workers == 0
    assert node._target_.startswith("singexp.data.")
    overrides: dict[str, object] = {}
    if "root" in node:
        assert node.root is None
        overrides["root"] = str(image_dir)
    if name in ("shapes", "photos"):
        overrides.update(train_size=16, val_size=4, test_size=4)
    dm = instantiate(node, **overrides)
    assert isinstance(dm, ImageDataModule)
    assert dm.seed == 7 and dm.name == name
    assert dm.image_size == {"celebahq": 256, "ffhq": 256, "tinyimagenet": 64}.get(
        name, dm.image_size
    )
    dm.setup()
    check_images(dm.test_images(2), dm.image_size)


def test_config_files_match_datasets() -> None:
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(DATASETS)
