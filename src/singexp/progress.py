"""Progress of a run, rendered in one place with one library (rich; Lightning's bar is rich too).

What a reader sees:

- training and testing: Lightning's rich bar on a terminal (:func:`progress_bar`, the
  ``callbacks.progress_bar`` entry: :class:`RunProgressBar`, a :class:`StepProgressBar`); in a
  log, CI or a file, :class:`LineProgressBar` prints one line per epoch (and one every
  :data:`INTERVAL_S` seconds inside a long one) instead of a bar drawn only at the end.
- runs bounded by ``max_steps`` (the prior's training): one bar over all of the
  optimiser steps ("Step ━━━━ 1200/3000") rather than "Epoch 19/-2" (:class:`StepProgressBar`);
  epoch-bounded runs look as before.
- restoration: every sampling run (one method on one batch) is a task labelled with the method,
  ``batch i/n`` and, in a multirun, ``point i/n``, with an ETA of the whole test run. On a
  terminal it joins Lightning's live display; elsewhere it prints one line when it ends (and one
  every :data:`INTERVAL_S` seconds while it runs), e.g.
  ``SING-Zero batch 2/4: 100 steps in 12.3 s (ETA 40 s)``.

The sampling loop knows nothing of this: :func:`singexp.samplers.loop.sample` takes a
``progress`` hook (:func:`sampling` by default) that it enters with a label and a number of steps
and calls once per step. Where the loop runs (batch, sweep point) is told here by the progress
bar callback (:func:`set_batch`) and read from Hydra (:func:`sweep_point`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

T = TypeVar("T")

#: seconds between two progress lines of one task in non-interactive output
INTERVAL_S = 30.0


def interactive() -> bool:
    """Whether progress can be redrawn in place (a terminal); logs, CI and files get lines."""
    from rich.console import Console

    console = Console(stderr=True)
    return bool(console.is_terminal and not console.is_dumb_terminal)


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``40 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def say(line: str) -> None:
    """One progress line (stderr, flushed: it reaches a log file as it happens)."""
    print(line, file=sys.stderr, flush=True)


# ---- where the loop runs: batch of the test run, point of the sweep -------------------------
@dataclass
class RunState:
    """The test run's batches as the progress bar callback reports them (1-based ``batch``)."""

    batch: int | None = None
    batches: int | None = None
    batch_started: float = 0.0
    batch_times: list[float] = field(default_factory=list)
    #: the steps of each sampling task of a batch, in the order they run (:func:`set_plan`)
    plan: list[int] = field(default_factory=list)
    #: sampling tasks started in this batch
    task_index: int = 0


RUN = RunState()


def set_batch(index: int, total: int | float | None, now: float | None = None) -> None:
    """Batch ``index`` (0-based) of ``total`` starts (:class:`LineProgressBar` and
    :class:`RunProgressBar` call this in ``on_test_batch_start``)."""
    now = time.perf_counter() if now is None else now
    if RUN.batch is not None and index == RUN.batch:  # the previous batch ended
        RUN.batch_times.append(now - RUN.batch_started)
    elif index == 0:
        RUN.batch_times = []
    RUN.batch = index + 1
    RUN.batches = int(total) if total is not None and math.isfinite(total) else None
    RUN.batch_started = now
    RUN.task_index = 0


def set_plan(steps: list[int]) -> None:
    """The run's methods, as the steps of each sampling task of a batch in the order they run
    (the restoration task sets it): the ETA then counts the methods after the running one."""
    RUN.plan = [int(s) for s in steps]
    RUN.task_index = 0


def later_steps() -> int:
    """Steps of the planned tasks after the one starting now (and count it as started)."""
    index = RUN.task_index
    RUN.task_index += 1
    return sum(RUN.plan[index + 1 :])


def clear_batch() -> None:
    """The test run ended: sampling outside it has no batch."""
    RUN.batch, RUN.batches, RUN.batch_times = None, None, []
    RUN.plan, RUN.task_index = [], 0


