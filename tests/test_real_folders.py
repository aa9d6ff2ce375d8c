"""Real image folders, second round: a test-only folder restores, a file shared by two
splits is caught, every model a run uses (codec, INN, prior) is checked against the tested data,
tiny training is warned, the paper's ratios are named at 256 px, and the printed table marks
where the trivial baseline wins.

Every folder is generated here (flat colours, crops of the photographs scikit-image ships).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from conftest import run_cli
from singexp import tasks
from singexp.callbacks import TrainingSizeCheck, tiny_training_note, training_notes
from singexp.config import validate
from singexp.data import ImageFolderDataModule
from singexp.data.base import indexed_data, training_split
from singexp.errors import ConfigError
from singexp.models.prior import TRAINING_RECORD, prior_trained_on
from singexp.models.provenance import trained_elsewhere, trained_on
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import mean_image_baseline, mean_image_or_skip
from singexp.preflight import preflight
from singexp.printing import TRIVIAL_WINS, print_method_table
from singexp.quick import apply_quick
from singexp.state import RunState
from singexp.trainers import build_callbacks, build_trainer

SHAPES_WARNING = "was trained on 'shapes', this run tests on 'image_folder'"


def solid(path: Path, colour: tuple[int, int, int], size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def colours(n: int) -> list[tuple[int, int, int]]:
    return [(10 + 15 * i, 200 - 10 * i, (37 * i) % 256) for i in range(n)]


def photo_folder(root: Path, n: int) -> Path:
    """``n`` 64×64 crops of scikit-image's photographs (a face among them) as PNGs."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(n):
        photo = photos[i % len(photos)]
        top, left = 40 * (i // len(photos)), 60 * (i // len(photos))
        crop = photo[top : top + 256, left : left + 256]
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).resize((64, 64)).save(root / f"photo{i:02d}.png")
    return root


# ---- a test-only folder restores with the shipped models ---------------------------------------
@pytest.mark.slow
def test_test_only_folder_restores_with_shipped_models_and_names_all_three(
    tmp_path: Path,
) -> None:
    photo_folder(tmp_path / "faces" / "test", 8)
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=sing_inn",
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'faces'}",
        "dataset.image_size=32",
        "quick=true",
        "logger=none",
        "print_config=false",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    # each warning said once on the console (logged, not printed again under the table)
    said = [line for line in out.splitlines() if SHAPES_WARNING in line]
    keys = ("jscc.checkpoint", "inn.checkpoint", "prior.source")
    assert [next(k for k in keys if f"{k} (" in line) for line in said] == list(keys)
    # a test-only folder: the fix is a model trained on data like it, not training here
    assert all("a test-only data set" in line for line in said)
    assert sum("mean-image baseline skipped" in line for line in out.splitlines()) == 1
    results = json.loads((run / "metrics.json").read_text())
    assert sum(SHAPES_WARNING in w for w in results["warnings"]) == 3
    assert results["trained_on"] == {"jscc": "shapes", "inn": "shapes", "prior": "shapes"}
    assert set(results["methods"]) == {"deepjscc", "sing_zero", "sing_inn"}  # no mean image
    assert all(m["images"] == 8 for m in results["methods"].values())
    grid = Image.open(run / "grid.png")
    assert grid.width > 8 * 32  # eight test images, one column each


def test_mean_image_is_the_training_mean_or_skipped_with_the_reason(tmp_path: Path) -> None:
    for i, colour in enumerate(colours(4)):
        solid(tmp_path / "only" / "test" / f"t{i}.png", colour)
    test_only = ImageFolderDataModule(root=tmp_path / "only", image_size=16, min_test_images=1)
    mean, why = mean_image_or_skip(test_only)
    assert mean is None and why is not None and "no training images" in why
    assert mean_image_baseline(test_only) == {}
    # with a train split: the train images' mean, never the test images'
    for i in range(6):
        solid(tmp_path / "both" / "train" / f"a{i}.png", (200 - i, 0, 0) if i % 2 else (0, 0, i))
    solid(tmp_path / "both" / "test" / "b.png", (0, 255, 0))
    both = ImageFolderDataModule(
        root=tmp_path / "both", image_size=16, min_test_images=1, val_dir=None, val_fraction=0.2
    )
    mean, why = mean_image_or_skip(both)
    assert why is None and mean is not None
    train = torch.stack([both.train_dataset[i] for i in range(len(both.train_dataset))])
    torch.testing.assert_close(mean, train.mean(0), atol=1e-6, rtol=0)


