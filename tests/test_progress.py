"""Progress: method, batch i/n, sweep point, ETA; lines (not redraws) in non-interactive output."""

from __future__ import annotations

import ast
import math
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from diffusers import UNet2DModel

from singexp import progress
from singexp.samplers.loop import sample
from singexp.samplers.schedulers import build_scheduler

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def _fresh_run() -> Any:
    progress.clear_batch()
    yield
    progress.clear_batch()


def test_sampling_prints_one_line_per_batch_with_batch_and_eta(
    unet: UNet2DModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not progress.interactive()  # pytest captures: not a terminal
    x = torch.zeros(1, 3, 16, 16)
    for batch in range(2):
        progress.set_batch(batch, 2)
        sample(unet, build_scheduler(kind="ddim"), x.shape, steps=3, desc="SING-Zero")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2  # one line per batch and method, nothing redrawn
    assert lines[0].startswith("SING-Zero batch 1/2: 3 steps in ")
    assert lines[1].startswith("SING-Zero batch 2/2: 3 steps in ")
    assert all("(ETA " in line for line in lines)
    assert lines[1].endswith("(ETA 0.0 s, all methods)")  # the last method: nothing left


def test_progress_false_and_a_custom_hook(unet: UNet2DModel, capsys: Any) -> None:
    calls: list[tuple[str, int]] = []
    ticks: list[int] = []

    @contextmanager
    def hook(desc: str, total: int) -> Any:
        calls.append((desc, total))
        yield lambda: ticks.append(1)

    shape = (1, 3, 16, 16)
    sample(unet, build_scheduler(kind="ddim"), shape, steps=4, progress=hook, desc="m")
    assert calls == [("m", 4)] and len(ticks) == 4
    sample(unet, build_scheduler(kind="ddim"), shape, steps=2, progress=False)
    assert capsys.readouterr().err == ""


def test_long_runs_print_intermediate_lines(monkeypatch: Any, capsys: Any) -> None:
    clock = iter(range(0, 1000, 20))  # every call to the clock: 20 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    progress.set_batch(0, 3)
    with progress.sampling("SING-INN", 4) as advance:
        for _ in range(4):
            advance()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("SING-INN batch 1/3: step ")
    assert lines[-1].startswith("SING-INN batch 1/3: 4 steps in ")
    assert all("ETA" in line for line in lines)


def test_eta_uses_finished_batches() -> None:
    progress.set_batch(0, 4, now=0.0)
    progress.set_batch(1, 4, now=10.0)  # batch 1 took 10 s
    # batch 2 of 4, 5 s into it, a task half done: 5 s left in it and two 10 s batches after it
    assert progress.eta(1, 2, started=12.5, now=15.0) == pytest.approx(25.0)
    progress.clear_batch()
    assert progress.eta(1, 4, started=0.0, now=2.0) == pytest.approx(6.0)  # no run: this task
    assert math.isnan(progress.eta(0, 4, started=0.0, now=2.0))


def test_where_names_the_sweep_point(monkeypatch: Any) -> None:
    monkeypatch.setattr(progress, "sweep_point", lambda: (3, 18))
    progress.set_batch(1, 2)
    assert progress.where("SING-Zero") == "SING-Zero batch 2/2 · point 3/18"


def test_sweep_size_from_the_command_line(monkeypatch: Any) -> None:
    from omegaconf import OmegaConf

    argv = ["singexp", "+experiment=sing_inn", "-m", "channel.snr_db=-5,0,5", "bcr=1_768,1_192"]
    monkeypatch.setattr(progress.sys, "argv", argv)
    hc = OmegaConf.create({"sweeper": {"params": {"seed": "1,2"}}})
    assert progress._sweep_size(hc) == 3 * 2 * 2
    assert progress._sweep_size(OmegaConf.create({"sweeper": {"n_trials": 4}})) == 4


def test_line_progress_bar_in_a_lightning_test_run(capsys: Any) -> None:
    class Module(L.LightningModule):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            with progress.sampling("SING-Zero", 2) as advance:
                advance()
                advance()

    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)
    bar = progress.progress_bar()
    assert isinstance(bar, progress.LineProgressBar)
    trainer = L.Trainer(logger=False, callbacks=[bar], enable_model_summary=False)
    trainer.test(Module(), data, verbose=False)
    err = capsys.readouterr().err
    assert "SING-Zero batch 1/2: 2 steps in" in err
    assert "SING-Zero batch 2/2: 2 steps in" in err
    assert "tested 2 batches in" in err
    assert progress.RUN.batch is None  # the run ended


