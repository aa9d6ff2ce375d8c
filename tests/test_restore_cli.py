"""`python -m singexp +experiment=sing_zero` end to end on the shipped embedded weights."""

import csv
import json
from pathlib import Path

import pytest

from conftest import assert_grid_png, run_cli
from singexp.nn.unet import build_unet

pytestmark = pytest.mark.slow

BASE = ["dataset.test_size=8", "dataset.batch_size=8", "print_config=false", "logger=none"]
QUICK = ["sampler.steps=5", "sampler.progress=false", *BASE]
METHODS = [
    f"methods.{m}.{k}" for m in ("sing_zero", "sing_inn") for k in ("steps=5", "progress=false")
]


def test_sing_zero_run_writes_table_grid_and_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("+experiment=sing_zero", *QUICK, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # the trivial baseline row (mean training image) beside the methods
    assert list(metrics["methods"]) == ["deepjscc", "sing_zero", "mean_image"]
    for summary in metrics["methods"].values():
        assert isinstance(summary["psnr"], float) and isinstance(summary["stlpips"], float)
        assert summary["images"] == 8
    # consistency with what was received, through A: DDNM at σ_y = 0 keeps A x̂
    assert metrics["methods"]["sing_zero"]["psnr_A_xhat"] > 40
    assert metrics["methods"]["mean_image"]["psnr_A_xhat"] < 30
    assert "psnr_A_xhat" not in metrics["methods"]["deepjscc"]
    assert metrics["bcr"] == "1/48"  # the main job's point
    assert metrics["operator"] == {"name": "avgpool", "scale": 4}
    with open(run / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 24  # 8 images × (DeepJSCC, SING-Zero, mean)
    assert_grid_png(run / "grid.png", rows=3, cols=8, size=32)  # original, DeepJSCC, SING-Zero
    # the printed method × metric table
    assert "sing_zero" in result.stdout and "ST-LPIPS" in result.stdout


def test_sampler_none_evaluates_deepjscc_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=sing_zero", "sampler=none", *BASE, f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    methods = json.loads((run / "metrics.json").read_text())["methods"]
    assert set(methods) == {"deepjscc", "mean_image"}


def test_prior_of_another_image_size_is_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "prior16"
    build_unet(16, block_out_channels=(8, 16)).save_pretrained(folder)
    result = run_cli(
        "+experiment=sing_zero",
        f"prior.source={folder}",
        *QUICK,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error:")]
    assert len(errors) == 1 and errors[0].startswith("singexp: error: prior.source")


def test_sing_inn_main_job_compares_three_methods(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*METHODS, *BASE]
    result = run_cli("+experiment=sing_inn", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["deepjscc", "sing_zero", "sing_inn", "mean_image"]
    assert metrics["inn_checkpoint"].endswith("inn_1_48.safetensors")  # the main job: 1/48
    for summary in metrics["methods"].values():
        assert isinstance(summary["psnr"], float) and isinstance(summary["swd"], float)
    with open(run / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 32
    assert "sing_inn" in result.stdout


def test_inn_for_another_bcr_is_one_line_error(tmp_path: Path) -> None:
    inn_192 = "src/singexp/assets/inn_shapes32/inn_1_192.safetensors"
    root = Path(__file__).resolve().parents[1]
    result = run_cli(
        "+experiment=sing_inn",
        f"inn.checkpoint={root / inn_192}",
        *METHODS,
        *BASE,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error:")]
    assert len(errors) == 1 and errors[0].startswith("singexp: error: inn.checkpoint")


def test_training_tasks_for_the_inn_and_the_prior(tmp_path: Path) -> None:
    inn = run_cli(
        "+experiment=train_inn",
        "debug=fast",
        "trainer.max_epochs=1",
        "logger=none",
        "print_config=false",
        f"hydra.run.dir={tmp_path / 'inn'}",
        cwd=tmp_path,
    )
    assert inn.returncode == 0, inn.stderr[-3000:]
    metrics = json.loads((tmp_path / "inn" / "metrics.json").read_text())
    assert metrics["inn"].endswith("inn.safetensors") and metrics["validation"]["psnr"] > 0
    prior = run_cli(
        "+experiment=train_prior",
        "debug=fast",
        "prior.max_steps=2",
        "prior.val_every=null",
        "prior.grid_size=0",
        "logger=none",
        "print_config=false",
        f"hydra.run.dir={tmp_path / 'prior'}",
        "export_to=" + str(tmp_path / "copy"),
        cwd=tmp_path,
    )
    assert prior.returncode == 0, prior.stderr[-3000:]
    assert (tmp_path / "copy" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "prior" / "checkpoints" / "last.ckpt").is_file()
