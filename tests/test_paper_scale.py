"""The paper's 256 px path: google/ddpm-ema-celebahq-256 found offline in a Hugging
Face cache, the main job on a 256 px image folder at the paper's BCR 1/192, and the tools that
cost it (``benchmarks/paper_scale.py``, ``benchmarks/gpu.sh``).

No weights can be downloaded here, so the prior is the preset's exact architecture
(:data:`singexp.flops.CELEBAHQ_256_UNET`, 113.7 M parameters) with seeded random weights, laid out
as the cache holds a downloaded repository. The end-to-end run takes 1.5-2.5 minutes on 2 CPU
cores (each 256 px UNet call is 497 GFLOP); the other tests take seconds.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_grid_png, requires_no_gpu, run_cli
from singexp.errors import ConfigError
from singexp.flops import CELEBAHQ_256_UNET, celebahq_unet, parameter_count
from singexp.models.prior import load_prior, prior_config

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks are scripts, not a package

import paper_scale  # noqa: E402

REPO = "google/ddpm-ema-celebahq-256"
#: the preset's parameter count (its config.json's architecture)
PARAMETERS = 113_673_219


def fingerprint(unet: Any) -> torch.Tensor:
    """The first convolution's weights as the cache stores them (float16, read back as float32)."""
    return unet.conv_in.weight.detach().to(torch.float16).float().clone()


@pytest.fixture(scope="session")
def paper_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A Hugging Face cache (the folder HF_HUB_CACHE names) holding a random-weight
    google/ddpm-ema-celebahq-256 in float16, built once; and its :func:`fingerprint`."""
    hub = tmp_path_factory.mktemp("hf") / "hub"
    torch.manual_seed(0)
    unet = celebahq_unet(device="cpu")
    paper_scale.write_hf_cache(unet, hub, REPO, dtype=torch.float16)
    return hub, fingerprint(unet)


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point this process's Hugging Face cache at a folder (the constant huggingface_hub reads
    at every lookup: HF_HUB_CACHE is read once, at import)."""
    import huggingface_hub.constants as constants

    def point(hub: Path) -> None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    return point


# ---- the cache layout -------------------------------------------------------------------------
def test_cache_layout_is_what_the_offline_loader_reads(tmp_path: Path, hub_cache: Any) -> None:
    """A UNet laid out by write_hf_cache is the preset for prior_config and load_prior
    (local_files_only): blobs under their sha256, snapshot symlinks, refs/main = the commit."""
    tiny = paper_scale.build_unet(paper_scale.TINY_UNET, seed=3)
    hub = tmp_path / "hub"
    snapshot = paper_scale.write_hf_cache(tiny, hub, REPO)
    repo = hub / "models--google--ddpm-ema-celebahq-256"
    commit = (repo / "refs" / "main").read_text()
    assert snapshot == repo / "snapshots" / commit and len(commit) == 40
    int(commit, 16)  # hexadecimal
    names = {p.name for p in snapshot.iterdir()}
    assert {"config.json", "diffusion_pytorch_model.safetensors"} <= names
    assert all((snapshot / n).is_symlink() for n in names)
    assert {(snapshot / n).resolve().parent for n in names} == {(repo / "blobs").resolve()}

    hub_cache(hub)
    label, config = prior_config("ddpm_ema_celebahq_256")
    assert label == REPO and config["sample_size"] == 64
    loaded = load_prior("ddpm_ema_celebahq_256", expected_size=64)
    assert loaded.dtype == torch.float32  # the float16 file loads into float32
    torch.testing.assert_close(loaded.conv_in.weight, fingerprint(tiny), rtol=0, atol=0)

    hub_cache(tmp_path / "empty")  # the same preset, not in this cache: the one-line error
    with pytest.raises(ConfigError, match="not found locally"):
        prior_config("ddpm_ema_celebahq_256")


