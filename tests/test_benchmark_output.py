"""The benchmark writes under outputs/ (not the tracked reference) and prints its progress."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_wait_policy_quick_run_writes_every_condition_and_policy(tmp_path: Path) -> None:
    """``--quick``: each policy measured idle and beside hogs in both sessions, a fresh process
    each; JSON + Markdown where told, and no hog left running."""
    import json

    script = ROOT / "benchmarks" / "wait_policy.py"
    done = run_quick(script, tmp_path / "w")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "w" / "wait_policy.json").read_text())
    conditions = ["idle", "hogs_same_session", "hogs_other_session"]
    assert list(report["median_wall_s"]) == conditions
    for condition in conditions:
        assert set(report["runs"][condition]) == {"spin", "passive", "one_thread"}
        assert all(v > 0 for v in report["median_wall_s"][condition].values())
    table = (tmp_path / "w" / "wait_policy.md").read_text()
    assert table.count("\n| `") == 3 and "hogs_other_session" in table
    hogs = subprocess.run(["pgrep", "-x", "yes"], capture_output=True, text=True)
    assert hogs.stdout.strip() == "", "the benchmark left its CPU hogs running"
