"""Hydra multirun sweeps: reuse of finished points, resuming a killed sweep, failures, report."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from singexp.report import collect, mean_ci, report

FAST = [
    "methods.sing_zero.steps=2",
    "methods.sing_inn.steps=2",
    "methods.sing_zero.progress=false",
    "methods.sing_inn.progress=false",
    "dataset.test_size=4",
    "dataset.batch_size=4",
    "logger=csv",
    "print_config=false",
]
GRID = ["+experiment=sing_inn", "-m", "channel.snr_db=-5,5", "bcr=1_768"]


def _points(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/metrics.json"))


def test_mean_ci() -> None:
    mean, ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert ci == pytest.approx(1.959964 * math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3 / 4))
    assert math.isnan(mean_ci([1.0])[1])


@pytest.mark.slow
def test_sweep_reuses_finished_points_and_writes_report(tmp_path: Path) -> None:
    env = {"SINGEXP_OUTPUT": None}
    first = run_cli(*GRID, *FAST, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    # the sweep's folder is named after its command's overrides (the same command, the same one)
    (sweep,) = (tmp_path / "outputs" / "sing_inn" / "multiruns").iterdir()
    assert sweep.name.startswith("bcr=1_768,channel.snr_db=-5,5,dataset.batch_size=4")
    assert len(_points(sweep)) == 2
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in _points(sweep)}
    rows = collect(sweep)
    assert {(r["snr_db"], r["method"]) for r in rows if r["metric"] == "psnr"} == {
        (s, m) for s in (-5.0, 5.0) for m in ("deepjscc", "sing_zero", "sing_inn", "mean_image")
    }
    for name in ("results.csv", "results.md", "stlpips_vs_snr.png", "psnr_vs_snr.pdf"):
        assert (sweep / "report" / name).is_file()
    again = run_cli(*GRID, *FAST, cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("reusing them") == 2
    assert len(list(sweep.parent.iterdir())) == 1
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in _points(sweep)} == stamps


@pytest.mark.slow
def test_killed_sweep_completes_on_rerun_with_each_point_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "singexp", *GRID, *FAST, f"hydra.sweep.dir={sweep}"]
    cmd[cmd.index("channel.snr_db=-5,5")] = "channel.snr_db=-5,0,5"
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not _points(sweep) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _points(sweep)
    assert 1 <= len(done_before) < 3
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    points = _points(sweep)
    assert len(points) == 3  # the grid is complete, one folder per point
    snrs = sorted(json.loads((p / "metrics.json").read_text())["snr_db"] for p in points)
    assert snrs == [-5.0, 0.0, 5.0]
    assert (rerun.stdout + rerun.stderr).count("reusing them") == len(done_before)


@pytest.mark.slow
def test_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        "+experiment=sing_inn",
        "-m",
        "channel.snr_db=-5",
        "jscc.checkpoint=embedded,missing.ckpt",
        *FAST,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the sweep went on, then says so
    assert len(_points(sweep)) == 1
    (error,) = sweep.glob("*/error.txt")
    assert "jscc.checkpoint" in error.read_text()
    assert "jscc.checkpoint" in result.stderr
    assert "1 grid point(s) failed" in result.stderr.splitlines()[-1]
    report_md = (sweep / "report" / "results.md").read_text()
    assert f"failed point: {error.parent.name}" in report_md
    # LPIPS without its AlexNet weights (offline) is said under the table, not hidden
    status = json.loads((_points(sweep)[0] / "metrics.json").read_text())["metric_status"]
    assert ("LPIPS not measured" in report_md) == (status["lpips"] != "ok")


def test_report_of_an_empty_folder(tmp_path: Path) -> None:
    assert report(tmp_path)["points"] == 0


@pytest.mark.slow
def test_joblib_sweep_with_wandb_offline_runs_one_run_per_point(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*GRID[:-1], "bcr=1_768,1_192", "launcher=joblib", *FAST, "logger=csv_wandb"]
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": None}
    result = run_cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_points(sweep)) == 4 and (sweep / "report" / "results.md").is_file()
    # workers print Lightning's log lines once, through Hydra's handlers (with the logger's
    # name), never a second time bare through Lightning's own handler
    out = result.stdout + result.stderr
    lightning = set(re.findall(r"\]\[lightning\.[\w.]+\]\[\w+\] (.+)", out))
    assert lightning, "no Lightning log line went through Hydra's handlers"
    bare = lightning & {line.strip() for line in out.splitlines()}
    assert not bare, f"Lightning lines printed twice: {sorted(bare)}"
    runs = sorted(r for p in _points(sweep) for r in p.glob("wandb/offline-run-*"))
    assert len(runs) == 4  # no two points share a run
    for run in runs:
        (record,) = run.glob("run-*.wandb")
        data = record.read_bytes()
        assert b"sing_inn" in data and b"snr_db" in data and b"bcr_value" in data
        assert b"sing_inn-sweep" in data  # the sweep's group: <experiment_name>-<sweep folder>
    # at the end, one report run in the same group holds the aggregated table as a W&B Table
    (report_run,) = (sweep / "report" / "wandb").glob("offline-run-*")
    (record,) = report_run.glob("run-*.wandb")
    assert b"sing_inn-sweep" in record.read_bytes()
    (table_file,) = report_run.glob("files/media/table/results_*.table.json")
    table = json.loads(table_file.read_text())
    col = {name: i for i, name in enumerate(table["columns"])}
    cells = {
        (row[col["bcr"]], row[col["snr_db"]], row[col["method"]])
        for row in table["data"]
        if row[col["metric"]] == "psnr"
    }
    assert len(table["data"]) == len(collect(sweep))  # each point once (no W&B file copies)
    assert cells == {
        (b, s, m)
        for b in ("1/768", "1/192")
        for s in (-5.0, 5.0)
        for m in ("deepjscc", "sing_zero", "sing_inn", "mean_image")
    }
    assert list(report_run.glob("files/media/images/figures/psnr_vs_snr_*.png"))
    again = run_cli(*args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env)
    assert (again.stdout + again.stderr).count("reusing them") == 4


@pytest.mark.slow
def test_submitit_local_two_point_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        *GRID, "launcher=submitit_local", *FAST, f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    snrs = sorted(json.loads((p / "metrics.json").read_text())["snr_db"] for p in _points(sweep))
    assert snrs == [-5.0, 5.0]
    assert (sweep / "report" / "psnr_vs_snr.png").is_file()


@pytest.mark.slow
def test_two_jobs_needing_the_same_missing_codec_train_it_once(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    base = [
        sys.executable,
        "-m",
        "singexp",
        "+experiment=sing_zero",
        "jscc.checkpoint=auto",
        "debug=fast",
        "sampler.steps=2",
        "sampler.progress=false",
        "dataset.test_size=4",
        "logger=none",
        "print_config=false",
        f"paths.artifacts={art}",
        "channel.train_snr_range=[-5,5]",  # one codec serves both test SNRs
    ]
    procs = [
        subprocess.Popen(
            [*base, f"channel.snr_db={snr}", f"hydra.run.dir={tmp_path / str(snr)}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for snr in (-3, 3)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    text = "".join(outputs)
    assert text.count("training jscc artifact") == 1 and text.count("reusing jscc artifact") == 1
    (folder,) = (art / "jscc").iterdir()
    assert (folder / "codec.safetensors").is_file()
    for snr in (-3, 3):
        metrics = json.loads((tmp_path / str(snr) / "metrics.json").read_text())
        assert metrics["jscc_checkpoint"] == str(folder / "codec.safetensors")


def _fake_point(folder: Path, snr: float, psnr: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    methods = {m: {"psnr": v, "images": 1} for m, v in psnr.items()}
    point = {"dataset": "shapes", "channel": "awgn", "bcr": "1/768", "snr_db": snr}
    (folder / "metrics.json").write_text(json.dumps({**point, "methods": methods}))


def test_report_cli_logs_the_table_to_wandb_on_demand(tmp_path: Path) -> None:
    sweep = tmp_path / "my_sweep"
    _fake_point(sweep / "0", -5.0, {"deepjscc": 12.0, "sing_inn": 12.5})
    _fake_point(sweep / "1", 5.0, {"deepjscc": 20.0, "sing_inn": 21.0})
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "singexp.report", str(sweep), "--wandb", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["points"] == 2
    run = Path(summary["wandb_run"])
    assert run.parent == sweep / "report" / "wandb"
    assert b"my_sweep" in next(run.glob("run-*.wandb")).read_bytes()  # group: the folder's name
    (table_file,) = run.glob("files/media/table/results_*.table.json")
    table = json.loads(table_file.read_text())
    col = {name: i for i, name in enumerate(table["columns"])}
    means = {(r[col["snr_db"]], r[col["method"]]): r[col["mean"]] for r in table["data"]}
    assert means == {
        (-5.0, "deepjscc"): 12.0,
        (-5.0, "sing_inn"): 12.5,
        (5.0, "deepjscc"): 20.0,
        (5.0, "sing_inn"): 21.0,
    }


@pytest.mark.slow
def test_rerun_with_another_config_keeps_the_old_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "point"
    args = [
        "+experiment=sing_zero",
        "sampler.progress=false",
        "dataset.test_size=4",
        "dataset.batch_size=4",
        "logger=csv",
        "print_config=false",
        f"hydra.run.dir={run_dir}",
    ]
    assert run_cli(*args, "sampler.steps=2", cwd=tmp_path).returncode == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    second = run_cli(*args, "sampler.steps=3", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "moved to" in second.stdout + second.stderr
    (old,) = (run_dir / "superseded").iterdir()
    assert json.loads((old / "metrics.json").read_text()) == first
    assert (old / "per_image.csv").is_file() and (old / "grid.png").is_file()
    assert "steps: 2" in (old / "config.yaml").read_text()
    new = json.loads((run_dir / "metrics.json").read_text())
    assert new["samplers"]["sing_zero"]["steps"] == 3
    # the report reads the current results only
    assert {r["images"] for r in collect(run_dir)} == {4}
    assert len(collect(run_dir)) == len({(r["method"], r["metric"]) for r in collect(run_dir)})


def test_report_run_in_wandb_only_when_the_table_changed(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    _fake_point(sweep / "0", -5.0, {"deepjscc": 12.0})
    assert report(sweep)["unchanged"] is False
    assert report(sweep)["unchanged"] is True  # nothing new: the callback logs no report run
    _fake_point(sweep / "1", 5.0, {"deepjscc": 20.0})
    assert report(sweep)["unchanged"] is False
