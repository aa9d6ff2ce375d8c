"""Issue 41 items 1-2: a quiet console (each note once, one line; the results table last) and
W&B that starts after metrics.json and whose finish is bounded."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from singexp import console, loggers
from singexp.printing import print_results

#: a screen: the lines of the main job at tiny settings, progress lines aside, must fit in it
SCREEN_LINES = 40
#: how a progress line is recognised: rich's bars and counters, carriage returns, and the line
#: progress of logs (singexp.progress: "SING-Zero batch 1/1: 10 steps in ...", "tested ...")
PROGRESS = re.compile(r"\r|it/s|%\||[━╸╺]|\d+/\d+ steps|: \d+ steps in |^tested \d+ batch")


def non_progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not PROGRESS.search(line)]


@pytest.mark.slow
def test_main_job_console_fits_a_screen_with_the_table_last(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "PYTHONWARNINGS": None,  # what a user sees: no blanket ignore, wandb not silenced
        "WANDB_SILENT": None,
        "WANDB_MODE": "offline",
    }
    result = run_cli(
        "+experiment=sing_inn",
        "quick=true",
        "logger=wandb",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=env,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    lines = non_progress_lines(out)
    assert len(lines) <= SCREEN_LINES, "\n".join(lines)
    for noise in ("Run history", "Run summary", "litlogger", "litmodels", "LeafSpec", "anonymous"):
        assert noise not in out, noise
    notes = [line for line in lines if "note" in line.lower() or "WARNING" in line]
    assert len(notes) == len(set(notes)), notes
    assert sum("LPIPS (alex)" in line or "lpips: missing" in line for line in lines) == 1
    # the last lines on screen: the table (its rows, footnotes) and the method lines
    stdout = [line for line in result.stdout.splitlines() if line.strip()]
    assert stdout[-2].startswith("sing_zero: ") and stdout[-1].startswith("sing_inn: ")
    table = [i for i, line in enumerate(stdout) if line.startswith("└")]
    assert table and all(not line.startswith(("note", "warning")) for line in stdout[table[0] :])
    assert "W&B runs offline" in out  # said once, in singexp's words
    assert (tmp_path / "run" / "wandb").is_dir()


def test_a_warning_logged_twice_is_shown_once(caplog: Any) -> None:
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        console.quiet_console()
        log = logging.getLogger("singexp.test_console")
        log.setLevel(logging.INFO)
        log.warning("bcr 1/48 is not one of the paper's ratios (unique note 7f3)")
        log.warning("bcr 1/48 is not one of the paper's ratios (unique note 7f3)")
        log.info("an info line")
        log.info("an info line")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            "💡 Tip: For seamless cloud logging, try installing [litlogger]"
        )
    finally:
        root.removeHandler(handler)
    assert records == [
        "bcr 1/48 is not one of the paper's ratios (unique note 7f3)",
        "an info line",
        "an info line",
    ]
    assert console.said("not one of the paper's ratios (unique note 7f3)")


def test_noise_warnings_are_filtered_by_message_and_category() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # below the console's filters: all else is shown
        console.quiet_console()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use x", FutureWarning, stacklevel=1
        )
        warnings.warn(
            "The `local_dir_use_symlinks` argument is deprecated and ignored",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use x", UserWarning, stacklevel=1
        )
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    shown = [(str(w.message), w.category) for w in caught]
    assert shown == [
        ("`isinstance(treespec, LeafSpec)` is deprecated, use x", UserWarning),
        ("another deprecation", FutureWarning),
    ]


def test_notes_print_once_on_one_line_before_the_table(capsys: Any) -> None:
    long = "missing: ImageNet weights a.pth not found in /x; put a.pth in /x (or ...); " + "z" * 300
    results = {
        "task": "restore",
        "dataset": "shapes",
        "channel": "awgn",
        "snr_db": 0.0,
        "bcr": "1/48",
        "methods": {"deepjscc": {"psnr": 15.0, "images": 8}},
        "metric_status": {"lpips": long, "ms_ssim": "skipped: image size 32 < 176"},
        "warnings": ["a warning (unique 91c)", "a warning (unique 91c)"],
        "samplers": {},
    }
    print_results(results)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0] == "note: lpips: missing: ImageNet weights a.pth not found in /x (…)"
    assert lines[1] == "note: ms_ssim: skipped: image size 32 < 176"
    assert lines[2] == "warning: a warning (unique 91c)"
    assert lines[-1].startswith("└")  # the table is last
    # a note this process already logged is not printed again
    handler = logging.NullHandler()
    handler.addFilter(console.OncePerProcess())
    record = logging.LogRecord("singexp", logging.WARNING, "", 0, "x: logged (u 55e)", None, None)
    handler.filter(record)
    print_results({**results, "metric_status": {}, "warnings": ["logged (u 55e)"]})
    assert "logged (u 55e)" not in capsys.readouterr().out


# ---- 2. W&B after the results, finish bounded ----------------------------------------------
class FakeRun:
    def __init__(self, folder: Path) -> None:
        self.dir = str(folder)
        self.url = None
        self.summary: dict[str, Any] = {}
        self.config = self.summary
        self.logged: list[Any] = []

    def log(self, data: Any, step: Any = None) -> None:
        self.logged.append(data)

    def define_metric(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_deferred_wandb_starts_only_when_results_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    inits: list[dict[str, Any]] = []
    run = FakeRun(tmp_path / "run")
    (tmp_path / "run").mkdir()
    monkeypatch.setattr(wandb, "init", lambda **kw: inits.append(kw) or run)
    logger = loggers.wandb_logger(mode="offline", save_dir=str(tmp_path), defer=True)
    assert isinstance(logger, loggers.DeferredWandbLogger)
    logger.log_hyperparams({"bcr": "1/48"})
    logger.log_metrics({"test/psnr": 15.0}, step=0)
    assert logger.experiment is None  # what Lightning's setup reads starts nothing
    assert inits == []
    results = tmp_path / "metrics.json"
    results.write_text("{}")
    loggers.log_results([logger], {"final/psnr": 15.0}, results)
    assert len(inits) == 1 and inits[0]["mode"] == "offline"
    assert inits[0]["settings"].silent  # no run history/summary footer
    assert "anonymous" not in inits[0]
    assert run.config["bcr"] == "1/48" and run.summary["final/psnr"] == 15.0
    assert {"test/psnr": 15.0, "trainer/global_step": 0} in run.logged


def test_finish_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wandb

    release = threading.Event()
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None: release.wait(60))
    logger = loggers.DeferredWandbLogger("offline", 1.0, str(tmp_path))
    logger._started = True
    start = time.monotonic()
    loggers.finish_loggers([logger], failed=False, timeout=0.5)
    assert time.monotonic() - start < 5
    release.set()


@pytest.mark.slow
def test_metrics_json_is_written_before_wandb_starts_and_the_run_ends_in_bounded_time(
    make_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    from singexp.tasks import run

    seen: list[bool] = []
    real_init, real_finish = wandb.init, wandb.finish
    out = tmp_path / "point"

    def slow_init(**kwargs: Any) -> Any:
        seen.append((out / "metrics.json").is_file())
        time.sleep(2)  # a slow server
        return real_init(**kwargs)

    release = threading.Event()
    monkeypatch.setattr(wandb, "init", slow_init)
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None: release.wait(120))
    monkeypatch.setattr(loggers, "FINISH_TIMEOUT", 1.0)
    cfg = make_cfg(
        "+experiment=sing_inn",
        "quick=true",
        "logger=wandb",
        "callbacks=none",
        "print_config=false",
        f"paths.output_dir={out}",
    )
    start = time.monotonic()
    try:
        results = run(cfg)
    finally:
        release.set()
        real_finish()
    assert seen == [True]  # metrics.json was on disk when wandb.init began
    assert json.loads((out / "metrics.json").read_text())["methods"] == json.loads(
        json.dumps(results["methods"])
    )
    assert time.monotonic() - start < 120  # finish waited 1 s, not 120
