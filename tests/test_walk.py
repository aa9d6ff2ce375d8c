"""The walk of one restoration run goes down the house (``tools/walk.py``): at most
:data:`TARGET` climbs back up a layer, and each model kind is asked for its model in one visit
to its home (:mod:`singexp.models`)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import walk  # repository tooling, not installed

#: issue 39's target (the walk climbed back 36 times when model kinds had no home)
TARGET = 12


@pytest.fixture(scope="module")
def edges() -> list[walk.Edge]:
    return walk.record_calls(walk.OVERRIDES)


@pytest.fixture(scope="module")
def path(edges: list[walk.Edge]) -> list[str]:
    return walk.walk(edges)


def test_the_walk_of_a_restoration_climbs_back_at_most_the_target(path: list[str]) -> None:
    climbs = walk.climbs(path)
    assert len(climbs) <= TARGET, climbs


def test_building_a_restoration_asks_each_model_kind_once(edges: list[walk.Edge]) -> None:
    """``assembly.build_restoration`` calls one function of each kind's home, which resolves,
    checks and loads that model (no check or load of a model is left to the assembly)."""
    asked = Counter(
        (callee, function)
        for caller, calling, callee, function in edges
        if caller == "singexp.assembly" and callee.startswith("singexp.models.")
    )
    assert asked == {
        ("singexp.models.jscc", "run_codec"): 1,
        ("singexp.models.inn", "run_inn"): 1,
        ("singexp.models.prior", "run_prior"): 1,
    }


def test_climbs_count_steps_into_a_higher_layer() -> None:
    path = ["singexp.tasks", "singexp.assembly", "singexp.samplers.loop", "singexp.models.inn"]
    assert walk.climbs(path) == [("singexp.samplers.loop", "singexp.models.inn")]
    assert walk.layer("singexp.models.prior") == 3 and walk.layer("singexp.points") == 5
