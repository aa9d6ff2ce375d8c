"""Child processes that end with the benchmark that started them, however it ends.

A benchmark that starts long-lived children (``wait_policy.py``'s ``yes`` CPU hogs, ``grid.py``'s
grid command, ``gpu_throughput.py``'s CLI run) starts them with :func:`popen` or :func:`run`;
they are ended

- when the benchmark returns or raises: ``finally`` (:func:`end`, :func:`run`) and ``atexit``
  (:func:`end_all`);
- when it gets SIGTERM, SIGINT or SIGHUP (a test's timeout, Ctrl-C, a closed terminal): the
  handlers :func:`install` sets kill every child, then let the signal end the benchmark as it
  would have (the exit status still says which signal);
- when it is killed by SIGKILL, which runs no handler: on Linux every child asks the kernel, in
  the forked child before ``exec``, for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``, called through ctypes). The kernel delivers it at
  once, to ``yes`` as to Python, and it survives ``exec`` and ``setsid`` (the hogs in another
  session). The other option, a hog that is a Python loop polling ``os.getppid()``, would wait
  up to its polling period, cost a Python interpreter per hog and no longer be ``yes``, so the
  kernel's mechanism is used. Two caveats, both handled: the signal follows the parent
  *thread* (children are started from the main thread, which lives as long as the process),
  and a parent that died between ``fork`` and ``prctl`` is caught by comparing ``getppid()``
  with the parent's pid afterwards. Elsewhere (no ``prctl``) only the first two apply.

Each child leads a process group of its own (``setsid`` for those that ask for a session, else
``process_group=0``), and ending a child kills its group: what the child started in that group
(a grid's workers) ends with it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: the signals after which the benchmark ends its children, then ends as the signal says
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_live: list[subprocess.Popen[Any]] = []


def _libc_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, resolved in the parent (no ``dlopen`` in a forked child), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # prctl(int option, unsigned long arg2, ...): full-width arguments, not C ints
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    return prctl  # type: ignore[no-any-return]


_PRCTL = _libc_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies (None off Linux)."""
    prctl, parent = _PRCTL, os.getpid()
    if prctl is None:
        return None

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            os._exit(125)  # never a child that could outlive the benchmark
        if os.getppid() != parent:  # the parent died before prctl: nobody will send SIGKILL
            os._exit(125)

    return preexec


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **kwargs)``, killed with this process however it ends."""
    install()
    if not kwargs.get("start_new_session"):
        kwargs.setdefault("process_group", 0)
    child = subprocess.Popen(args, preexec_fn=die_with_parent(), **kwargs)
    _live.append(child)
    return child


def end(child: subprocess.Popen[Any]) -> None:
    """Kill ``child`` (and its process group), reap it, forget it."""
    if child.poll() is None:  # not reaped yet: its pid (and group id) cannot have been reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            child.kill()
    child.wait()
    with contextlib.suppress(ValueError):
        _live.remove(child)


def end_all() -> None:
    """Kill and reap every child still alive (``atexit``, the signal handlers)."""
    for child in list(_live):
        end(child)


def run(
    args: list[str], timeout: float | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` (``check``, ``capture_output``, ``timeout`` too; the child killed on a
    timeout or an exception) with a child from :func:`popen`."""
    check = kwargs.pop("check", False)
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    child = popen(args, **kwargs)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        end(child)
    done = subprocess.CompletedProcess(args, child.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def _on_signal(signum: int, frame: object) -> None:
    end_all()
    signal.signal(signum, signal.SIG_DFL)  # then end as the signal would have ended us
    os.kill(os.getpid(), signum)


_installed = False


def install() -> None:
    """The ``atexit`` hook and the SIGTERM/SIGINT/SIGHUP handlers (once; main thread only)."""
    global _installed
    if _installed:
        return
    atexit.register(end_all)
    for signum in SIGNALS:
        # a signal ignored on purpose (nohup: SIGHUP) stays ignored
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    _installed = True
