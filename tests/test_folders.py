"""Real image folders without surprises: bad files, 16-bit, alpha, splits, tracing.

Every folder is generated here: a truncated JPEG, a text file named .png, 16-bit PNGs, an RGBA
PNG with transparency, a `test/`-only folder, 16 files.
"""

from __future__ import annotations

import csv
import logging
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from conftest import run_cli
from singexp import tasks
from singexp.config import RunConfig, validate
from singexp.data import ImageFolderDataModule, ShapesDataModule
from singexp.errors import ConfigError
from singexp.metrics import ImageMetrics
from singexp.models import artifact as artifacts
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import RestorationModule, write_outputs
from singexp.printing import print_results

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
METRICS = {"lpips": False, "stlpips": False, "swd": False}


def solid(path: Path, colour: tuple[int, int, int], size: int = 24) -> Path:
    """A distinct flat-colour PNG (or JPEG, by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # incompressible: a long file
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def png16(path: Path, array: np.ndarray) -> Path:
    """Write a 16-bit PNG (grey (H, W) or RGB (H, W, 3)) by hand: Pillow cannot write 16-bit RGB."""
    array = np.asarray(array, dtype=">u2")
    h, w = array.shape[:2]
    colour_type = 0 if array.ndim == 2 else 2
    raw = b"".join(b"\x00" + array[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def colours(n: int) -> list[tuple[int, int, int]]:
    return [(10 + 15 * i, 200 - 10 * i, (37 * i) % 256) for i in range(n)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "singexp.data" and r.levelno >= logging.WARNING
    ]


# ---- bad images (item 4) -----------------------------------------------------------------------
def test_bad_files_skipped_at_indexing_and_no_image_counted_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "faces"
    for i, colour in enumerate(colours(12)):
        solid(root / f"{i:02d}.png", colour)
    truncated_jpeg(root / "05b.jpg")  # verify() passes, decoding fails
    (root / "07b.png").write_text("not an image, just text")
    with caplog.at_level(logging.INFO, logger="singexp.data"):
        dm = ImageFolderDataModule(root=root, image_size=16)
        dm.setup()
    assert {f.name for f in dm.skipped} == {"05b.jpg", "07b.png"}
    files = [f for s in ("train", "val", "test") for f in dm.files(s)]
    assert sorted(f.name for f in files) == [f"{i:02d}.png" for i in range(12)]
    # every item of every split is its own file's image: 12 distinct images, none repeated
    images = [dm.split(s)[i] for s in ("train", "val", "test") for i in range(dm.split_size(s))]
    assert len({tuple(img[:, 0, 0].tolist()) for img in images}) == 12
    [message] = [m for m in warnings(caplog) if "unreadable" in m or "decode" in m]
    assert "skipped 2 unreadable files" in message
    assert "05b.jpg" in message and "07b.png" in message
    assert "2 unreadable skipped" in dm.describe()


def test_many_bad_files_first_named_and_all_listed_in_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "many"
    for i, colour in enumerate(colours(4)):
        solid(root / f"good{i}.png", colour)
    for i in range(25):
        (root / f"bad{i:02d}.png").write_text("text")
    with caplog.at_level(logging.WARNING, logger="singexp.data"):
        ImageFolderDataModule(root=root, image_size=16).setup()
    [message] = [m for m in warnings(caplog) if "unreadable" in m]
    assert "skipped 25 unreadable files" in message
    assert "bad00.png" in message and "bad19.png" in message and "bad24.png" not in message
    listed = Path(re.search(r"reasons in (\S+)\)", message).group(1))  # type: ignore[union-attr]
    lines = listed.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"bad{i:02d}.png" for i in range(25)]


def test_16_bit_pngs_are_scaled_not_white(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    png16(root / "grey.png", np.full((20, 20), 0x8080))
    png16(root / "rgb.png", np.broadcast_to([65535, 0, 0x4040], (20, 20, 3)))
    solid(root / "plain.png", (0, 0, 0), 20)
    dm = ImageFolderDataModule(root=root, image_size=16, val_fraction=0.3, test_fraction=0.3)
    ds = {
        f.name: dm.split(s)[i] for s in ("train", "val", "test") for i, f in enumerate(dm.files(s))
    }
    grey = (ds["grey.png"] + 1) * 127.5
    torch.testing.assert_close(grey, torch.full_like(grey, 128.0), atol=0.6, rtol=0)
    rgb = (ds["rgb.png"] + 1) * 127.5
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([255.0, 0.0, 64.0]), atol=0.6, rtol=0)


def test_alpha_composited_on_the_configured_background_with_one_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "alpha"
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:8, :, 3] = 255  # top half opaque red, bottom half fully transparent
    root.mkdir()
    Image.fromarray(rgba).save(root / "cutout.png")
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque).save(root / "opaque.png")  # RGBA without transparency: no note
    solid(root / "plain.png", (0, 255, 0), 16)
    with caplog.at_level(logging.WARNING, logger="singexp.data"):
        settings: dict[str, Any] = {
            "root": root,
            "image_size": 16,
            "val_fraction": 0.3,
            "test_fraction": 0.3,
            "min_test_images": 1,
            "alpha_background": [0, 0, 255],
        }
        dm = ImageFolderDataModule(**settings)
        dm.setup()
        again = ImageFolderDataModule(**settings)  # a second module indexing the same folder
        again.setup()
    [note] = [
        m for m in warnings(caplog) if "transparency" in m
    ]  # once, although two modules indexed the folder
    assert note.startswith("1 images") and "cutout.png" in note and "[0, 0, 255]" in note
    split = next(s for s in ("train", "val", "test") if dm.files(s)[0].name == "cutout.png")
    image = (dm.split(split)[0] + 1) * 127.5
    torch.testing.assert_close(image[:, 2, 8], torch.tensor([255.0, 0.0, 0.0]))
    torch.testing.assert_close(image[:, 13, 8], torch.tensor([0.0, 0.0, 255.0]))


@pytest.mark.parametrize("bad", [[255, 255], [0, 0, 256], "white", [0.5, 0, 0]])
def test_alpha_background_must_be_rgb(tmp_path: Path, bad: object) -> None:
    solid(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(ConfigError, match=r"dataset\.alpha_background"):
        ImageFolderDataModule(root=tmp_path, alpha_background=bad)  # type: ignore[arg-type]


def test_presets_state_the_alpha_and_test_keys() -> None:
    for name in ("image_folder", "celebahq", "ffhq", "tinyimagenet"):
        node = OmegaConf.load(CONF / f"{name}.yaml")
        assert list(node.alpha_background) == [255, 255, 255]
        assert node.min_test_images == 16


# ---- splits (item 2) ---------------------------------------------------------------------------
def test_split_sizes_and_rule_said_once_and_small_test_split_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "sixteen"
    for i, colour in enumerate(colours(16)):
        solid(root / f"{i:02d}.png", colour)
    with caplog.at_level(logging.INFO, logger="singexp.data"):
        for _ in range(2):  # a run builds its data module more than once
            ImageFolderDataModule(root=root, image_size=16).setup()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    [line] = [m for m in lines if "train/val/test" in m]
    assert "train/val/test = 14/1/1" in line and "evenly spread" in line
    [warning] = warnings(caplog)
    assert "only 1 images" in warning and "dataset.min_test_images=16" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="singexp.data"):
        ImageFolderDataModule(root=root, image_size=16, min_test_images=1).setup()
    assert warnings(caplog) == []


def test_ffhq_preset_states_its_tail_rule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "ffhq"
    for i, colour in enumerate(colours(14)):
        solid(root / f"{i:05d}.png", colour)
    cfg = OmegaConf.create({"seed": 0, "dataset": OmegaConf.load(CONF / "ffhq.yaml")})
    with caplog.at_level(logging.INFO, logger="singexp.data"):
        instantiate(cfg.dataset, root=str(root), image_size=16).setup()
    [line] = [r.getMessage() for r in caplog.records if "train/val/test" in r.getMessage()]
    assert "test = the last 2" in line


def test_test_subfolder_alone_is_the_test_split(tmp_path: Path) -> None:
    root = tmp_path / "eval"
    for i, colour in enumerate(colours(16)):
        solid(root / f"{i:02d}.png", colour)
    for i, colour in enumerate(colours(8)):
        solid(root / "test" / f"t{i}.png", colour[::-1])
    dm = ImageFolderDataModule(root=root, image_size=16, val_fraction=0.25, min_test_images=1)
    assert [f.name for f in dm.files("test")] == [f"t{i}.png" for i in range(8)]
    assert sorted(f.name for f in dm.files("train") + dm.files("val")) == [
        f"{i:02d}.png" for i in range(16)
    ]
    assert len(dm.files("val")) == 4
    assert "test/ subfolder = test" in dm.describe()


def test_folder_holding_only_test_gives_a_test_split_and_no_training(tmp_path: Path) -> None:
    root = tmp_path / "only"
    for i, colour in enumerate(colours(8)):
        solid(root / "test" / f"t{i}.png", colour)
    dm = ImageFolderDataModule(root=root, image_size=16, min_test_images=1)
    assert "train/val/test = 0/0/8" in dm.describe()
    assert next(iter(dm.test_dataloader())).shape == (8, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"dataset\.root.*only test/"):
        dm.train_dataloader()


# ---- traceability (item 5) ---------------------------------------------------------------------
def _restore(datamodule: L.LightningDataModule, tmp_path: Path) -> list[dict[str, str]]:
    torch.manual_seed(0)
    codec = DeepJSCCModule(bcr="1/192", image_size=32, latent_channels=8, width=8, metrics=METRICS)
    module = RestorationModule(
        codec,
        {"copy": lambda x, snr, g: x},
        snr_db=0.0,
        metrics=ImageMetrics.from_config(METRICS),
        grid_images=2,
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert module.summary["copy"]["images"] > 0 and "file" not in module.summary["copy"]
    with open(write_outputs(module, tmp_path / "run", "title")["per_image"]) as f:
        return list(csv.DictReader(f))


def test_per_image_csv_names_the_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i, colour in enumerate(colours(10)):
        solid(root / "test" / "sub" / f"t{i}.png", colour, 40)
    for i, colour in enumerate(colours(6)):
        solid(root / "train" / f"a{i}.png", colour)
    dm = ImageFolderDataModule(root=root, image_size=32, batch_size=4, min_test_images=1)
    rows = _restore(dm, tmp_path)
    assert len(rows) == 20  # 10 images × (deepjscc, copy)
    for method in ("deepjscc", "copy"):
        files = [r["file"] for r in rows if r["method"] == method]
        assert files == [f"test/sub/t{i}.png" for i in range(10)]
    assert all(int(r["image"]) == int(r["file"][-5]) for r in rows)


def test_per_image_csv_names_generated_samples_and_seed(tmp_path: Path) -> None:
    dm = ShapesDataModule(
        image_size=32, train_size=8, val_size=4, test_size=6, batch_size=4, seed=3
    )
    rows = _restore(dm, tmp_path)
    assert [int(r["sample"]) for r in rows if r["method"] == "copy"] == list(range(6))
    assert {r["seed"] for r in rows} == {"3"}


# ---- small things (item 7) ---------------------------------------------------------------------
def test_auto_artifact_checkpoints_are_not_doubled(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}

    def fake_jscc(run: RunConfig, loggers: list[object], state: object = None) -> dict[str, object]:
        seen["root"] = str(run.trainer["default_root_dir"])
        (run.output_dir / "codec.safetensors").write_bytes(b"x")
        return {}

    cfg = make_cfg(f"paths.artifacts={tmp_path / 'artifacts'}")
    path = artifacts.train_artifact(
        validate(cfg), "jscc", fake_jscc, {"id": 1}, "codec.safetensors", lambda _: {}
    )
    # Lightning writes default_root_dir/checkpoints/…: the artifact folder itself, once
    assert Path(seen["root"]) == path.parent


def test_prior_results_print_the_weights_not_an_empty_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_results(
        {"task": "prior", "dataset": "shapes", "snr_db": 0.0, "bcr": "1/192", "prior": "/r/prior"}
    )
    out = capsys.readouterr().out
    assert "/r/prior" in out and "SNR" not in out and "BCR" not in out


@pytest.mark.slow
def test_cli_restore_on_a_folder_names_files_and_says_the_split(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for i, colour in enumerate(colours(16)):
        solid(root / f"{i:02d}.png", colour, 40)
    truncated_jpeg(root / "03b.jpg")
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=sing_zero",
        "sampler=none",
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=32",
        "dataset.test_fraction=0.25",
        "logger=none",
        "print_config=false",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("train/val/test = 11/1/4") == 1
    assert output.count("skipped 1 unreadable files") == 1 and "03b.jpg" in output
    assert "min_test_images=16" in output
    with open(run / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    # 4 of the 16 good files, evenly spread; the truncated JPEG is nowhere
    files = [r["file"] for r in rows if r["method"] == "deepjscc"]
    assert files == ["02.png", "06.png", "10.png", "14.png"]


def test_restore_indexes_the_folder_before_any_auto_training(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated_jpeg(bad / "a.jpg")
    (bad / "b.png").write_text("text")
    trained: list[str] = []
    monkeypatch.setattr(
        artifacts, "train_artifact", lambda run, task, *a, **k: trained.append(task)
    )
    cfg = make_cfg(
        "+experiment=sing_zero",
        "dataset=image_folder",
        f"dataset.root={bad}",
        "dataset.image_size=32",
        "jscc.checkpoint=auto",
    )
    with pytest.raises(ConfigError, match=r"dataset\.root.*no readable images"):
        tasks.restore_task(validate(cfg), [])
    assert trained == []
