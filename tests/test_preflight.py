"""Checks before training: every config check that needs no training
fails before any ``auto`` codec, INN or prior trains, as one line naming the key, both sizes
and the fix; one size key (``dataset.image_size``); step-bounded runs show steps, not epochs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import lightning as L
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from conftest import run_cli
from singexp import progress, tasks
from singexp.config import ASSETS_DIR, validate
from singexp.errors import ConfigError
from singexp.models import inn as models_inn
from singexp.models import jscc as models_jscc
from singexp.models import prior as models_prior
from singexp.models.prior import check_prior_source

CODEC_1_768 = ASSETS_DIR / "jscc_shapes32" / "jscc_1_768.safetensors"
INN_1_768 = ASSETS_DIR / "inn_shapes32" / "inn_1_768.safetensors"


def faces(root: Path, n: int = 6, size: int = 300) -> Path:
    """A folder of ``n`` distinct generated PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (20 + 30 * i, 120, 220 - 25 * i)).save(root / f"{i}.png")
    return root


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every auto artifact a task asks to train (and trains none)."""
    trained: list[str] = []

    def fake(cfg: DictConfig, task: str, *args: Any, **kwargs: Any) -> Path:
        trained.append(task)
        raise AssertionError(f"{task} artifact trained before the preflight failed")

    for kind in (models_jscc, models_inn, models_prior):  # each asks for its model by name
        monkeypatch.setattr(kind, "train_artifact", fake)
    return trained


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


# ---- item 1: checks before training ----------------------------------------------------------
@pytest.mark.slow
def test_256px_run_with_a_missing_prior_fails_fast_before_any_training(tmp_path: Path) -> None:
    root = faces(tmp_path / "faces")
    run, artifacts = tmp_path / "run", tmp_path / "artifacts"
    result = run_cli(
        "+experiment=sing_inn",
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=256",
        "prior=ddpm_ema_celebahq_256",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        f"hydra.run.dir={run}",
        f"paths.artifacts={artifacts}",
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf_home")},
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    # "fails fast" is asserted by what did not happen (no training folder, below), not by a
    # wall time (which doubles on a loaded machine)
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error")]
    assert len(errors) == 1 and errors[0].startswith("singexp: error: prior.source: "), output
    assert "google/ddpm-ema-celebahq-256 not found locally" in errors[0]
    assert output.count("not found locally") == 1  # printed once
    assert "Traceback" not in output
    assert not artifacts.exists()  # no codec, INN or prior trained
    for name in ("checkpoints", "csv", "wandb", "metrics.json"):
        assert not (run / name).exists(), name


def test_missing_preset_prior_fails_before_the_auto_codec_trains(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    no_training: list[str],
    empty_hf_cache: Path,
) -> None:
    cfg = make_cfg(
        "+experiment=sing_zero",
        "dataset=image_folder",
        f"dataset.root={faces(tmp_path / 'faces')}",
        "dataset.image_size=32",
        "prior=ddpm_cifar10_32",
        "jscc.checkpoint=auto",
    )
    with pytest.raises(ConfigError, match=r"^prior\.source: google/ddpm-cifar10-32 not found"):
        tasks.restore_task(validate(cfg), [])
    assert no_training == []


def test_auto_prior_of_another_size_fails_before_codec_training(
    make_cfg: Callable[..., DictConfig], no_training: list[str]
) -> None:
    cfg = make_cfg(
        "+experiment=sing_inn",
        "dataset.image_size=64",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        "prior.source=auto",
        "prior.image_size=32",
    )
    with pytest.raises(ConfigError) as error:
        tasks.restore_task(validate(cfg), [])
    assert str(error.value) == (
        "prior.image_size: is 32 (auto) but dataset.image_size=64; a trained prior follows the "
        "data's size: drop the prior.image_size override or set prior.image_size=64"
    )
    assert no_training == []


def test_bad_inn_key_fails_before_the_auto_codec_trains(
    make_cfg: Callable[..., DictConfig], no_training: list[str]
) -> None:
    # without the preflight, inn.lr is first read by train_inn: after the auto codec's training
    cfg = make_cfg(
        "+experiment=sing_inn", "jscc.checkpoint=auto", "inn.checkpoint=auto", "inn.lr=-0.001"
    )
    with pytest.raises(ConfigError) as error:
        tasks.restore_task(validate(cfg), [])
    assert str(error.value) == "inn.lr: must be > 0, got -0.001"
    assert no_training == []


def test_run_checks_before_the_loggers_start(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, no_training: list[str]
) -> None:
    cfg = make_cfg(
        "+experiment=sing_inn",
        "dataset.image_size=64",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        "prior.source=auto",
        "prior.image_size=32",
        "logger=csv",
    )
    with pytest.raises(ConfigError, match=r"^prior\.image_size: is 32"):
        tasks.run(cfg)
    assert no_training == []
    assert not (tmp_path / "csv").exists() and not (tmp_path / "config.yaml").exists()


def test_auto_models_at_the_data_size_pass_the_preflight(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg(
        "+experiment=sing_inn",
        "dataset.image_size=64",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        "prior.source=auto",
    )
    assert cfg.prior.image_size == 64  # one size key: the trained prior follows the data
    from singexp.preflight import preflight

    preflight(validate(cfg))  # nothing raised


def test_given_codec_of_another_size_fails_before_the_inn_trains(
    make_cfg: Callable[..., DictConfig], no_training: list[str]
) -> None:
    cfg = make_cfg(
        "+experiment=sing_inn",
        "bcr='1_768'",  # the given model's BCR: only its size disagrees
        "dataset.image_size=64",
        f"jscc.checkpoint={CODEC_1_768}",
        "inn.checkpoint=auto",
        "prior.source=auto",
    )
    with pytest.raises(ConfigError) as error:
        tasks.restore_task(validate(cfg), [])
    message = str(error.value)
    assert message.startswith("jscc.checkpoint: jscc_1_768.safetensors was trained for ")
    assert "image_size=32" in message and "dataset.image_size=64" in message
    assert "set dataset.image_size=32" in message
    assert no_training == []


def test_given_inn_of_another_size_fails_before_the_codec_trains(
    make_cfg: Callable[..., DictConfig], no_training: list[str]
) -> None:
    cfg = make_cfg(
        "+experiment=sing_inn",
        "bcr='1_768'",  # the given model's BCR: only its size disagrees
        "dataset.image_size=64",
        "jscc.checkpoint=auto",
        f"inn.checkpoint={INN_1_768}",
        "prior.source=auto",
    )
    with pytest.raises(ConfigError) as error:
        tasks.restore_task(validate(cfg), [])
    message = str(error.value)
    assert message.startswith("inn.checkpoint: inn_1_768.safetensors was trained for ")
    assert "image_size=32" in message and "dataset.image_size=64" in message
    assert no_training == []


def test_inn_task_indexes_the_folder_before_the_auto_codec_trains(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, no_training: list[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("not an image")
    cfg = make_cfg(
        "+experiment=train_inn",
        "dataset=image_folder",
        f"dataset.root={bad}",
        "dataset.image_size=32",
        "jscc.checkpoint=auto",
    )
    with pytest.raises(ConfigError, match=r"dataset\.root"):
        tasks.TASKS["inn"](validate(cfg), [])
    assert no_training == []


def test_auto_codec_in_a_jscc_run_says_to_train_with_null(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("jscc.checkpoint=auto")
    with pytest.raises(ConfigError, match=r"^jscc\.checkpoint: auto is .*jscc\.checkpoint=null"):
        tasks.TASKS["jscc"](validate(cfg), [])


# ---- item 3: one size key, mismatches with shipped or preset models ---------------------------
def test_first_folder_command_says_what_to_set(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg("+experiment=sing_inn", "dataset=image_folder", f"dataset.root={tmp_path}")
    with pytest.raises(ConfigError) as error:
        validate(cfg)  # before the data is indexed or anything is built
    assert str(error.value) == (
        "dataset.image_size: is 64 but the shipped models (jscc.checkpoint=embedded, "
        "inn.checkpoint=embedded, prior.source=embedded) are 32 px; set dataset.image_size=32 "
        "to use them, or jscc.checkpoint=auto inn.checkpoint=auto prior.source=auto to train "
        "them at 64 px on this data"
    )


def test_shipped_size_message_names_only_the_models_in_use(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("+experiment=sing_zero", "dataset.image_size=64", "jscc.checkpoint=auto")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == (
        "dataset.image_size: is 64 but the shipped model (prior.source=embedded) is 32 px; set "
        "dataset.image_size=32 to use it, or prior.source=auto to train one at 64 px on this data"
    )
    cfg = make_cfg("jscc.checkpoint=embedded", "dataset.image_size=64")  # task jscc
    with pytest.raises(ConfigError, match=r"or jscc\.checkpoint=null to train one at 64 px"):
        validate(cfg)
    validate(make_cfg("+experiment=sing_inn"))  # 32 px: the shipped models fit


def test_preset_prior_of_another_size_names_both_sizes(
    make_cfg: Callable[..., DictConfig], no_training: list[str]
) -> None:
    cfg = make_cfg(
        "+experiment=sing_zero",
        "dataset.image_size=64",
        "jscc.checkpoint=auto",
        "prior=ddpm_ema_celebahq_256",
    )
    assert cfg.prior.image_size == 256  # the weights fix a preset's size
    with pytest.raises(ConfigError) as error:
        tasks.restore_task(validate(cfg), [])
    assert str(error.value) == (
        "prior.image_size: is 256 (google/ddpm-ema-celebahq-256) but dataset.image_size=64; "
        "set dataset.image_size=256 or choose a prior of 64 px (prior.source=auto trains one "
        "on this data)"
    )
    assert no_training == []


def _cache_preset(cache: Path, repo: str, sample_size: int, weights: bool = True) -> None:
    """A Hugging Face cache entry for ``repo`` as ``hf download`` leaves it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("abc123")
    config = {"sample_size": sample_size, "in_channels": 3, "out_channels": 3}
    (snapshot / "config.json").write_text(json.dumps(config))
    if weights:
        (snapshot / "diffusion_pytorch_model.safetensors").write_bytes(b"")


