"""How CPU threads are used: the ``threads`` config key and the OpenMP wait policy.

**Thread count.** ``threads=auto`` (default) picks ``cores // workers``, at least 1:

- ``cores``: the cores this process may run on (``os.sched_getaffinity``: taskset, cgroups,
  Slurm's ``--cpus-per-task``), not the machine's;
- ``workers``: parallel jobs of this sweep on the same cores (Hydra's joblib launcher
  ``n_jobs``; 1 for a single run or a launcher that places jobs on their own machines).

``OMP_NUM_THREADS`` in the environment wins over ``auto`` (the user chose); ``threads=N`` wins
over both. The choice is logged and recorded in metrics.json (``threads``).

**Wait policy.** What made a run beside other work slow was less the thread count than how
torch's OpenMP threads wait for each other. libgomp's default spins before sleeping; when another
process holds a core, the spinning thread burns its time slice waiting for a thread that is not
running. Measured on 2 cores (``benchmarks/results/wait_policy.md``: 12 UNet forwards at batch
32; idle / two CPU hogs in the job's session / the hogs each in a session of its own): spinning
2 threads 1.96 / 8.31 / 12.72 s, passive 2 threads 2.39 / 4.24 / 6.54 s, one thread 3.59 /
4.90 / 4.56 s; the main job beside two hogs took 1.62× (same session) and 1.53× (another
session) of its idle time with passive waiting. So the command line (``python -m singexp``,
``singexp``) sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (libgomp reads it once,
when it loads), unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``; metrics.json
records it (``omp_wait_policy``). Passive waiting costs about 15–20 % on idle cores:
``GOMP_SPINCOUNT=300000`` (libgomp's default spin) gets it back on cores of one's own. The
earlier policy, one thread when the 1-minute load average said a core was busy, is gone: that
average lags by minutes (a run started just after another got 1 thread on idle cores).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from singexp.errors import ConfigError

log = logging.getLogger("singexp")

AUTO = "auto"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: the OpenMP wait policy the command line sets (module docstring)
WAIT_POLICY = "PASSIVE"
#: the environment variables by which a user chooses the wait policy themselves
WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The wait-policy variables set (non-blank) in ``env``."""
    return {key: env[key] for key in WAIT_KEYS if env.get(key, "").strip()}


def wait_policy_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env`` for the wait policy: none when the user chose one."""
    return {} if wait_variables(env) else {"OMP_WAIT_POLICY": WAIT_POLICY}


#: whether :func:`set_wait_policy` ran before torch was imported (None: it did not run)
set_before_torch: bool | None = None


def set_wait_policy() -> bool:
    """Set the wait policy in this process's environment (and so its children's, e.g. joblib
    workers). Returns whether it can still take effect: torch not imported yet."""
    global set_before_torch
    added = wait_policy_env(os.environ)
    os.environ.update(added)
    # a user's own variables were in the environment when the process (and libgomp) started
    set_before_torch = not added or "torch" not in sys.modules
    return set_before_torch


def wait_policy() -> str:
    """What this process's OpenMP threads do while waiting, for metrics.json. A policy set in
    the environment only after torch loaded is not in effect (``torch`` imported first, e.g. a
    Python session calling :func:`singexp.tasks.run`)."""
    chosen = wait_variables(os.environ)
    if not chosen:
        return "libgomp default (spin)"
    text = ", ".join(f"{k}={v}" for k, v in chosen.items())
    return text + (" (set after torch loaded: not in effect)" if set_before_torch is False else "")


def choose_threads(
    setting: Any,
    *,
    cores: int,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> int:
    """The thread count for ``threads=setting`` (module docstring); a ConfigError names the key."""
    if isinstance(setting, bool) or (not isinstance(setting, int) and str(setting) != AUTO):
        raise ConfigError("threads", f"is {setting!r}; use auto or a whole number ≥ 1")
    if isinstance(setting, int):
        if setting < 1:
            raise ConfigError("threads", f"is {setting}; use auto or a whole number ≥ 1")
        return setting
    env = os.environ if env is None else env
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    return max(1, cores // max(1, workers))


def launcher_workers(cores: int) -> int:
    """Parallel jobs sharing this machine's cores: the joblib launcher's ``n_jobs`` inside a
    Hydra multirun (-1 = one per core), else 1."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return 1
    if not HydraConfig.initialized():
        return 1
    hydra = HydraConfig.get()
    launcher = hydra.launcher if "launcher" in hydra else None  # type: ignore[operator]  # HydraConfig.get() is typed HydraConf; it returns a DictConfig
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs", 1) or 1)
    return cores if n_jobs < 0 else max(1, n_jobs)


def apply_thread_policy(setting: Any) -> int:
    """Set torch's intra-op threads from ``threads`` (module docstring); returns the count."""
    import torch

    cores = available_cores()
    threads = choose_threads(setting, cores=cores, workers=launcher_workers(cores))
    torch.set_num_threads(threads)
    log.info("threads: %d of %d cores (threads=%s; %s)", threads, cores, setting, wait_policy())
    return threads
