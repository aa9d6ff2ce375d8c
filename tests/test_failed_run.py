"""A failed run keeps its folder and says why in error.txt (one line first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from singexp.errors import ConfigError
from singexp.faults import record_failure


def test_record_failure_writes_the_one_line_error_first(tmp_path: Path) -> None:
    assert record_failure(tmp_path, ConfigError("jscc.checkpoint", "no such file")) == (
        f"details: {tmp_path / 'error.txt'}"
    )
    text = (tmp_path / "error.txt").read_text()
    assert text == "ConfigError: jscc.checkpoint: no such file\n"  # a user mistake: no traceback
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as error:
        record_failure(tmp_path, error)
    first, _, rest = (tmp_path / "error.txt").read_text().partition("\n")
    assert first == "RuntimeError: boom"
    assert "Traceback (most recent call last)" in rest


@pytest.mark.slow
def test_a_failed_single_run_leaves_error_txt(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=sing_zero",
        "jscc.checkpoint=missing.ckpt",
        "print_config=false",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = (run / "error.txt").read_text().splitlines()[0]
    assert "jscc.checkpoint" in line and line.split(": ", 1)[1] in result.stderr