def test_settings_that_need_training_images_name_the_fix_on_a_test_only_folder(
    tmp_path: Path,
) -> None:
    for i, colour in enumerate(colours(4)):
        solid(tmp_path / "test" / f"t{i}.png", colour)
    dm = ImageFolderDataModule(root=tmp_path, image_size=16, min_test_images=1)
    with pytest.raises(ConfigError, match=r"dataset\.root: operator=fitted needs training"):
        training_split(dm, "operator=fitted")


# ---- train/test overlap --------------------------------------------------------------------------
def _train_test(root: Path) -> None:
    for i, colour in enumerate(colours(6)):
        solid(root / "train" / f"a{i}.png", colour)
    for i, colour in enumerate(colours(10)[6:]):
        solid(root / "test" / f"b{i}.png", colour)


def test_a_test_file_linked_or_copied_into_train_is_an_error_naming_both(tmp_path: Path) -> None:
    _train_test(tmp_path)
    ImageFolderDataModule(root=tmp_path, image_size=16, min_test_images=1).setup()  # distinct
    (tmp_path / "train" / "link.png").symlink_to(tmp_path / "test" / "b0.png")
    shutil.copy(tmp_path / "test" / "b2.png", tmp_path / "train" / "copy.png")
    with pytest.raises(ConfigError) as error:
        ImageFolderDataModule(root=tmp_path, image_size=16, min_test_images=1).setup()
    text = str(error.value)
    assert text.startswith("dataset.split_overlap: 2 files")
    assert "train/link.png" in text and "test/b0.png" in text
    assert "train/copy.png" in text and "test/b2.png" in text
    assert "test/b1.png" not in text  # only the shared ones are named


def test_overlap_in_a_split_by_sorted_path_is_caught_too(tmp_path: Path) -> None:
    for i, colour in enumerate(colours(12)):
        solid(tmp_path / f"{i:02d}.png", colour)
    # holdout tail: the last files of the sorted list are the test split (11.png among them)
    shutil.copy(tmp_path / "11.png", tmp_path / "00_copy.png")  # sorts first: train
    dm = ImageFolderDataModule(
        root=tmp_path, image_size=16, min_test_images=1, test_fraction=0.2, holdout="tail"
    )
    with pytest.raises(ConfigError, match=r"split_overlap: 1 file .*00_copy\.png \(train\)"):
        dm.setup()


def test_split_overlap_warn_runs_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _train_test(tmp_path)
    (tmp_path / "train" / "link.png").symlink_to(tmp_path / "test" / "b0.png")
    with caplog.at_level(logging.WARNING, logger="singexp.data"):
        dm = ImageFolderDataModule(
            root=tmp_path, image_size=16, min_test_images=1, split_overlap="warn"
        )
        dm.setup()
    said = [r.getMessage() for r in caplog.records if "two splits" in r.getMessage()]
    assert len(said) == 1 and "train/link.png" in said[0] and "not of held-out" in said[0]
    assert len(dm.files("test")) == 4
    with pytest.raises(ConfigError, match=r"dataset\.split_overlap: must be one of"):
        ImageFolderDataModule(root=tmp_path, image_size=16, split_overlap="ignore")


