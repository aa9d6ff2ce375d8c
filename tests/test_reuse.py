"""A sweep's points share what one process loaded: singexp.reuse keys, the
restoration's models reused across points, and a point's results the same alone or in a sweep."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from conftest import run_cli
from singexp import reuse
from singexp.assembly import build_restoration
from singexp.config import validate
from singexp.data.base import indexed_data


def test_a_key_is_built_once_and_a_new_key_builds_again() -> None:
    built: list[str] = []

    def build(name: str) -> Callable[[], object]:
        return lambda: built.append(name) or object()

    first = reuse.reused(("model", 1), build("a"))
    assert reuse.reused(("model", 1), build("b")) is first  # not built again
    other = reuse.reused(("model", 2), build("c"))
    assert other is not first and built == ["a", "c"]
    assert reuse.stats() == {"hits": 1, "builds": 2, "kept": 2}
    reuse.clear()
    assert reuse.stats() == {"hits": 0, "builds": 0, "kept": 0}


def test_a_rewritten_file_is_a_new_key(tmp_path: Path) -> None:
    """A checkpoint that ``auto`` training writes again must be loaded again."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"one")
    before = reuse.file_identity(path)
    assert reuse.file_identity(tmp_path / "." / "model.safetensors") == before  # same file
    path.write_bytes(b"two")
    os.utime(path, ns=(before[2] + 10**9, before[2] + 10**9))
    assert reuse.file_identity(path) != before
    assert reuse.folder_identity(tmp_path) == (reuse.file_identity(path),)


def test_points_of_a_sweep_share_the_prior_data_and_an_inn_of_the_same_ratio(
    make_cfg: Callable[..., DictConfig],
) -> None:
    """Two points at the same BCR share the prior, the INN and the data module (the mean image
    computed once); a point at another BCR gets its own INN and codec, the same prior."""

    def parts(*overrides: str) -> tuple[object, ...]:
        run = validate(make_cfg("+experiment=sing_inn", "quick=true", *overrides))
        data = indexed_data(run)
        built = build_restoration(run, lambda: data)
        return built.networks["prior"], built.networks["inn"], built.codec, data

    prior, inn, codec, data = parts("channel.snr_db=0")
    again = parts("channel.snr_db=5")
    assert again[0] is prior and again[1] is inn and again[3] is data
    assert again[2] is not codec  # the codec is kept per SNR (its test SNR is a setting)
    other = parts("bcr=1_96", "channel.snr_db=0")
    assert other[0] is prior and other[1] is not inn and other[2] is not codec
    assert other[3] is data


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "per_image.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_point_gives_the_same_results_alone_and_inside_a_sweep(tmp_path: Path) -> None:
    """BCR 1/48 at 0 dB run after BCR 1/96 in one sweep process (models, data reused) equals the
    same point run alone in a fresh process: every per-image value and every summary. Sharing
    a model across points it does not belong to (an INN keyed without its file) fails this."""
    common = ["+experiment=sing_inn", "quick=true", "logger=none", "print_config=false"]
    sweep = tmp_path / "sweep"
    done = run_cli(
        *common,
        "bcr=1_96,1_48",
        "channel.snr_db=0",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=bcr${bcr.name}",
        "-m",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    alone = tmp_path / "alone"
    done = run_cli(*common, "bcr=1_48", "channel.snr_db=0", f"hydra.run.dir={alone}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    in_sweep = sweep / "bcr1_48"
    swept = json.loads((in_sweep / "metrics.json").read_text())
    single = json.loads((alone / "metrics.json").read_text())
    assert swept["timing"]["reused"]["hits"] > 0  # it did reuse what the first point loaded
    assert single["timing"]["reused"]["hits"] == 0
    assert swept["samplers"] == single["samplers"] and swept["evaluate"] == single["evaluate"]
    assert (
        set(swept["methods"])
        == set(single["methods"])
        == {"deepjscc", "sing_zero", "sing_inn", "mean_image"}
    )
    for method, summary in single["methods"].items():  # every value but the time taken
        timing = ("seconds_per_image", "cpu_seconds_per_image")  # the machine's, not the run's
        mine = {k: v for k, v in swept["methods"][method].items() if k not in timing}
        assert mine == {k: v for k, v in summary.items() if k not in timing}, method
    assert _rows(in_sweep) == _rows(alone)