def sweep_point() -> tuple[int, int | None] | None:
    """``(i, n)``: this job is point i (1-based) of a multirun of n points (n None when unknown);
    None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        num = int(hc.job.num)
    except Exception:  # no Hydra, or a config without the keys
        return None
    size = _sweep_size(hc)
    return num + 1, size if size is not None and size > num else None


def _sweep_size(hc: Any) -> int | None:
    """The number of points: an Optuna-style ``n_trials``, else the product of the sweep
    overrides' lengths (the command line's, then ``hydra.sweeper.params``); None if unknown."""
    sweeper = hc.get("sweeper") or {}
    if sweeper.get("n_trials"):
        return int(sweeper["n_trials"])
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        params = sweeper.get("params") or {}
        given = [f"{k}={v}" for k, v in params.items()]
        given += [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
        sizes: dict[str, int] = {}
        for override in parser.parse_overrides(given):
            if override.is_sweep_override():
                sizes[override.key_or_group] = len(list(override.sweep_string_iterator()))
            else:
                sizes.pop(override.key_or_group, None)
        return math.prod(sizes.values()) if sizes else None
    except Exception:  # an interval sweep, a worker without the command line
        return None


def where(desc: str) -> str:
    """``desc`` with the batch and sweep point: ``SING-Zero batch 2/4 · point 3/18``."""
    label = desc
    if RUN.batch is not None:
        label += f" batch {RUN.batch}/{RUN.batches}" if RUN.batches else f" batch {RUN.batch}"
    point = sweep_point()
    if point is not None:
        label += f" · point {point[0]}/{point[1]}" if point[1] else f" · point {point[0]}"
    return label


def remaining_seconds(elapsed: float, start: float, fraction: float) -> float:
    """Seconds left of a run that went from ``start`` to ``fraction`` done (0..1) in ``elapsed``
    seconds: the rate of this process only, so a run resumed at 40 % is not credited with the
    first 40 % (NaN until something was done)."""
    if not (math.isfinite(fraction) and fraction > start):
        return math.nan
    return elapsed * (1.0 - fraction) / (fraction - start)


def eta(done: int, total: int, started: float, now: float, later: int = 0) -> float:
    """Seconds left in the whole test run, all methods (or in this task and the ``later`` steps
    of the methods after it when there is no run): finished batches give the time per batch; in
    the first one the batch so far, this task projected to its end and the later methods'
    steps at this task's time per step stand for a batch."""
    elapsed = now - started
    task_left = elapsed * (total - done) / done if done else math.nan
    task_left += elapsed * later / done if done else 0.0  # the methods after this one
    if RUN.batch is None or not RUN.batches:
        return task_left
    in_batch = now - RUN.batch_started
    left_batches = RUN.batches - RUN.batch
    if RUN.batch_times:
        per_batch = sum(RUN.batch_times) / len(RUN.batch_times)
        return max(per_batch - in_batch, task_left if done else 0.0) + per_batch * left_batches
    if not done:
        return math.nan
    this_batch = in_batch + task_left
    return task_left + this_batch * left_batches


# ---- the hook the sampling loop calls --------------------------------------------------------
#: bars of a live Lightning display that sampling tasks join (at most one: the running trainer's)
_LIVE: list[Any] = []


def _live_progress() -> Any:
    for bar in _LIVE:
        progress = getattr(bar, "progress", None)
        if progress is not None and progress.live.is_started:
            return progress
    return None


