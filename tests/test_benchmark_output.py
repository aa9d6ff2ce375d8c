"""The benchmark writes under outputs/ (not the tracked reference) and prints its progress."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sampler_overhead.py"


def _load() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sampler_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_output_is_outside_the_tracked_results() -> None:
    bench = _load()
    assert bench.OUTPUT == ROOT / "outputs" / "benchmarks"  # type: ignore[attr-defined]
    assert bench.RESULTS == ROOT / "benchmarks" / "results"  # type: ignore[attr-defined]


def test_tiny_run_prints_progress_and_writes_where_told(tmp_path: Path) -> None:
    reference = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()}
    args = ["--batch", "1", "--steps", "2", "--size", "32", "--repeats", "2"]
    args += ["--warmup", "0", "--stub-repeats", "2", "--out", str(tmp_path / "b")]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unet round 2/2" in done.stderr and "ETA" in done.stderr
    assert (tmp_path / "b" / "sampler_overhead.json").is_file()
    assert {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()} == reference


GUIDED = ROOT / "benchmarks" / "guided_step.py"


def run_quick(script: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``script --quick --out OUT`` as a user would run it."""
    return subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_guided_step_quick_run_writes_json_and_table(tmp_path: Path) -> None:
    """``--quick``: every form in paired rounds, CPU-time ratios to the bare step with quartiles,
    the load recorded, JSON + Markdown where told (the tracked reference untouched)."""
    import json

    reference = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()}
    done = run_quick(GUIDED, tmp_path / "g")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "round 2/2" in done.stderr and "ETA" in done.stderr
    report = json.loads((tmp_path / "g" / "guided_step.json").read_text())
    forms = [row["form"] for row in report["rows"]]
    assert forms == ["bare", "sing_zero", "alg2_constant", "alg2_autograd", "alg2_dps", "two_phase"]
    assert report["rounds"] == 2 and len(report["load_average_per_round"]) == 2
    assert report["operator"] == "avgpool scale 4" and report["bcr"] == "1/48"  # the main job's
    for row in report["rows"]:
        assert len(row["cpu_ratio_all"]) == 2
        assert row["cpu_ratio"]["q1"] <= row["cpu_ratio"]["median"] <= row["cpu_ratio"]["q3"]
    assert report["rows"][0]["cpu_ratio"]["median"] == 1.0
    table = (tmp_path / "g" / "guided_step.md").read_text()
    assert table.count("\n| `") == len(forms) and "CPU ratio to bare" in table
    assert {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()} == reference


WAIT_POLICY = ROOT / "benchmarks" / "wait_policy.py"
#: a hog's command line: ``yes`` and this marker (``wait_policy.hog_argv``)
HOG_MARK = "singexp-wait-policy-hog parent={pid}"


