"""The walk of one restoration run down the house: which module calls which, and every call
that climbs back up a layer.

Runs the main job's config (``+experiment=sing_inn``) at tiny settings in this process under a
profiler and records each call from one singexp module into another (the caller is the
nearest singexp frame: a call that Lightning or torch makes on singexp's behalf counts as the
singexp function that started it). Each module has its layer in :data:`LAYERS` (the layers of
``docs/ARCHITECTURE.md``, top = 1); a *climb* is a call into a module of a higher layer
(a smaller number), counted once per (caller function, callee function). Reading the typed
run config (a method or property of a class of ``singexp.config``: ``run.latent``,
``run.select``, ...) is reading the data handed down, not a climb.

    .venv/bin/python tools/walk.py            # the summary: climbs, and entries per module
    .venv/bin/python tools/walk.py --edges    # every climbing call

Repository tooling, not installed; ``tests/test_walk.py`` holds the walk to its target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from types import FrameType
from typing import Any

#: module (or package prefix) -> layer; the longest matching prefix wins
LAYERS: dict[str, int] = {
    # 1 the entry points
    "singexp.__main__": 1,
    "singexp.restore_cli": 1,
    "singexp.cli": 1,
    # 2 the task layer: validates the config once, orchestrates the tasks
    "singexp.tasks": 2,
    "singexp.quick": 2,
    "singexp.config_print": 2,
    "singexp.config": 2,
    # 3 what a run is built of: the model kinds, a restoration, the Python API, the checks
    "singexp.models": 3,
    "singexp.assembly": 3,
    "singexp.pipeline": 3,
    "singexp.preflight": 3,
    # 4 the building blocks
    "singexp.samplers": 4,
    "singexp.modules": 4,
    "singexp.nn": 4,
    "singexp.data": 4,
    "singexp.evaluation": 4,
    "singexp.operators": 4,
    "singexp.channel": 4,
    "singexp.metrics": 4,
    "singexp.trainers": 4,
    "singexp.callbacks": 4,
    "singexp.loggers": 4,
    "singexp.printing": 4,
    "singexp.progress": 4,
    "singexp.visualize": 4,
    "singexp.distributed": 4,
    "singexp.threads": 4,
    "singexp.flops": 4,
    "singexp.tuning": 4,
    "singexp.report": 4,
    # 5 the bottom
    "singexp": 5,
}

#: the tiny main job the walk follows
OVERRIDES = (
    "+experiment=sing_inn",
    "quick=true",
    "logger=none",
    "callbacks=none",
    "print_config=false",
    "dataset.test_size=2",
    "dataset.batch_size=2",
    "evaluate.grid_images=2",
)


def layer(module: str) -> int:
    """The layer of ``module`` (:data:`LAYERS`, longest prefix)."""
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYERS[best] if best else 5


Edge = tuple[str, str, str, str]  # caller module, caller function, callee module, callee function


def is_config_read(module: str, function: str) -> bool:
    """A method or property of a typed config class (reading the data handed down)."""
    return module == "singexp.config" and "." in function


def record_calls(overrides: Sequence[str]) -> list[Edge]:
    """Every (caller, callee) pair between two singexp modules while the run of ``overrides``
    runs (outputs in a temporary folder), in the order each pair is first called."""
    from singexp.cli import compose_config
    from singexp.tasks import run

    edges: dict[Edge, None] = {}  # ordered set

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith("singexp"):
            return
        caller = frame.f_back
        while caller is not None and not str(caller.f_globals.get("__name__", "")).startswith(
            "singexp"
        ):
            caller = caller.f_back
        if caller is None:
            return
        calling = str(caller.f_globals["__name__"])
        if calling != module:
            edges.setdefault((calling, caller.f_code.co_qualname, module, frame.f_code.co_qualname))

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([*overrides, f"paths.root={out}", f"paths.output_dir={out}/run"])
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            run(cfg)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type,unused-ignore]  # None unsets it
    return list(edges)


def walk(edges: Sequence[Edge]) -> list[str]:
    """The modules the run enters, in order (each call pair once, at its first call; repeats
    in a row folded), leaving out the bottom layer (called from every layer by design) and
    reads of the typed config."""
    path: list[str] = []
    for _, _, module, function in edges:
        if layer(module) == 5 or is_config_read(module, function):
            continue
        if not path or path[-1] != module:
            path.append(module)
    return path


def climbs(path: Sequence[str]) -> list[tuple[str, str]]:
    """The steps of the walk into a higher layer (a smaller number): ``(from, to)``."""
    return [(a, b) for a, b in pairwise(path) if layer(b) < layer(a)]


def reentries(path: Sequence[str]) -> Counter[str]:
    """Per module, how many times the walk enters it again after leaving it."""
    return Counter({m: n - 1 for m, n in Counter(path).items() if n > 1})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="list every climb")
    args = parser.parse_args(argv)
    path = walk(record_calls(OVERRIDES))
    up = climbs(path)
    print(f"{len(up)} climbs back up the layers in the walk of one restoration run")
    if args.edges:
        for a, b in up:
            print(f"  {a} (layer {layer(a)}) -> {b} (layer {layer(b)})")
    print("re-entries per module:")
    for module, n in reentries(path).most_common(12):
        print(f"  {n:4d}  {module}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