def test_a_folder_that_cannot_be_used_fails_before_the_loggers_start(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "faces"
    _train_test(root)
    (root / "train" / "link.png").symlink_to(root / "test" / "b0.png")
    started: list[Any] = []
    monkeypatch.setattr(tasks, "build_loggers", lambda *a: started.append(a) or [])
    # run() sets torch's thread count for the process; keep this pytest process's own
    monkeypatch.setattr(tasks, "apply_thread_policy", lambda setting: torch.get_num_threads())
    cfg = make_cfg(
        "+experiment=sing_zero",
        "sampler=none",
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=32",
        "print_config=false",
    )
    with pytest.raises(ConfigError, match="split_overlap"):
        tasks.run(cfg)
    assert started == []
    assert not (tmp_path / "config.yaml").exists()


# ---- every model's training data -----------------------------------------------------------------
def test_the_prior_records_its_training_data(tmp_path: Path) -> None:
    assert prior_trained_on("embedded") == "shapes"  # the shipped prior's record
    assert prior_trained_on("google/ddpm-ema-celebahq-256") == "celebahq"  # presets: known
    assert prior_trained_on("ddpm_cifar10_32") == "cifar10"
    folder = tmp_path / "mine"
    folder.mkdir()
    assert prior_trained_on(folder) is None  # records nothing: unknown, never guessed
    assert prior_trained_on(folder, declared="ffhq") == "ffhq"  # prior.trained_on
    (folder / TRAINING_RECORD).write_text(json.dumps({"dataset": "tinyimagenet"}))
    assert prior_trained_on(folder) == "tinyimagenet"
    (folder / TRAINING_RECORD).write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"prior\.source: .*singexp\.json"):
        prior_trained_on(folder)


def test_a_prior_trained_elsewhere_is_warned_about_like_the_codec(
    make_cfg: Callable[..., DictConfig],
) -> None:
    torch.manual_seed(0)
    codec = DeepJSCCModule(bcr="1/192", image_size=32, latent_channels=8, width=8, dataset="faces")
    prior = "prior.source=google/ddpm-ema-celebahq-256"
    run = validate(make_cfg("dataset.content=faces", prior))
    models = trained_on(codec, None, "google/ddpm-ema-celebahq-256")
    assert models == {"jscc": "faces", "prior": "celebahq"}
    (warning,) = trained_elsewhere(run, models)
    assert warning.startswith(
        "prior.source (google/ddpm-ema-celebahq-256) was trained on 'celebahq', this run tests "
        "on 'faces'"
    )
    assert warning.endswith("(train on this data: prior.source=auto)")
    same = validate(make_cfg("dataset.content=celebahq", prior))
    assert [w.split(" (")[0] for w in trained_elsewhere(same, models)] == ["jscc.checkpoint"]