def test_preset_found_in_the_cache_is_checked_without_loading(empty_hf_cache: Path) -> None:
    _cache_preset(empty_hf_cache, "google/ddpm-cifar10-32", 32)
    assert check_prior_source("google/ddpm-cifar10-32", expected_size=32) == (
        "google/ddpm-cifar10-32"
    )
    with pytest.raises(ConfigError) as error:
        check_prior_source("ddpm_cifar10_32", expected_size=64)
    assert str(error.value) == (
        "prior.source: google/ddpm-cifar10-32 generates 32x32 images but dataset.image_size=64; "
        "set dataset.image_size=32 or choose a prior of 64 px (prior.source=auto trains one on "
        "this data)"
    )
    _cache_preset(empty_hf_cache, "google/ddpm-celebahq-256", 256, weights=False)
    with pytest.raises(ConfigError, match=r"google/ddpm-celebahq-256 not found locally"):
        check_prior_source("google/ddpm-celebahq-256", expected_size=256)


def test_local_prior_folder_without_weights_fails(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 32}))
    with pytest.raises(ConfigError, match=r"^prior\.source: .*unet holds a UNet config"):
        check_prior_source(tmp_path, expected_size=32)
    assert check_prior_source("embedded", expected_size=32) == "embedded"


# ---- item 7: a step-bounded run shows steps, not "Epoch 19/-2" --------------------------------
class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return ((batch - self.w) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_steps(bar: Any, steps: int = 5) -> None:
    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)  # 2 steps per epoch
    trainer = L.Trainer(
        logger=False,
        callbacks=[bar],
        enable_checkpointing=False,
        enable_model_summary=False,
        max_epochs=-1,
        max_steps=steps,
    )
    trainer.fit(_Tiny(), data)


def test_line_progress_of_a_step_bounded_run_counts_steps(capsys: pytest.CaptureFixture) -> None:
    _fit_steps(progress.LineProgressBar())
    err = capsys.readouterr().err
    assert "step 5/5" in err
    assert "/-2" not in err and "epoch" not in err.lower()


def test_rich_progress_of_a_step_bounded_run_is_one_bar_of_max_steps() -> None:
    bar = progress.StepProgressBar()
    _fit_steps(bar)
    train = bar.progress.tasks[bar.train_progress_bar_id]
    assert train.total == 5 and train.completed == 5  # one bar over 3 epochs, never reset
    assert train.description.strip().endswith("Step")
    assert "/-2" not in train.description
