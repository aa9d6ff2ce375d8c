"""A DDP restoration gives the single-process numbers: whole batches per
process, noise seeded by the global batch, results gathered on rank 0, which alone writes.

The end-to-end test runs Lightning's DDP on the CPU (gloo, two processes) through the command
line, as a user's ``trainer=ddp`` run would, with a tiny random prior.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from conftest import run_cli
from singexp import distributed
from singexp.distributed import ShardedBatches, launch_rank


@pytest.mark.parametrize("length,batch,size", [(6, 2, 2), (7, 2, 3), (5, 4, 2), (1, 8, 3)])
def test_sharded_batches_cover_every_image_once_in_the_single_process_batches(
    monkeypatch: pytest.MonkeyPatch, length: int, batch: int, size: int
) -> None:
    single = [list(range(i, min(i + batch, length))) for i in range(0, length, batch)]
    seen: dict[int, list[int]] = {}
    for rank in range(size):
        monkeypatch.setattr(distributed, "world", lambda r=rank: (r, size))
        sampler = ShardedBatches(length, batch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for local, indices in enumerate(batches):
            index = sampler.global_batch(local)
            assert index % size == rank and index not in seen
            assert sampler.start(index) == indices[0]
            seen[index] = indices
    # together: the single process's batches, each once, none padded
    assert [seen[i] for i in sorted(seen)] == single
    monkeypatch.setattr(distributed, "world", lambda: (0, 1))
    assert list(ShardedBatches(length, batch)) == single


def test_launch_rank_reads_the_launchers_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")  # how Lightning starts the processes beside rank 0
    assert launch_rank() == 1
    monkeypatch.setenv("RANK", "3")  # torchrun's global rank wins
    assert launch_rank() == 3


def _tiny_prior(folder: Path) -> Path:
    torch.manual_seed(0)
    UNet2DModel(
        sample_size=32,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).save_pretrained(str(folder))
    return folder


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "per_image.csv") as f:
        return list(csv.DictReader(f))


#: what a summary says about the machine, not the run: left out of the comparison
TIMING = ("seconds_per_image", "cpu_seconds_per_image")


def _close(a: object, b: object, key: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), key
        # 1e-6, relative where float32 cannot resolve it absolutely: the processes run other
        # thread counts, which reorder float32 sums by an ulp (1.9e-6 at a PSNR of 17 dB; SWD,
        # stored ×10³, steps by 1.5e-5 at 166)
        assert math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6), (key, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            _close(a[k], b[k], f"{key}.{k}")
    else:
        assert a == b, (key, a, b)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_the_single_process_numbers(tmp_path: Path) -> None:
    prior = _tiny_prior(tmp_path / "prior")
    common = [
        "+experiment=sing_inn",
        f"prior.source={prior}",
        "dataset.test_size=6",
        "dataset.batch_size=2",  # 3 batches: rank 0 takes two, rank 1 one
        "methods.sing_zero.steps=3",
        "methods.sing_inn.steps=3",
        "evaluate.grid_images=4",
        "trainer.accelerator=cpu",
        "logger=none",
        "print_config=false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    single = run_cli(*common, f"hydra.run.dir={one}", cwd=tmp_path)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    ddp = run_cli(
        *common,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"hydra.run.dir={two}",
        cwd=tmp_path,
    )
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert set(a["methods"]) == {"deepjscc", "sing_zero", "sing_inn", "mean_image"}
    for method, summary in a["methods"].items():
        for timing in TIMING:
            summary.pop(timing, None)
            b["methods"][method].pop(timing, None)
        assert summary["images"] == 6
        _close(summary, b["methods"][method], method)  # SWD, CIs and means: all images
    rows_a, rows_b = _rows(one), _rows(two)
    assert len(rows_b) == 6 * 4  # every test image exactly once per method
    assert [(r["image"], r["method"]) for r in rows_a] == [
        (r["image"], r["method"]) for r in rows_b
    ]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key, value in ra.items():
            if key in ("method", "file") or value == "":  # "": a metric the row has not
                assert value == rb[key]
            else:
                _close(float(value), float(rb[key]), f"{ra['method']}.{ra['image']}.{key}")
    assert (two / "grid.png").is_file()
    assert b["evaluate"] == {
        "precision": "fp32",
        "guidance_batch": None,
        "gradient_checkpointing": False,
        "compile": False,
        "precision_used": "fp32",
    }