@contextmanager
def sampling(desc: str, total: int) -> Iterator[Callable[[], None]]:
    """The default progress hook of :func:`~singexp.samplers.loop.sample`: a task of ``total``
    steps labelled ``desc`` (the method); yields the function to call after each step."""
    label = where(desc)
    started = time.perf_counter()
    done = 0
    later = later_steps()
    live = _live_progress()
    if live is not None or interactive():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        own = None
        if live is None:
            own = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            own.start()
        progress = live or own
        assert progress is not None  # own is started when there is no live display
        task = progress.add_task(label, total=total)

        def advance() -> None:
            nonlocal done
            done += 1
            left = eta(done, total, started, time.perf_counter(), later)
            progress.update(
                task, advance=1, description=f"{label} (ETA {format_seconds(left)}, all methods)"
            )

        try:
            yield advance
        finally:
            progress.remove_task(task)
            if own is not None:
                own.stop()
        return

    last = started

    def advance_line() -> None:
        nonlocal done, last
        done += 1
        now = time.perf_counter()
        if done < total and now - last >= INTERVAL_S:
            last = now
            left = format_seconds(eta(done, total, started, now, later))
            say(
                f"{label}: step {done}/{total}, {format_seconds(now - started)} "
                f"(ETA {left}, all methods)"
            )

    yield advance_line
    now = time.perf_counter()
    steps = f"{done} steps" if done == total else f"{done}/{total} steps"
    say(
        f"{label}: {steps} in {format_seconds(now - started)} "
        f"(ETA {format_seconds(eta(done, total, started, now, later))}, all methods)"
    )


def track(items: Iterable[T], description: str, total: int) -> Iterator[T]:
    """``items`` with progress: a transient rich bar on a terminal; otherwise a line every
    :data:`INTERVAL_S` seconds and one at the end (checking a large image folder)."""
    if interactive():
        from rich.progress import track as rich_track

        yield from rich_track(items, description, total=total, transient=True)
        return
    started = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - last >= INTERVAL_S and done < total:
            last = now
            left = format_seconds((now - started) * (total - done) / done)
            say(f"{description}: {done}/{total} (ETA {left})")
    say(f"{description}: {done}/{total} in {format_seconds(time.perf_counter() - started)}")


# ---- Lightning's progress bar ------------------------------------------------------------------
def counts_steps(trainer: Any) -> bool:
    """Whether ``trainer`` is bounded by ``max_steps`` rather than by epochs."""
    max_epochs = trainer.max_epochs
    max_steps = trainer.max_steps
    return (max_epochs is None or max_epochs < 0) and max_steps is not None and max_steps > 0