def test_tqdm_is_gone_from_the_package() -> None:
    for path in (SRC / "singexp").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "tqdm" for n in names), path


def test_on_a_terminal_the_rich_bar_hosts_the_sampling_tasks(monkeypatch: Any) -> None:
    monkeypatch.setattr(progress, "interactive", lambda: True)
    bar = progress.progress_bar()
    assert isinstance(bar, progress.RunProgressBar)
    assert isinstance(bar, progress.StepProgressBar)  # max_steps runs count steps
    seen: list[int] = []

    class Module(L.LightningModule):
        def test_step(self, batch: Any, batch_idx: int) -> None:
            live = progress._live_progress()
            assert live is bar.progress  # one live display: Lightning's
            with progress.sampling("SING-Zero", 2) as advance:
                advance()
                (task,) = [t for t in live.tasks if t.description.startswith("SING-Zero")]
                assert task.description.startswith(f"SING-Zero batch {batch_idx + 1}/2 (ETA")
                seen.append(batch_idx)
                advance()
            assert not [t for t in live.tasks if t.description.startswith("SING-Zero")]

    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)
    trainer = L.Trainer(logger=False, callbacks=[bar], enable_model_summary=False)
    trainer.test(Module(), data, verbose=False)
    assert seen == [0, 1] and progress._live_progress() is None
    with progress.sampling("bench", 2) as advance:  # no trainer: a display of its own
        advance()
        advance()


def test_track_prints_a_closing_line_off_a_terminal(capsys: Any) -> None:
    assert list(progress.track(iter(range(5)), "checking 5 images", total=5)) == list(range(5))
    assert capsys.readouterr().err.startswith("checking 5 images: 5/5 in ")


def test_resumed_training_eta_counts_only_this_process(monkeypatch: Any, capsys: Any) -> None:
    # resumed at step 400 of 6000; 100 s later at step 450: 50 steps per 100 s, 5550 steps left
    trainer = SimpleNamespace(max_epochs=-1, max_steps=6000, global_step=400)
    bar = progress.LineProgressBar()
    clock = iter([0.0, 100.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bar, "get_metrics", lambda *a: {})
    bar.on_train_start(trainer, None)
    trainer.global_step = 450
    bar.on_train_batch_end(trainer, None, None, None, 0)
    line = capsys.readouterr().err.strip()
    assert "step 450/6000" in line, line
    expected = 100.0 * (6000 - 450) / (450 - 400)  # 11100 s = 3 h 05 min
    assert f"(ETA {progress.format_seconds(expected)})" in line, line


def test_remaining_seconds_formula() -> None:
    assert progress.remaining_seconds(100.0, 0.4, 0.5) == pytest.approx(100.0 * 0.5 / 0.1)
    assert progress.remaining_seconds(10.0, 0.0, 0.25) == pytest.approx(30.0)
    assert math.isnan(progress.remaining_seconds(10.0, 0.4, 0.4))


def test_eta_counts_the_methods_after_the_running_one(monkeypatch: Any, capsys: Any) -> None:
    """The first method's ETA is the run's: the later methods' steps at its time per step."""
    clock = iter(float(t) for t in range(10_000))  # every call to the clock: 1 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    progress.set_batch(0, 1, now=0.0)
    progress.set_plan([100, 400])  # SING-Zero 100 steps, then SING-INN 400
    with progress.sampling("SING-Zero", 100) as advance:
        for _ in range(100):
            advance()
    with progress.sampling("SING-INN", 400) as advance:
        for _ in range(400):
            advance()
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = [line for line in lines if " steps in " in line]
    # 101 s for 100 steps; 400 steps after it at 1.01 s each: 404 s, not 0
    assert first.startswith("SING-Zero batch 1/1: 100 steps in ")
    assert first.endswith("(ETA 6 min 44 s, all methods)"), first
    assert second.endswith("(ETA 0.0 s, all methods)"), second
    assert progress.eta(1, 4, started=0.0, now=2.0, later=10) == pytest.approx(26.0)