@pytest.mark.slow
def test_paper_prior_found_offline_through_the_cache(
    paper_cache: tuple[Path, torch.Tensor], hub_cache: Any
) -> None:
    """prior=ddpm_ema_celebahq_256 resolves to the cached repository: the preset's architecture
    (113.7 M parameters, 256 px), the cached weights, and a size check naming both sizes."""
    hub, weights = paper_cache
    hub_cache(hub)
    label, config = prior_config("ddpm_ema_celebahq_256")
    assert label == REPO
    for key in ("sample_size", "block_out_channels", "down_block_types", "up_block_types"):
        want = CELEBAHQ_256_UNET[key]
        assert config[key] == (list(want) if isinstance(want, tuple) else want), key
    unet = load_prior("ddpm_ema_celebahq_256", expected_size=256)
    assert parameter_count(unet) == PARAMETERS and unet.dtype == torch.float32
    torch.testing.assert_close(unet.conv_in.weight, weights, rtol=0, atol=0)
    assert not any(p.requires_grad for p in unet.parameters())
    with pytest.raises(ConfigError, match=r"256x256 images but dataset\.image_size=64"):
        load_prior("ddpm_ema_celebahq_256", expected_size=64)


# ---- the main job at 256 px -------------------------------------------------------------------
def face_folder(root: Path, train: int = 6, test: int = 2, size: int = 256) -> list[Path]:
    """``root/train`` and ``root/test`` of distinct smooth ``size`` px PNGs (bicubic blow-ups of
    seeded 8×8 colour fields: no two files share content); returns the test files."""
    rng = np.random.default_rng(28)
    files = []
    for split, count in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cells = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            path = root / split / f"{i:02d}.png"
            Image.fromarray(cells).resize((size, size), Image.Resampling.BICUBIC).save(path)
            files.append(path)
    assert len({p.read_bytes() for p in files}) == len(files)
    return [p for p in files if p.parent.name == "test"]


#: every row of the restoration table of +experiment=sing_inn
METHODS = {"deepjscc", "sing_zero", "sing_inn", "mean_image"}


