"""The thread policy (``threads`` key, src/singexp/threads.py)."""

from __future__ import annotations

import pytest
import torch

from singexp.errors import ConfigError
from singexp.threads import apply_thread_policy, choose_threads


@pytest.mark.parametrize(
    ("cores", "workers", "busy", "expected"),
    [
        (2, 1, 0, 2),  # idle machine, one run: every core
        (2, 1, 1, 1),  # a training beside it keeps one core busy: one thread
        (2, 1, 5, 1),  # overloaded: never below 1
        (16, 4, 0, 4),  # joblib n_jobs=4 on 16 cores: a quarter each
        (16, 4, 14, 2),  # ... but only 2 cores free
        (8, 16, 0, 1),  # more workers than cores
    ],
)
def test_auto_is_the_cores_free_to_this_job(
    cores: int, workers: int, busy: int, expected: int
) -> None:
    # min(cores // workers, cores - busy), at least 1
    assert choose_threads("auto", cores=cores, workers=workers, busy=busy, env={}) == expected


def test_omp_num_threads_wins_over_auto_and_a_number_over_both() -> None:
    env = {"OMP_NUM_THREADS": "3"}
    assert choose_threads("auto", cores=16, workers=1, busy=0, env=env) == 3
    assert choose_threads(5, cores=16, workers=1, busy=0, env=env) == 5


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_bad_values_name_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^threads: ") as err:
        choose_threads(bad, cores=2, env={})
    assert "\n" not in str(err.value)


def test_policy_sets_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert apply_thread_policy(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
