"""Every fenced command of README.md and of the pages under docs/ works as written in a new shell
at the repository root.

Each ``singexp`` line is composed through the entry point's own override handling
(:func:`check_group_overrides`, :func:`quote_group_overrides`, :func:`check_override_keys`, then
Hydra's compose of the first point of a sweep), as ``--cfg job`` would; two run through the
installed command with ``--cfg job``, and the ``quick=true`` line runs for real (slow); those
that run take the README's lines (what a newcomer runs first).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from singexp.cli import (
    _first_values,
    check_group_overrides,
    check_override_keys,
    quote_group_overrides,
)
from singexp.config import CONF_DIR
from singexp.quick import apply_quick

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: the documentation pages whose commands are checked as the README's are
DOC_PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
VENV_BIN = ".venv/bin/"
SWEEP_FLAGS = ("-m", "--multirun")
#: tools outside the project that the docs' commands may call (with a repository script for bash)
EXTERNAL_PROGRAMS = ("hf", "bash")


def fenced_lines(text: str) -> list[str]:
    """The non-empty lines inside ``` fences, comments dropped, continuations joined."""
    lines, inside, pending, language = [], False, "", ""
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            language = line[3:].strip() if inside else ""
            continue
        if not inside or language == "python":  # code, not shell commands
            continue
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            lines.append(shlex.join(words))
    return lines


COMMANDS = fenced_lines(README.read_text())
#: every page's commands, each once (README first)
ALL_COMMANDS = list(
    dict.fromkeys(c for page in DOC_PAGES for c in fenced_lines(page.read_text(encoding="utf-8")))
)


def without_env(words: list[str]) -> list[str]:
    """A command's words without its leading ``NAME=value`` environment assignments."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return words


def singexp_args(command: str) -> list[str] | None:
    """The arguments of a command that runs the entry point (``singexp ...`` or
    ``python -m singexp ...``, any prefix, after any environment assignments), else None."""
    words = without_env(shlex.split(command))
    if words[0].endswith("singexp"):
        return words[1:]
    if words[0].endswith("python") and words[1:3] == ["-m", "singexp"]:
        return words[3:]
    return None


SINGEXP = [c for c in COMMANDS if singexp_args(c) is not None]
ALL_SINGEXP = [c for c in ALL_COMMANDS if singexp_args(c) is not None]


def test_readme_has_singexp_commands() -> None:
    assert len(SINGEXP) >= 10
    assert len(ALL_SINGEXP) >= 15
    assert any("quick=true" in c for c in SINGEXP)
    assert any(" -m " in c for c in SINGEXP)  # the grid
    assert any(" restore " in f" {c} " for c in SINGEXP)  # your own images
    assert any("dataset.root=" in c for c in SINGEXP)  # real data


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_command_works_in_a_new_shell(command: str) -> None:
    """No bare ``python``/``singexp`` (a new shell has no activated venv): one convention."""
    words = without_env(shlex.split(command))
    program = words[0]
    allowed = ("make", f"{VENV_BIN}singexp", f"{VENV_BIN}python", *EXTERNAL_PROGRAMS)
    assert program in allowed, command
    if program == "make":
        targets = re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), re.M)
        assert words[1] in targets
    if program == "bash":
        assert (REPO / words[1]).is_file(), words[1]
    assert not re.search(r"(^|\s)python -m singexp", command)


@pytest.mark.parametrize(
    "command", [c for c in ALL_COMMANDS if without_env(shlex.split(c))[0] == f"{VENV_BIN}python"]
)
def test_python_commands_name_what_exists(command: str) -> None:
    words = without_env(shlex.split(command))[1:]
    if words[0] == "-m":
        assert importlib.util.find_spec(words[1]) is not None, words[1]
    else:
        assert (REPO / words[0]).is_file(), words[0]


def overrides_of(command: str) -> list[str]:
    """A README command's overrides as the entry point hands them to Hydra (flags left out)."""
    args = [a for a in singexp_args(command) or [] if a not in SWEEP_FLAGS]
    if args[:1] == ["restore"]:  # `singexp restore PATH... overrides`: the paths and out=DIR go
        args = [a for a in args[1:] if "=" in a and not a.startswith("out=")]
    check_group_overrides(args)
    args = quote_group_overrides(args)
    check_override_keys(args)
    return args


#: documented commands that fail today, and why (strict: the test says so when one is fixed)
KNOWN_BROKEN: dict[str, str] = {}


def _known_broken(command: str) -> list[pytest.MarkDecorator]:
    raw = next((k for k in KNOWN_BROKEN if shlex.join(shlex.split(k)) in command), None)
    return [pytest.mark.xfail(reason=KNOWN_BROKEN[raw], strict=True)] if raw else []


@pytest.mark.parametrize("command", [pytest.param(c, marks=_known_broken(c)) for c in ALL_SINGEXP])
def test_singexp_command_composes(command: str) -> None:
    overrides = _first_values(overrides_of(command))  # a sweep: its first point
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.task in ("jscc", "restore", "inn", "prior")
    if "quick=true" in command:
        assert apply_quick(cfg) and cfg.dataset.test_size <= 8


def _installed_singexp() -> Path:
    for candidate in (REPO / VENV_BIN / "singexp", Path(sys.executable).parent / "singexp"):
        if candidate.is_file():
            return candidate
    pytest.skip("the singexp command is not installed next to this interpreter")


def _run(command: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [str(_installed_singexp()), *(singexp_args(command) or []), *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "command",
    [SINGEXP[0], next(c for c in SINGEXP if "quick=true" in c)],
)
def test_installed_command_prints_job_config(command: str) -> None:
    result = _run(command, "--cfg", "job", cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "experiment_name:" in result.stdout


def test_installed_command_accepts_sweep_flag(tmp_path: Path) -> None:
    """``-m`` anywhere among the overrides, as with ``python -m singexp``: a bad key of a sweep
    is the entry point's one-line error, so the flag reached it."""
    sweep = next(c for c in SINGEXP if " -m " in c)
    result = _run(sweep, "channel.snr=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("singexp: error: channel.snr")


@pytest.mark.slow
def test_readme_restore_command_runs_on_an_image(tmp_path: Path) -> None:
    """The README's quick ``singexp restore`` line on a PNG this test writes."""
    from PIL import Image

    line = next(c for c in SINGEXP if " restore " in f" {c} " and "quick=true" in c)
    args = singexp_args(line) or []
    image = tmp_path / "in" / "picture.png"
    image.parent.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 90)).save(image)
    args = ["restore", str(image.parent), *(a for a in args[2:] if not a.startswith("out="))]
    result = subprocess.run(
        [str(_installed_singexp()), *args, "logger=none", f"out={tmp_path / 'out'}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "grid.png").is_file()
    assert (tmp_path / "out" / "picture_sing_inn.png").is_file()


@pytest.mark.slow
def test_quick_readme_command_runs(tmp_path: Path) -> None:
    quick = next(c for c in SINGEXP if "quick=true" in c)
    result = _run(quick, "logger=none", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "metrics.json").is_file()


def test_report_command_prints_the_markdown_table(tmp_path: Path) -> None:
    """``python -m singexp.report DIR`` prints the table it writes (results.md), not JSON."""
    for i, (snr, psnr) in enumerate([(-5.0, 12.0), (5.0, 20.0)]):
        point = tmp_path / str(i)
        point.mkdir()
        results = {"dataset": "shapes", "channel": "awgn", "bcr": "1/768", "snr_db": snr}
        results["methods"] = {"deepjscc": {"psnr": psnr, "images": 1}}
        (point / "metrics.json").write_text(json.dumps(results))
    result = subprocess.run(
        [sys.executable, "-m", "singexp.report", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "report" / "results.md").read_text()
    assert result.stdout.startswith(table)
    assert "| 1/768 | -5 | deepjscc | 12.000 |" in result.stdout
    *_, last = result.stdout.strip().splitlines()
    assert json.loads(last.removeprefix("summary: "))["points"] == 2


def test_install_has_no_deprecated_license_table() -> None:
    """``pip install`` warned about ``license = { text = ... }``: an SPDX string (PEP 639), with
    a build backend that reads it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(setuptools.partition(">=")[2].split(".")[0]) >= 77


@pytest.mark.slow
def test_readme_sweep_runs_with_installed_command(tmp_path: Path) -> None:
    """The README's sweep line through the installed command, ``-m`` where the README has it,
    cut to its first point and ``quick=true``: one point folder with results."""
    sweep = next(c for c in SINGEXP if " -m " in c)
    args = singexp_args(sweep) or []
    at = args.index("-m")
    point = [f"{k}={v.split(',')[0]}" for k, _, v in (a.partition("=") for a in args[at + 1 :])]
    command = shlex.join(["singexp", *args[:at], "-m", *point])
    extra = ("quick=true", "logger=none", f"hydra.sweep.dir={tmp_path}")
    result = _run(command, *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (results,) = tmp_path.glob("*/metrics.json")
    assert json.loads(results.read_text())["quick"] is True
