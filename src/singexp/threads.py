"""How many CPU threads torch uses: the ``threads`` config key (issue 18).

Nothing set torch's thread count before, so every process took all cores: measured on 2 cores
shared with other work, 2 threads ran a UNet forward 3.2× slower than 1 thread, while idle
they were 0.69× (measured for issue 18). ``threads=auto`` (default) picks

    min(cores // workers, cores − busy), at least 1

- ``cores``: the cores this process may run on (``os.sched_getaffinity``: taskset, cgroups,
  Slurm's ``--cpus-per-task``), not the machine's;
- ``workers``: parallel jobs of this sweep on the same cores (Hydra's joblib launcher
  ``n_jobs``; 1 for a single run or a launcher that places jobs on their own machines);
- ``busy``: cores other processes already keep busy (the 1-minute load average, rounded
  down), so a run started beside a training does not oversubscribe.

``OMP_NUM_THREADS`` in the environment wins over ``auto`` (the user chose); ``threads=N``
wins over both. The choice is logged and recorded in metrics.json (``threads``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from singexp.errors import ConfigError

log = logging.getLogger("singexp")

AUTO = "auto"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores kept busy by other processes: the 1-minute load average, rounded down."""
    try:
        return math.floor(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def choose_threads(
    setting: Any,
    *,
    cores: int,
    workers: int = 1,
    busy: int = 0,
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
    share = cores // max(1, workers)
    free = cores - max(0, busy)
    return max(1, min(share, free))


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
    launcher = hydra.launcher if "launcher" in hydra else None
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs", 1) or 1)
    return cores if n_jobs < 0 else max(1, n_jobs)


def apply_thread_policy(setting: Any) -> int:
    """Set torch's intra-op threads from ``threads`` (module docstring); returns the count."""
    cores = available_cores()
    threads = choose_threads(
        setting, cores=cores, workers=launcher_workers(cores), busy=busy_cores()
    )
    torch.set_num_threads(threads)
    log.info("threads: %d of %d cores (threads=%s)", threads, cores, setting)
    return threads
