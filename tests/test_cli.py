"""The real entry point, run as a user would (subprocesses, a few seconds each)."""

import json
from pathlib import Path

import pytest

from conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def _one_line_error(result, key: str) -> None:  # type: ignore[no-untyped-def]
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error:")]
    assert len(errors) == 1, out
    assert errors[0].startswith(f"singexp: error: {key}"), errors[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fast training run at BCR 1/192, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("run")
    result = run_cli(
        "+experiment=jscc",
        "bcr=1_192",
        "channel.snr_db=0",
        *FAST,
        "callbacks=default",
        # enough training that the codec depends on the channel (about 15 s)
        "trainer.limit_train_batches=40",
        "dataset.train_size=1280",
        "dataset.batch_size=32",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def test_jscc_run_writes_metrics_and_checkpoints(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["bcr"] == "1/192" and metrics["snr_db"] == 0.0 and metrics["dataset"] == "shapes"
    test = metrics["test"]
    for key in ("psnr", "ssim", "stlpips", "swd"):
        assert isinstance(test[key], float), key
    assert test["stlpips"] >= 0
    # LPIPS is a number or explicitly missing, with the reason recorded
    assert test["lpips"] is None or isinstance(test["lpips"], float)
    if test["lpips"] is None:
        assert "lpips" in metrics["metric_status"]
    assert metrics["perceptual_size"] == 64
    assert (trained_run / "config.yaml").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["channel.snr_db=abc"], "channel.snr_db"),
        (["bcr.ratio=0"], "bcr.ratio"),
        (["bcr.ratio=1.5"], "bcr.ratio"),
        (["bcr.ratio=0.004"], "bcr.ratio"),
        (["dataset=mnist"], "dataset"),
        (["dataset=celebahq"], "dataset.root"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], key: str) -> None:
    result = run_cli("+experiment=jscc", *args, *FAST, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    _one_line_error(result, key)


def test_empty_image_folder_is_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(
        "+experiment=jscc",
        "dataset=image_folder",
        f"dataset.root={empty}",
        "dataset.image_size=32",
        *FAST,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    _one_line_error(result, "dataset.root")


def test_checkpoint_for_another_bcr_is_one_line_error(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_cli(
        "+experiment=jscc",
        "bcr=1_768",
        f"jscc.checkpoint={ckpt}",
        *FAST,
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    _one_line_error(result, "jscc.checkpoint")
    assert "bcr=1/192" in result.stderr


def test_checkpoint_is_tested_at_another_snr(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    low = run_cli(
        "+experiment=jscc",
        f"jscc.checkpoint={ckpt}",
        "channel.snr_db=-10",
        *FAST,
        f"hydra.run.dir={tmp_path / 'low'}",
        cwd=tmp_path,
    )
    high = run_cli(
        "+experiment=jscc",
        f"jscc.checkpoint={ckpt}",
        "channel.snr_db=20",
        *FAST,
        f"hydra.run.dir={tmp_path / 'high'}",
        cwd=tmp_path,
    )
    assert low.returncode == 0 and high.returncode == 0, low.stderr[-2000:] + high.stderr[-2000:]
    psnr_low = json.loads((tmp_path / "low" / "metrics.json").read_text())["test"]["psnr"]
    psnr_high = json.loads((tmp_path / "high" / "metrics.json").read_text())["test"]["psnr"]
    assert psnr_high > psnr_low


def test_wandb_without_network_writes_offline_run(tmp_path: Path) -> None:
    # no mode forced, no credentials (empty HOME: no ~/.netrc), an unreachable host
    env: dict[str, str | None] = {
        "WANDB_MODE": None,
        "WANDB_API_KEY": None,
        "HOME": str(tmp_path),
        "WANDB_BASE_URL": "http://127.0.0.1:9",
    }
    result = run_cli(
        "+experiment=jscc",
        *FAST,
        "logger=wandb",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "W&B runs offline" in result.stdout + result.stderr
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads((runs[0] / "files" / "metrics.json").read_text()) == metrics
    # the run's own record (synced by `wandb sync`) holds the logged metrics
    (record,) = runs[0].glob("run-*.wandb")
    assert b"final/psnr" in record.read_bytes() and b"test/stlpips" in record.read_bytes()