class StepProgressBar(RichProgressBar):
    """A ``RichProgressBar`` whose training bar counts optimiser steps up to ``max_steps`` when
    the run has no epoch limit (one bar for the whole run, never reset per epoch)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if not counts_steps(self.trainer):
            return super()._get_train_description(current_epoch)
        return f"{'Step':{len(self.validation_description)}}"

    @property
    def total_train_batches(self) -> int | float:
        if counts_steps(self.trainer):
            return int(self.trainer.max_steps)
        return super().total_train_batches

    def _initialize_train_progress_bar_id(self) -> None:
        super()._initialize_train_progress_bar_id()
        if counts_steps(self.trainer):
            self._update(self.train_progress_bar_id, self.trainer.global_step)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not counts_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled:
            return None
        if self.progress is not None and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # once: later epochs continue the count
        self.refresh()
        return None

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not counts_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
        return None


def progress_bar(**kwargs: Any) -> Any:
    """The ``callbacks.progress_bar`` of the configs: Lightning's rich bar on a terminal
    (:class:`RunProgressBar`), a line printer otherwise (:class:`LineProgressBar`: rich redraws
    nothing in a log, where the bar would appear only at the end)."""
    return RunProgressBar(**kwargs) if interactive() else LineProgressBar()


def _point_suffix() -> str:
    point = sweep_point()
    if point is None:
        return ""
    return f" (point {point[0]}/{point[1]})" if point[1] else f" (point {point[0]})"


def _test_batches(trainer: Any, dataloader_idx: int = 0) -> int | float | None:
    batches = getattr(trainer, "num_test_batches", None) or []
    return batches[dataloader_idx] if dataloader_idx < len(batches) else None


class RunProgressBar(StepProgressBar):
    """The rich bar of every run on a terminal: tells :mod:`singexp.progress` the test batch
    and lends its live display to the sampling tasks (rich draws one live display at a time)."""

    @property
    def test_description(self) -> str:
        return "Testing" + _point_suffix()

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_test_start(trainer, pl_module)
        _LIVE[:] = [self]

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        set_batch(batch_idx, _test_batches(trainer, dataloader_idx))

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_test_end(trainer, pl_module)
        clear_batch()
        _LIVE.clear()


class LineProgressBar(ProgressBar):
    """Progress as lines, for logs, CI and files: one per training epoch (with its ETA), one per
    test run, and one every :data:`INTERVAL_S` seconds inside a long epoch or test run. A run
    bounded by ``max_steps`` counts steps instead of epochs (as :class:`StepProgressBar`)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._last = 0.0
        self._tested = 0
        self._start_fraction = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _metrics(self, trainer: Any, pl_module: Any) -> str:
        items = self.get_metrics(trainer, pl_module).items()
        shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in items]
        shown = [s for s in shown if not s.startswith("v_num")]
        return (" · " + ", ".join(shown)) if shown else ""

    def _done(self, trainer: Any) -> tuple[str, float]:
        """``epoch 3/10`` or ``step 1200/3000``, and the fraction of the run done."""
        if counts_steps(trainer):
            step, total = trainer.global_step, int(trainer.max_steps)
            return f"step {step}/{total}", step / total
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        if total and total > 0:
            return f"epoch {epoch}/{total}", epoch / total
        return f"epoch {epoch}", math.nan

    def _line(self, trainer: Any, pl_module: Any, now: float, head: str, fraction: float) -> str:
        line = f"{head} in {format_seconds(now - self._started)}"
        left = remaining_seconds(now - self._started, self._start_fraction, fraction)
        if math.isfinite(left):
            line += f" (ETA {format_seconds(left)})"
        return line + self._metrics(trainer, pl_module) + _point_suffix()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = self._last = time.perf_counter()
        # a resumed run starts part-way: only what this process does measures its speed
        start = self._done(trainer)[1] if counts_steps(trainer) else 0.0
        self._start_fraction = start if math.isfinite(start) else 0.0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._enabled and now - self._last >= INTERVAL_S:
            self._last = now
            head, fraction = self._done(trainer)
            if not counts_steps(trainer):
                total = self.total_train_batches
                of = f"/{int(total)}" if total and math.isfinite(total) else ""
                head += f" batch {batch_idx + 1}{of}"
                if of and math.isfinite(fraction):  # within the epoch
                    epochs = trainer.max_epochs
                    fraction = (trainer.current_epoch + (batch_idx + 1) / total) / epochs
            say(self._line(trainer, pl_module, now, head, fraction))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._enabled or counts_steps(trainer):
            return
        now = time.perf_counter()
        self._last = now
        head, fraction = self._done(trainer)
        say(self._line(trainer, pl_module, now, head, fraction))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._enabled and counts_steps(trainer):
            head, _ = self._done(trainer)
            say(self._line(trainer, pl_module, time.perf_counter(), head, math.nan))

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = self._last = time.perf_counter()
        self._tested = 0

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        set_batch(batch_idx, _test_batches(trainer, dataloader_idx))

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._tested = batch_idx + 1
        now = time.perf_counter()
        total = float(_test_batches(trainer, dataloader_idx) or math.inf)
        if self._enabled and now - self._last >= INTERVAL_S and math.isfinite(total):
            self._last = now
            left = (now - self._started) * (total - self._tested) / self._tested
            say(
                f"testing batch {self._tested}/{int(total)} (ETA {format_seconds(left)})"
                + _point_suffix()
            )

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        clear_batch()
        if self._enabled:
            batches = self._tested
            took = format_seconds(time.perf_counter() - self._started)
            say(f"tested {batches} batch{'es' if batches != 1 else ''} in {took}{_point_suffix()}")
