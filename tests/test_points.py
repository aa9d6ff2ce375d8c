"""A point is its resolved config: one identity decides reuse, the report's rows and
labels, the loggers' keys and the point folders' names."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from singexp.points import (
    NOT_IDENTITY,
    Point,
    finished_results,
    flat,
    identity,
    is_identity_key,
    logger_keys,
    point_label,
    same_point,
    varying_keys,
    write_json,
)
from singexp.resolvers import point_dirname

CONFIG: dict[str, Any] = {
    "task": "restore",
    "seed": 0,
    "threads": "auto",
    "bcr": {"name": "1_48", "ratio": "1/48"},
    "channel": {"name": "awgn", "snr_db": 0.0},
    "sampler": {"name": "sing_zero", "eta": 0.85},
    "evaluate": {"split": "test", "precision": "fp32", "guidance_batch": None},
    "paths": {"output_dir": "/runs/a", "root": "/runs"},
    "logger": {"wandb": {"group": "sing_zero-sweepA", "save_dir": "/runs/a"}},
    "experiment_name": "sing_zero",
    "run_name": "sing_zero-1_48-snr0.0",
}


def _with(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``config`` with the dotted ``key`` set (a deep copy of the groups on the way)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    node = out
    *parents, last = key.split(".")
    for part in parents:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[last] = value
    return out


def test_every_key_not_listed_is_identity_and_each_listed_key_has_its_reason() -> None:
    assert all(reason.strip() for reason in NOT_IDENTITY.values())
    for key in ("logger.wandb.group", "paths.root", "threads", "evaluate.guidance_batch"):
        assert not is_identity_key(key), key
    for key in ("sampler.eta", "seed", "channel.name", "evaluate.precision", "dataset.name"):
        assert is_identity_key(key), key
    base = identity(CONFIG)
    assert "logger" not in base and "paths" not in base and "threads" not in base
    assert base["evaluate"] == {"precision": "fp32"}  # the added default split=test: dropped


@pytest.mark.parametrize(
    ("key", "value", "same"),
    [
        ("logger.wandb.group", "sing_zero-renamed", True),  # a moved, renamed sweep folder
        ("paths.output_dir", "/elsewhere/b", True),
        ("threads", 2, True),
        ("evaluate.guidance_batch", 4, True),
        ("sampler.eta", 0.0, False),
        ("seed", 1, False),
        ("channel.name", "rayleigh", False),
        ("evaluate.precision", "bf16", False),
        ("evaluate.split", "val", False),
    ],
)
def test_identity_decides_what_is_the_same_point(key: str, value: Any, same: bool) -> None:
    assert same_point(CONFIG, _with(CONFIG, key, value)) is same


def test_reuse_follows_the_identity(tmp_path: Path) -> None:
    """A finished run folder is reused by a config that differs only in non-identity keys."""
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    write_json(
        tmp_path / "metrics.json",
        {"task": "restore", "dataset": "shapes", "channel": "awgn", "snr_db": 0.0}
        | {"bcr": "1/48", "seed": 0, "methods": {}},
    )
    moved = _with(_with(CONFIG, "logger.wandb.group", "other"), "paths.output_dir", "/x/y")
    assert finished_results(moved, tmp_path) is not None
    assert finished_results(_with(CONFIG, "sampler.eta", 0.1), tmp_path) is None
    assert finished_results({**moved, "force": True}, tmp_path) is None


def test_logger_keys_are_the_grid_keys_and_the_identity() -> None:
    described = {"dataset": "shapes", "channel": "awgn", "snr_db": 0.0, "bcr": "1/48"}
    keys = logger_keys(CONFIG, described, ["sing_zero"])
    # the grid coordinates stay flat at the top level; the identity comes as dotted keys
    assert {k: keys[k] for k in described} == described and keys["method"] == ["sing_zero"]
    assert keys["sampler.eta"] == 0.85 and keys["channel.name"] == "awgn"
    assert not any(k.startswith(("logger", "paths", "threads")) for k in keys)


def test_point_folder_names_leave_out_what_is_not_identity() -> None:
    assert point_dirname("sampler.eta=0.0,threads=2,logger=csv") == "eta=0.0"


def _point(config: dict[str, Any], overrides: list[str] = ()) -> Point:  # type: ignore[assignment]
    return Point(Path("p"), {}, config, flat(identity(config)), list(overrides))


def test_varying_keys_keep_given_keys_and_drop_keys_that_follow_from_them() -> None:
    one = _point(CONFIG, ["bcr"])
    other = _with(_with(CONFIG, "bcr.ratio", "1/96"), "bcr.name", "1_96")
    two = _point(other, ["bcr"])
    assert varying_keys([one, two]) == []  # BCR is a column of its own; bcr.name follows it
    # a search's trials: every searched key shown, though each trial is told apart by one
    trials = [
        _point(_with(_with(CONFIG, "sampler.eta", eta), "seed", seed), ["sampler.eta", "seed"])
        for eta, seed in ((0.1, 1), (0.2, 2))
    ]
    assert varying_keys(trials) == ["seed", "sampler.eta"]
    assert point_label(trials[1], varying_keys(trials)) == "seed=2, sampler.eta=0.2"
    # a key no command line set, that tells apart points the others do not: kept
    derived = [_point(_with(CONFIG, "sampler.eta", eta)) for eta in (0.1, 0.2)]
    assert varying_keys(derived) == ["sampler.eta"]


# ---- real sweeps: one row per (point, method), labelled by the keys that differ ------------
TINY = ["quick=true", "logger=none", "print_config=false", "dataset.test_size=2"]


def _report_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "report" / "results.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["metric"] == "psnr"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "labels"),
    [
        (["+experiment=sing_zero", "sampler.eta=0.0,1.0"], {"sampler.eta=0", "sampler.eta=1"}),
        (
            ["+experiment=sing_inn", "methods.sing_inn.zeta=0.5,1.0"],
            {"methods.sing_inn.zeta=0.5", "methods.sing_inn.zeta=1"},
        ),
        (["+experiment=sing_zero", "seed=0,1"], {"seed=0", "seed=1"}),
        (["+experiment=sing_zero", "channel=awgn,rayleigh"], {"channel=awgn", "channel=rayleigh"}),
        (["+experiment=sing_zero", "dataset=shapes,photos"], {"data=shapes", "data=photos"}),
        (["+experiment=sing_zero", "threads=1,2"], {""}),  # compute only: one point
    ],
    ids=["sampler", "zeta", "seed", "channel", "dataset", "threads"],
)
def test_the_report_shows_every_point_of_a_sweep(
    tmp_path: Path, args: list[str], labels: set[str]
) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(*args, *TINY, f"hydra.sweep.dir={sweep}", "-m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(sweep.glob("*/metrics.json"))) == 2
    rows = _report_rows(sweep)
    methods = {r["method"] for r in rows}
    assert {"deepjscc", "sing_zero"} <= methods
    # exactly one row per (point, method), labelled by the key that differs
    assert (
        len(rows) == len({(r["method"], r["variant"]) for r in rows}) == len(methods) * len(labels)
    )
    assert {r["variant"] for r in rows} == labels
    table = (sweep / "report" / "results.md").read_text()
    if labels != {""}:
        assert "| variant |" in table
        for label in labels:
            assert f"| sing_zero | {label} |" in table
    else:  # the same point twice: one row each, the duplicate named under the table
        assert "is the same point as" in table


@pytest.mark.slow
def test_a_moved_and_renamed_sweep_reuses_every_point(tmp_path: Path) -> None:
    """The W&B group follows the sweep folder's name; a renamed sweep is still the same points."""
    first = tmp_path / "sweeps" / "first"
    args = ["+experiment=sing_zero", "quick=true", "print_config=false", "logger=wandb"]
    args += ["dataset.test_size=2"]
    env = {"WANDB_MODE": "offline", "SINGEXP_OUTPUT": None}
    done = run_cli(*args, f"hydra.sweep.dir={first}", "-m", "seed=0,1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    again = run_cli(*args, f"hydra.sweep.dir={moved}", "-m", "seed=0,1", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("reusing them") == 2


def _finished(folder: Path, config: dict[str, Any], shift: float) -> None:
    """A finished restoration point: config.yaml, metrics.json and per_image.csv (3 images)."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    methods = {m: {"psnr": 20.0 + shift, "images": 3} for m in ("deepjscc", "sing_inn")}
    write_json(
        folder / "metrics.json",
        {"task": "restore", "dataset": "shapes", "channel": "awgn", "snr_db": 0.0}
        | {"bcr": "1/48", "seed": config["seed"], "methods": methods},
    )
    with (folder / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "method", "psnr"])
        writer.writeheader()
        for i in range(3):
            writer.writerow({"image": i, "method": "deepjscc", "psnr": 20.0 + i})
            writer.writerow({"image": i, "method": "sing_inn", "psnr": 20.5 + i + shift})


def test_paired_table_and_figures_carry_the_keys_that_differ(tmp_path: Path) -> None:
    from singexp.report import collect, figure, report, sweep_info

    base = _with(CONFIG, "evaluate.paired_reference", "deepjscc")
    for seed in (0, 1):
        _finished(tmp_path / f"{seed}_seed={seed}", _with(base, "seed", seed), shift=seed)
    summary = report(tmp_path)
    assert summary["points"] == 2
    paired = (tmp_path / "report" / "paired.md").read_text()
    assert "| sing_inn − deepjscc | seed=0 | +0.500 ± 0.000 * |" in paired
    assert "| sing_inn − deepjscc | seed=1 | +1.500 ± 0.000 * |" in paired
    with (tmp_path / "report" / "paired.csv").open() as f:
        assert {r["seed"] for r in csv.DictReader(f)} == {"0", "1"}
    labels = figure(collect(tmp_path), "psnr", sweep_info(tmp_path)).axes[0]
    names = sorted(labels.get_legend_handles_labels()[1])
    # DeepJSCC's numbers are the same for both seeds here: one line; SING-INN one per seed
    assert names == ["DeepJSCC", "SING-INN · seed=0", "SING-INN · seed=1"]
