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