@pytest.mark.slow
def test_main_job_at_256_px_with_the_paper_prior(
    paper_cache: tuple[Path, torch.Tensor], tmp_path: Path
) -> None:
    """``+experiment=sing_inn`` at the paper's setting (256 px, BCR 1/192, the CelebA-HQ prior
    preset from the cache, codec and INN trained for it), smallest settings: every method
    restores both test images at 256 px and the run's files say so."""
    from singexp.models.inn import inn_checkpoint_identity
    from singexp.models.jscc import read_hparams

    hub, _ = paper_cache
    faces = tmp_path / "faces"
    tests = face_folder(faces)
    run_dir = tmp_path / "run"
    done = run_cli(
        "+experiment=sing_inn",
        "dataset=image_folder",
        f"dataset.root={faces}",
        "dataset.image_size=256",
        "bcr=1_192",
        "prior=ddpm_ema_celebahq_256",
        "jscc.checkpoint=auto",
        "inn.checkpoint=auto",
        "methods.sing_zero.steps=2",
        "methods.sing_inn.steps=2",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "dataset.batch_size=2",
        "dataset.test_size=2",
        "dataset.min_test_images=1",
        "dataset.min_train_images=0",
        "min_train_steps=0",
        "evaluate.grid_images=2",
        "logger=none",
        "print_config=false",
        f"paths.artifacts={tmp_path / 'artifacts'}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_HOME": None},
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["methods"]) == METHODS
    assert all(metrics["methods"][m]["images"] == 2 for m in METHODS)
    assert metrics["image_size"] == 256 and metrics["bcr"] == "1/192"
    assert metrics["prior_source"] == REPO and metrics["trained_on"]["prior"] == "celebahq"
    assert {m: metrics["samplers"][m]["steps"] for m in ("sing_zero", "sing_inn")} == {
        "sing_zero": 2,
        "sing_inn": 2,
    }
    # SING-Zero and SING-INN measure with the same A: 8x8 average pooling at 1/192, 256 px
    assert metrics["samplers"]["sing_inn"]["measurement_operator"] == "AveragePool(scale=8)"
    # 1/192 is one of the paper's ratios at 256 px: no "not the paper's ratio" note
    assert not any("not one of the paper's ratios" in w for w in metrics["warnings"])

    with (run_dir / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert Counter(r["method"] for r in rows) == {m: 2 for m in METHODS}
    assert {r["file"] for r in rows} == {f"test/{p.name}" for p in tests}
    # models trained at 256 px, and outputs compared pixel by pixel with 256 px originals (a
    # size mismatch would have failed the metrics): the grid shows 4 rows × 2 images of 256 px
    assert read_hparams(metrics["jscc_checkpoint"])["image_size"] == 256
    inn = inn_checkpoint_identity(metrics["inn_checkpoint"])
    assert inn["image_size"] == 256 and inn["scale"] == 8
    assert inn["jscc_checkpoint"] == metrics["jscc_checkpoint"]  # trained on this run's codec
    assert_grid_png(run_dir / "grid.png", rows=4, cols=2, size=256)


# ---- the benchmark and the GPU script -----------------------------------------------------------
def test_benchmark_quick_run_measures_every_case(tmp_path: Path) -> None:
    """``paper_scale.py --quick`` (the same blocks, narrow): every case timed and its peak
    tensor memory measured; the backward keeps activations that checkpointing drops; JSON and
    Markdown where told, the tracked reference untouched."""
    reference = {p: p.read_bytes() for p in (BENCHMARKS / "results").iterdir()}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paper_scale.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "paper_scale.json").read_text())
    cases = {row["name"]: row for row in report["cases"]}
    assert set(cases) == {
        "fwd_fp32_b1",
        "fwdbwd_fp32_b1",
        "fwdbwd_fp32_b1_ckpt",
        "fwd_fp32_b2",
        "fwdbwd_fp32_b2",
        "fwd_fp32_b1_32px",
        "fwdbwd_fp32_b1_32px",
        "fwd_bf16_b1_32px",
        "fwdbwd_bf16_b1_32px",
    }
    for row in cases.values():
        assert len(row["wall_s"]) == row["repeats"] and min(row["wall_s"]) > 0
        assert row["peak_tensor_mib"] > 0 and len(row["load_average_after"]) == 3
    mib = {name: row["peak_tensor_mib"] for name, row in cases.items()}
    assert mib["fwdbwd_fp32_b1"] > 2 * mib["fwd_fp32_b1"]  # the graph kept for the backward
    assert mib["fwdbwd_fp32_b1_ckpt"] < 0.8 * mib["fwdbwd_fp32_b1"]  # recomputed instead
    assert mib["fwdbwd_fp32_b2"] > 1.5 * mib["fwdbwd_fp32_b1"]  # activations grow with batch
    tiny = paper_scale.build_unet(paper_scale.TINY_UNET, device="meta")
    assert report["parameters"] == parameter_count(tiny) and report["image_size"] == 64
    flops = report["gflop_per_image"]
    assert 1.9 < flops["forward_backward"] / flops["forward"] < 2.1  # input gradient only
    assert report["bf16_estimate"]["fwd"]["measured"] is False
    assert report["bf16_estimate"]["fwd"]["bf16_over_fp32_at_small_size"] > 0
    table = (tmp_path / "paper_scale.md").read_text()
    assert table.count("\n| `") == len(cases) and "**estimated**" in table
    assert {p: p.read_bytes() for p in (BENCHMARKS / "results").iterdir()} == reference


@requires_no_gpu
def test_gpu_script_stops_at_once_without_a_gpu(tmp_path: Path) -> None:
    """``benchmarks/gpu.sh`` on a machine without CUDA: one line, non-zero, nothing written."""
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "gpu.sh: no CUDA GPU (torch sees none); nothing run"
    ]
    assert not (tmp_path / "out").exists()


def test_gpu_script_dry_run_lists_its_commands(tmp_path: Path) -> None:
    """``gpu.sh --dry-run`` prints what it would run (the bf16 throughput driver at 100 steps)
    without needing a GPU; the script is valid bash."""
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu.sh")]).returncode == 0
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu.sh"), "--dry-run", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "gpu_throughput.py" in done.stdout and "--steps 100" in done.stdout
    assert "--precision bf16" in done.stdout and str(tmp_path / "out") in done.stdout
    assert not (tmp_path / "out").exists()
