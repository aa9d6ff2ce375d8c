"""What keeps results whole under faults (docs/guide/faults.md): a kill, SIGTERM, a full disk, two
jobs at once, a moved folder.

- :func:`atomic_write_text`: results are written to a temporary file beside the target, then
  renamed over it, so a file is either the old one, the new one, or absent, never torn.
- a ``metrics.json`` counts only when it parses and is complete
  (:func:`singexp.points.read_results`).
- :func:`point_lock`: one job at a time computes a run folder (a grid point); a second copy of
  the same sweep waits for it and then reuses its results.
- :func:`sigterm_ends_point`: SIGTERM ends the current point as Ctrl-C does (:class:`Terminated`);
  a framework that already handles SIGTERM (submitit: it requeues on its own signal) is left be.
- :func:`resume_checkpoint`: a training killed part-way resumes from its run folder's
  ``checkpoints/last.ckpt`` (DeepJSCC, the INN and the prior alike).
- :func:`set_aside_unfinished_wandb`: offline W&B runs of attempts that never finished are renamed
  so that ``make sync-wandb`` does not upload them beside the finished run.
- :class:`OutputCheck`: a Hydra callback that refuses, in one line, an output folder that cannot
  be written and ``launcher=slurm`` without Slurm, before Hydra creates anything.
- :func:`record_failure`: a run or grid point that fails keeps its folder (``.hydra/``, the log)
  and gets ``error.txt``: the one-line error first, then the traceback (none for a user mistake,
  a :class:`~singexp.errors.SingexpError`); a later successful run of it removes the file.

Light imports only: ``singexp.report`` uses it without torch.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from singexp.errors import ConfigError, SingexpError

log = logging.getLogger("singexp.faults")

#: exit status of a job ended by SIGTERM (128 + 15, as the shell reports it)
SIGTERM_EXIT = 128 + int(signal.SIGTERM)
# the process's umask (read by setting it, then restored): the mode open() would give a new file
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class WriteError(SingexpError, OSError):
    """A result file could not be written (a full disk, a read-only folder): one line naming
    the file and the reason; an OSError too, with the original ``errno``."""

    def __init__(self, path: str | Path, error: OSError) -> None:
        self.path = Path(path)
        self.message = f"cannot write {path}: {error.strerror or error}"
        super().__init__(error.errno, self.message)

    def __str__(self) -> str:
        return self.message


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, same suffix: writers that read the format
    from it, such as ``savefig``, keep working) to write to; renamed over ``path`` when the block
    ends without error. On any failure (a full disk, SIGTERM) ``path`` is untouched and the
    temporary file is removed; an OSError becomes a one-line :class:`WriteError` naming ``path``.
    A SIGKILL may leave a ``.NAME.*.tmp`` beside it, which nothing reads."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
        os.close(fd)
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(path, error) from error
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; results are as open() makes
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(path, error) from error
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`): a temporary file in the same
    folder, flushed to disk, then renamed over ``path``; on a failure ``path`` is untouched, no
    temporary file is left and an OSError is a one-line :class:`WriteError`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def resume_checkpoint(out_dir: str | Path, enabled: bool, what: str = "training") -> str | None:
    """``out_dir/checkpoints/last.ckpt`` when ``enabled`` and it exists (logged: "resuming
    ``what`` from ..."), else None: the ``ckpt_path`` of a fit that picks up where it stopped."""
    last = Path(out_dir) / "checkpoints" / "last.ckpt"
    if not (enabled and last.is_file()):
        return None
    log.info("resuming %s from %s", what, last)
    return str(last)


@contextmanager
def point_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while computing the run folder ``out``: another job (a second copy of
    the same sweep) that reaches the same point waits, then finds its results and reuses them.
    The lock is the kernel's (``flock``): a killed holder releases it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(out) / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another job is computing %s: waiting for it, then reusing its results", out)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class Terminated(BaseException):
    """SIGTERM arrived: the current point stops like on Ctrl-C (no results written, loggers
    closed as failed); a re-run of the same command resumes. A BaseException, so that neither
    the sweep's per-point error handling nor Lightning turns it into a failed point."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signal.Signals(signum).name}")


@contextmanager
def _raising_on(signum: int, default: Any, handler: Any) -> Iterator[None]:
    """Install ``handler`` for ``signum`` in the body when the signal has its ``default``
    handler and this is the main thread (else leave it be: something else handles it); the
    default is put back after."""
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signum) is default
    )
    if not install:
        yield
        return
    signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, default)


def sigterm_ends_point() -> AbstractContextManager[None]:
    """Turn SIGTERM into :class:`Terminated` in the body, unless something else already handles
    SIGTERM (submitit bypasses it and checkpoints/requeues on its own signal; an outer use of
    this function) or this is not the main thread."""
    return _raising_on(signal.SIGTERM, signal.SIG_DFL, _raise_terminated)


class Interrupted(BaseException):
    """Ctrl-C (SIGINT): the current point stops as on SIGTERM. Not a KeyboardInterrupt, so that
    Lightning does not turn it into its own ``sys.exit(1)`` with one line of its own."""


#: exit status of a job ended by Ctrl-C (128 + 2, as the shell reports it)
SIGINT_EXIT = 128 + int(signal.SIGINT)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted("interrupted (Ctrl-C)")


def sigint_ends_point() -> AbstractContextManager[None]:
    """Turn Ctrl-C into :class:`Interrupted` in the body, where SIGINT has Python's default
    handler and this is the main thread (else leave it be)."""
    return _raising_on(signal.SIGINT, signal.default_int_handler, _raise_interrupted)


def set_aside_unfinished_wandb(out: Path) -> list[Path]:
    """Rename the offline W&B runs in ``out/wandb`` of attempts that did not finish (no copy of
    ``metrics.json`` among their files: killed, terminated or failed) to ``aborted-<name>``, so
    that ``make sync-wandb`` (which uploads ``offline-run-*``) never uploads a partial duplicate
    of a point. Returns the new folders."""
    moved = []
    for run in sorted((Path(out) / "wandb").glob("offline-run-*")):
        if run.is_dir() and not run.is_symlink() and not (run / "files" / "metrics.json").is_file():
            target = run.with_name(f"aborted-{run.name}")
            shutil.move(run, target)
            moved.append(target)
    if moved:
        log.warning(
            "set aside %d unfinished W&B run(s) of an earlier attempt (not synced): %s",
            len(moved),
            ", ".join(p.name for p in moved),
        )
    return moved


ERROR_FILE = "error.txt"


def record_failure(out: Path, error: BaseException) -> str:
    """Write ``out/error.txt`` for a failed run: ``<Type>: <message>`` on the first line (what
    ``head -1`` and the sweep report show), then the traceback unless the error is a user
    mistake (:class:`~singexp.errors.SingexpError`, whose message says it all). The folder is
    kept, so the log beside it stays readable. Returns what to print after the error line:
    where the details are, or why they could not be written (a full disk)."""
    import traceback

    from singexp.errors import SingexpError

    line = (
        f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    )
    text = line + "\n"
    if not isinstance(error, SingexpError):
        text += "\n" + "".join(traceback.format_exception(error))
    path = Path(out) / ERROR_FILE
    try:
        atomic_write_text(path, text)
    except OSError as write_error:  # a full disk: the caller's line is all there is
        return f"{ERROR_FILE} not written: {write_error}"
    return f"details: {path}"


def check_writable(key: str, folder: str | Path) -> None:
    """A one-line ConfigError naming ``key`` when ``folder`` cannot be created or written (a
    read-only file system or folder, a file in the way). Creates ``folder`` (as Hydra would)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".singexp-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(
            key,
            f"cannot write to {folder} ({error.strerror or error}); point paths.root (or "
            "SINGEXP_OUTPUT), hydra.run.dir or hydra.sweep.dir at a writable folder",
        ) from None


def check_launcher(launcher: Any) -> None:
    """``launcher=slurm`` needs Slurm's ``sbatch``: say so in one line, not in submitit's
    traceback."""
    target = str((launcher or {}).get("_target_", ""))
    if "Slurm" in target and shutil.which("sbatch") is None:
        raise ConfigError(
            "launcher",
            "slurm needs Slurm (no sbatch on PATH on this machine); run it on the cluster's "
            "login node, or use launcher=joblib or launcher=submitit_local here",
        )


class OutputCheck(Callback):
    """Hydra callback: before Hydra creates the run (or sweep) folder, refuse in one line (exit
    status 2) a folder that cannot be written and a Slurm launcher without Slurm."""

    @staticmethod
    def _check(check: Any, *args: Any) -> None:
        try:
            check(*args)
        except ConfigError as error:  # Hydra would print a traceback: one line, as __main__ does
            print(f"singexp: error: {error}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(check_writable, "hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(check_launcher, config.hydra.get("launcher"))
        self._check(check_writable, "hydra.sweep.dir", config.hydra.sweep.dir)