def hogs_of(parent: int) -> list[int]:
    """The pids of the live hogs that the benchmark run with pid ``parent`` started: matched by
    their command line, never another run's or another user's ``yes`` (zombies are dead)."""
    want = ("\0".join(["yes", HOG_MARK.format(pid=parent)]) + "\0").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "cmdline").read_bytes() != want:
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def kill_hogs_of(parent: int) -> list[int]:
    """Kill what ``hogs_of(parent)`` finds (a failing test leaves nothing running); its pids."""
    left = hogs_of(parent)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_wait_policy_quick_run_writes_every_condition_and_policy(tmp_path: Path) -> None:
    """``--quick``: each policy measured idle and beside hogs in both sessions, a fresh process
    each; JSON + Markdown where told, and none of its hogs left running (its own: other jobs'
    ``yes`` are none of its business)."""
    import json

    bench = subprocess.Popen(
        [sys.executable, str(WAIT_POLICY), "--quick", "--out", str(tmp_path / "w")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # 9 fresh torch processes, 6 beside hogs: ~2 min on 2 idle cores, over 5 min at load 9
        _, stderr = bench.communicate(timeout=600)
    finally:
        if bench.poll() is None:  # timed out: SIGTERM, which must end its hogs too
            bench.terminate()
            bench.communicate(timeout=30)
        assert wait_until(lambda: not hogs_of(bench.pid), 5), kill_hogs_of(bench.pid)
    assert bench.returncode == 0, stderr[-2000:]
    report = json.loads((tmp_path / "w" / "wait_policy.json").read_text())
    conditions = ["idle", "hogs_same_session", "hogs_other_session"]
    assert list(report["median_wall_s"]) == conditions
    for condition in conditions:
        assert set(report["runs"][condition]) == {"spin", "passive", "one_thread"}
        assert all(v > 0 for v in report["median_wall_s"][condition].values())
    table = (tmp_path / "w" / "wait_policy.md").read_text()
    assert table.count("\n| `") == 3 and "hogs_other_session" in table


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_wait_policy_hogs_end_with_the_benchmark(tmp_path: Path, signum: signal.Signals) -> None:
    """Issue 41: a benchmark ended by a signal (a test's timeout: SIGTERM, then SIGKILL, which
    runs no handler) leaves none of its hogs, of either session kind, running."""
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        bench = subprocess.Popen(
            [sys.executable, str(WAIT_POLICY), "--hogs-only-for-test"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        started = wait_until(lambda: len(hogs_of(bench.pid)) == 2 or bench.poll() is not None, 120)
        assert started and bench.poll() is None, log.read_text()[-2000:]
        bench.send_signal(signum)
        assert bench.wait(timeout=30) == -signum  # ended by the signal, as it would have been
        assert wait_until(lambda: not hogs_of(bench.pid), 5), "hogs left after the benchmark"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        kill_hogs_of(bench.pid)


GRID = ROOT / "benchmarks" / "grid.py"
PRECISION = ROOT / "benchmarks" / "precision.py"


@pytest.mark.slow
def test_grid_quick_run_times_the_grid_from_an_empty_folder(tmp_path: Path) -> None:
    """``grid.py --quick``: the grid command from an empty root, 2 points, wall and CPU time, the
    load, and the profile read from the points' metrics.json."""
    import json

    reference = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()}
    done = subprocess.run(
        [
            sys.executable,
            str(GRID),
            "--quick",
            "--out",
            str(tmp_path / "b"),
            "--root",
            str(tmp_path / "root"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads((tmp_path / "b" / "grid.json").read_text())
    assert report["profile"]["points"] == 2  # 2 points computed, none reused from elsewhere
    assert sorted(p.name for p in (tmp_path / "root" / "sweeps" / "paper_grid").glob("bcr*")) == [
        "bcr1_48_snr0",
        "bcr1_48_snr5",
    ]
    run = report["run"]
    assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["load_before"] >= 0
    assert "paths.root=" in run["command"] and "+experiment=paper_grid" in run["command"]
    methods = report["profile"]["method_wall_s"]
    assert {"deepjscc", "sing_zero", "sing_inn"} <= set(methods)
    assert 0 < methods["sing_inn"] < report["profile"]["point_wall_s"]
    table = (tmp_path / "b" / "grid.md").read_text()
    assert "method: sing_inn" in table and "outside the points" in table
    assert {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").iterdir()} == reference


def _fake_run(
    folder: Path, stlpips: list[float], seconds: float, methods: tuple[str, ...] = ("sing_inn",)
) -> Path:
    """A finished main-job folder: metrics.json and per_image.csv of DeepJSCC and ``methods``
    (each with the given per-image ST-LPIPS)."""
    import json

    folder.mkdir(parents=True)
    rows = ["image,sample,seed,method,snr_db,psnr,ssim,stlpips"]
    for i, v in enumerate(stlpips):
        rows += [f"{i},{i},0,{m},0.0,{15 + v},{0.3 + v},{v}" for m in methods]
        rows.append(f"{i},{i},0,deepjscc,0.0,16.0,0.4,0.5")
    (folder / "per_image.csv").write_text("\n".join(rows) + "\n")
    summary = {
        m: {"seconds_per_image": seconds, "swd": 60.0, "images": len(stlpips)} for m in methods
    }
    summary["deepjscc"] = {"seconds_per_image": 0.002, "swd": 120.0, "images": len(stlpips)}
    (folder / "metrics.json").write_text(json.dumps({"methods": summary}))
    return folder


def test_precision_compares_per_image_pairs_with_their_interval(tmp_path: Path) -> None:
    """The paired difference bf16 − fp32 and its 95 % interval, against the formula: mean of
    the per-image differences ± 1.96·s/√n; the measure's own interval from the fp32 values."""
    import json
    import math
    import statistics

    fp32 = [0.40, 0.42, 0.38, 0.45, 0.41, 0.39]
    bf16 = [0.41, 0.42, 0.39, 0.47, 0.41, 0.40]
    done = subprocess.run(
        [
            sys.executable,
            str(PRECISION),
            "--out",
            str(tmp_path / "b"),
            "--fp32",
            str(_fake_run(tmp_path / "fp32", fp32, 2.0)),
            "--bf16",
            str(_fake_run(tmp_path / "bf16", bf16, 1.0)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "b" / "precision.json").read_text())
    inn = report["comparison"]["methods"]["sing_inn"]
    diffs = [b - a for a, b in zip(fp32, bf16, strict=True)]
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert inn["paired"]["stlpips"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert inn["paired"]["stlpips"]["ci"] == pytest.approx(half, rel=1e-3)
    noise = 1.96 * statistics.stdev(fp32) / math.sqrt(len(fp32))
    assert inn["paired"]["stlpips"]["measure_ci"] == pytest.approx(noise, rel=1e-3)
    assert inn["paired_ci_contains_0"] is (abs(statistics.fmean(diffs)) <= half)
    assert inn["within_measure_noise"] is True
    deep = report["comparison"]["methods"]["deepjscc"]["paired"]["psnr"]
    assert deep["mean"] == 0 and deep["ci"] == 0
    assert "| sing_inn | 2.000 | 1.000 | ×2.00 |" in (tmp_path / "b" / "precision.md").read_text()


def test_precision_pools_two_sweeps_point_by_point(tmp_path: Path) -> None:
    """``--sweeps``: every point present in both grids compared, the pairs pooled over points
    (the image keys kept apart per point), against the formula."""
    import json
    import statistics

    a = {"p1": [0.40, 0.42, 0.38], "p2": [0.50, 0.55, 0.52]}
    b = {"p1": [0.41, 0.42, 0.39], "p2": [0.50, 0.57, 0.52]}
    for name in a:
        for precision, values in (("fp32", a), ("bf16", b)):
            _fake_run(tmp_path / precision / name, values[name], 1.0, ("sing_zero", "sing_inn"))
    done = subprocess.run(
        [
            sys.executable,
            str(PRECISION),
            "--out",
            str(tmp_path / "b"),
            "--sweeps",
            str(tmp_path / "fp32"),
            str(tmp_path / "bf16"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "b" / "precision_grid.json").read_text())
    assert report["grid"]["points"] == 2
    pooled = report["grid"]["pooled"]["sing_inn"]
    diffs = [y - x for n in a for x, y in zip(a[n], b[n], strict=True)]
    assert pooled["pairs"] == 6
    assert pooled["paired"]["stlpips"]["mean"] == pytest.approx(statistics.fmean(diffs))
