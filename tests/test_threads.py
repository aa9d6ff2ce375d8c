"""The thread policy (``threads`` key, src/singexp/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from singexp.errors import ConfigError
from singexp.threads import apply_thread_policy, choose_threads, wait_policy_env


@pytest.mark.parametrize(
    ("cores", "workers", "expected"),
    [
        (2, 1, 2),  # one run: every core it may use
        (16, 4, 4),  # joblib n_jobs=4 on 16 cores: a quarter each
        (6, 4, 1),  # 6 // 4
        (8, 16, 1),  # more workers than cores: never below 1
    ],
)
def test_auto_is_this_jobs_share_of_its_cores(cores: int, workers: int, expected: int) -> None:
    # cores // workers, at least 1
    assert choose_threads("auto", cores=cores, workers=workers, env={}) == expected


def test_omp_num_threads_wins_over_auto_and_a_number_over_both() -> None:
    env = {"OMP_NUM_THREADS": "3"}
    assert choose_threads("auto", cores=16, workers=1, env=env) == 3
    assert choose_threads(5, cores=16, workers=1, env=env) == 5


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


def test_wait_policy_is_passive_unless_the_user_chose_one() -> None:
    assert wait_policy_env({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert wait_policy_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert wait_policy_env({"GOMP_SPINCOUNT": "10000"}) == {}
    assert wait_policy_env({"OMP_WAIT_POLICY": " "}) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_command_line_sets_the_wait_policy_before_torch_loads() -> None:
    # libgomp reads OMP_WAIT_POLICY once, when torch loads it: the entry point must set it first
    code = (
        "import os, singexp.__main__, singexp.threads as t; "
        "print(os.environ.get('OMP_WAIT_POLICY'), t.set_before_torch, t.wait_policy())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[0] == "PASSIVE True OMP_WAIT_POLICY=PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own choice is kept
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[0] == "ACTIVE True OMP_WAIT_POLICY=ACTIVE"


def test_recorded_wait_policy_says_when_it_came_too_late(monkeypatch: pytest.MonkeyPatch) -> None:
    from singexp import threads

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.wait_policy() == "libgomp default (spin)"
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(threads, "set_before_torch", True)
    assert threads.wait_policy() == "OMP_WAIT_POLICY=PASSIVE"
    # set by set_wait_policy() after torch had loaded libgomp: recorded as not in effect
    monkeypatch.setattr(threads, "set_before_torch", False)
    assert threads.wait_policy().endswith("(set after torch loaded: not in effect)")