def test_a_folder_declaring_its_content_is_compared_by_content_not_config_name(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    models = {"jscc": "celebahq", "prior": "celebahq"}
    folder = ("dataset=image_folder", f"dataset.root={tmp_path}")
    declared = validate(make_cfg(*folder, "dataset.content=celebahq"))
    assert declared.data.content == "celebahq" and declared.data_content == "celebahq"
    assert trained_elsewhere(declared, models) == []  # CelebA-HQ faces: no mismatch
    shapes = {"jscc": "shapes", "prior": "shapes"}
    warned = trained_elsewhere(declared, shapes)  # the shapes prior still warns
    assert [w.split(" (")[0] for w in warned] == ["jscc.checkpoint", "prior.source"]
    assert "this run tests on 'celebahq'" in warned[0]
    undeclared = validate(make_cfg(*folder))  # null: the config name is all there is
    assert undeclared.data.content is None and undeclared.data_content == "image_folder"
    assert len(trained_elsewhere(undeclared, models)) == 2


@pytest.mark.parametrize(
    ("preset", "content"),
    [
        ("celebahq", "celebahq"),
        ("ffhq", "ffhq"),
        ("tinyimagenet", "tinyimagenet"),
        ("shapes", "shapes"),
        ("photos", "photos"),
        ("image_folder", None),
    ],
)
def test_dataset_presets_say_their_content(
    make_cfg: Callable[..., DictConfig], preset: str, content: str | None
) -> None:
    cfg = make_cfg(f"dataset={preset}")
    assert cfg.dataset.content == content
    assert validate(cfg).data.content == content


# ---- tiny training -------------------------------------------------------------------------------
def test_tiny_training_note_names_what_is_small() -> None:
    note = tiny_training_note("the DeepJSCC codec", 14, 100, 6, 100)
    assert note is not None and "\n" not in note
    assert note.startswith(
        "the DeepJSCC codec is trained on 14 images (< dataset.min_train_images=100) for 6 "
        "optimiser steps (< min_train_steps=100)"
    )
    only_steps = tiny_training_note("the prior", 5000, 100, 1, 100)
    assert only_steps is not None and only_steps.startswith("the prior is trained on 1 optimiser")
    assert tiny_training_note("x", 100, 100, 100, 100) is None  # at the thresholds: fine
    assert tiny_training_note("x", 1, 0, 1, 0) is None  # 0 turns both off


def _fit_codec(cfg: DictConfig) -> list[str]:
    run = validate(cfg)
    trainer = build_trainer(run, [])
    datamodule = indexed_data(run)
    torch.manual_seed(0)
    codec = DeepJSCCModule(bcr="1/48", image_size=32, latent_channels=4, width=8)
    trainer.fit(codec, datamodule=datamodule)
    return training_notes(trainer.callbacks)


def test_training_on_a_tiny_split_warns_in_one_line(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    root = tmp_path / "faces"
    for i, colour in enumerate(colours(14)):
        solid(root / "train" / f"a{i:02d}.png", colour)
    solid(root / "test" / "b.png", (1, 2, 3))
    base = (
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=32",
        "dataset.min_test_images=1",
        "trainer.max_epochs=2",
        "logger=none",
    )
    (note,) = _fit_codec(make_cfg(*base))
    # 14 files, 1 carved out for validation; batch 16: one step per epoch
    assert note.startswith(
        "the DeepJSCC codec is trained on 13 images (< dataset.min_train_images=100) for 2 "
        "optimiser steps (< min_train_steps=100)"
    )
    assert _fit_codec(make_cfg(*base, "dataset.min_train_images=0", "min_train_steps=0")) == []
    quick = make_cfg(*base, "quick=true")
    apply_quick(quick)  # a quick run is tiny by request
    assert quick.min_train_steps == 0 and quick.dataset.min_train_images == 0
    assert any(isinstance(cb, TrainingSizeCheck) for cb in build_callbacks(validate(quick)))


def test_min_train_images_must_be_a_count(tmp_path: Path) -> None:
    solid(tmp_path / "test" / "a.png", (1, 2, 3))
    with pytest.raises(ConfigError, match=r"dataset\.min_train_images: must be an integer >= 0"):
        ImageFolderDataModule(root=tmp_path, image_size=16, min_train_images=-1)


# ---- the paper's ratios at 256 px ----------------------------------------------------------------
def test_paper_ratios_named_at_256_px(make_cfg: Callable[..., DictConfig]) -> None:
    from singexp.bcr import paper_ratio_note

    note = paper_ratio_note(Fraction(1, 48), 256)
    assert note == (
        "bcr 1/48 is not one of the paper's ratios at 256 px (1/768, 1/384, 1/192); for the "
        "paper's setting sweep bcr=1_768,1_384,1_192 (-m)"
    )
    assert paper_ratio_note(Fraction(1, 192), 256) is None
    assert paper_ratio_note(Fraction(1, 48), 32) is None  # the embedded grid's ratio at 32 px
    cfg = make_cfg("bcr=1_48", "dataset.image_size=256")
    v = validate(cfg)
    state = RunState()
    assert preflight(v, state) == [note]
    assert state.warnings == [note]  # printed under a restoration's table
    assert preflight(v, state) == [] and state.warnings == [note]  # once per run
    paper = make_cfg("bcr=1_192", "dataset.image_size=256")
    state = RunState()
    assert preflight(validate(paper), state) == [] and state.warnings == []


# ---- the trivial baseline's wins marked ----------------------------------------------------------
def _results(methods: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        "dataset": "image_folder",
        "channel": "awgn",
        "snr_db": 0.0,
        "bcr": "1/48",
        "methods": {k: {**v, "images": 8} for k, v in methods.items()},
    }


def _cells(out: str, row: str) -> list[str]:
    (line,) = [line for line in out.splitlines() if line.strip("│ ").startswith(row)]
    return [cell.strip() for cell in line.split("│")[2:-1]]


def test_cells_where_the_mean_image_wins_are_marked(capsys: pytest.CaptureFixture[str]) -> None:
    print_method_table(
        _results(
            {
                "deepjscc": {"psnr": 16.0, "stlpips": 0.50, "swd": 120.0},
                "sing_zero": {"psnr": 12.0, "stlpips": 0.40, "swd": 200.0},
                "mean_image": {"psnr": 14.0, "stlpips": 0.45, "swd": 150.0},
            }
        )
    )
    out = capsys.readouterr().out
    # columns: PSNR (higher is better), ST-LPIPS ↓, SWD ↓
    assert _cells(out, "deepjscc") == ["16.00", f"0.5000 {TRIVIAL_WINS}", "120.00"]
    assert _cells(out, "sing_zero") == [f"12.00 {TRIVIAL_WINS}", "0.4000", f"200.00 {TRIVIAL_WINS}"]
    assert _cells(out, "mean image (trivial)") == ["14.00", "0.4500", "150.00"]
    assert f"{TRIVIAL_WINS} the mean image (the trivial baseline" in out


def test_no_mark_without_a_win_or_without_the_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    print_method_table(
        _results({"deepjscc": {"psnr": 16.0}, "mean_image": {"psnr": 11.0, "seconds": 0.0}})
    )
    print_method_table(_results({"deepjscc": {"psnr": 6.0}}))
    out = capsys.readouterr().out
    assert TRIVIAL_WINS not in out


# ---- a test-only folder cannot train auto models -------------------------------------------------
def test_a_test_only_folder_with_auto_models_fails_in_preflight_naming_the_key(
    tmp_path: Path,
) -> None:
    for i, colour in enumerate(colours(4)):
        solid(tmp_path / "only" / "test" / f"t{i}.png", colour)
    start = time.monotonic()
    result = run_cli(
        "+experiment=sing_zero",
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'only'}",
        "dataset.image_size=32",
        "jscc.checkpoint=auto",
        "logger=none",
        "print_config=false",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("singexp: error: jscc.checkpoint: auto trains a model on this data")
    assert "test-only folder" in lines[0] and "jscc.checkpoint=PATH" in lines[0]
    assert "add train/ and val/ folders" in lines[0] and "val split" not in lines[0]
    assert time.monotonic() - start < 30  # no training set up first (it took ~40 s)
    assert not list(tmp_path.rglob("jscc"))  # no stub artifact folder, no lock


def test_auto_keys_on_a_test_only_folder_are_refused_a_folder_with_train_images_is_not(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    for i, colour in enumerate(colours(4)):
        solid(tmp_path / "test" / f"t{i}.png", colour)
    args = ("+experiment=sing_inn", "dataset=image_folder", f"dataset.root={tmp_path}")
    size = "dataset.image_size=32"
    run = validate(make_cfg(*args, size, "prior.source=auto", "jscc.checkpoint=embedded"))
    with pytest.raises(ConfigError, match=r"^prior\.source: auto trains .* test-only folder"):
        preflight(run)
    shipped = validate(make_cfg(*args, size))  # the shipped models: a test-only folder is fine
    preflight(shipped)
    solid(tmp_path / "beside.png", colours(5)[4])  # an image beside test/: it trains
    preflight(validate(make_cfg(*args, size, "prior.source=auto", "jscc.checkpoint=embedded")))
