"""The house goes down from the task layer.

- The raw Hydra config (``DictConfig``) stops at the task layer: :func:`singexp.config.validate`
  turns it into a typed :class:`~singexp.config.RunConfig` once, and no function below takes a
  ``DictConfig``. Allowed: the validator and composer (``config.py``), the schema reader that
  accepts any mapping (``schema.py``, a ``Mapping`` parameter), the task layer (``tasks.py``),
  the command line's entry points (``__main__.py``, ``restore_cli.py``) and the methods Hydra
  itself calls on its callbacks (``on_run_start``, ``on_multirun_*``).
- Nothing imports the task layer but the entry points; the user API (``pipeline.py``) is below it.
- ``tasks.py`` only orchestrates: short, and none of the artifact or sampler building blocks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from singexp.config import RunConfig, validate
from singexp.errors import ConfigError
from test_imports import SRC, import_graph

#: modules allowed to take a DictConfig, and why
DICTCONFIG_ALLOWED = {
    "singexp.config": "validates the composed config into RunConfig",
    "singexp.cli": "the command line's checks: composes the config to check its keys",
    "singexp.quick": "quick=true: sets the composed config's small form before validation",
    "singexp.config_print": "prints the composed config (print_config) as the run starts",
    "singexp.tasks": "the task layer: receives the composed config from the entry point",
    "singexp.__main__": "the command line's entry point (Hydra's main)",
    "singexp.restore_cli": "singexp restore's entry point (Hydra's main)",
}
#: entry points: the only modules that may import the task layer
ENTRY_POINTS = {"singexp.__main__"}
#: what tasks.py must not do itself (it asks the modules that own it)
NOT_IN_TASKS = (
    "ensure",
    "train_artifact",
    "require_codec",
    "resolve_inn",
    "resolve_prior_source",
    "load_codec",
    "load_inn",
    "load_prior",
    "build_scheduler",
    "build_restorers",
    "operator_from_config",
    "measured_sigma_y",
    "check_method",
)


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method in ``tree``."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, Any]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _takes_dictconfig(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    args = function.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return any(
        a is not None and a.annotation is not None and "DictConfig" in ast.unparse(a.annotation)
        for a in every
    )


def dictconfig_takers(modules: dict[str, Path]) -> list[str]:
    """Functions outside :data:`DICTCONFIG_ALLOWED` with a DictConfig parameter (Hydra callback
    methods excepted)."""
    found = []
    for name, path in modules.items():
        if name in DICTCONFIG_ALLOWED:
            continue
        for qualified, function in _functions(ast.parse(path.read_text())):
            hydra_callback = function.name.startswith(("on_run_", "on_multirun_", "on_job_"))
            if _takes_dictconfig(function) and not hydra_callback:
                found.append(f"{name}.{qualified}")
    return found


def test_no_module_below_the_task_layer_takes_a_dictconfig() -> None:
    assert dictconfig_takers(_modules()) == []


def test_the_dictconfig_check_finds_a_function_that_takes_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from omegaconf import DictConfig\n"
        "def build(cfg: DictConfig, n: int) -> None: ...\n"
        "class C:\n    def on_run_start(self, config: DictConfig) -> None: ...\n"
        "def fine(run: object) -> None: ...\n"
    )
    assert dictconfig_takers({"singexp.bad": bad}) == ["singexp.bad.build"]


def importers_of(target: str, graph: dict[str, set[str]]) -> set[str]:
    """Modules that import ``target``, directly or through others."""
    found: set[str] = set()
    frontier = {target}
    while frontier:
        frontier = {m for m, deps in graph.items() if deps & frontier and m not in found}
        found |= frontier
    return found


def test_only_the_entry_points_import_the_task_layer() -> None:
    graph = import_graph()
    assert importers_of("singexp.tasks", graph) <= ENTRY_POINTS
    assert "singexp.tasks" not in importers_of("singexp.pipeline", graph) | {"singexp.pipeline"}
    # and the walk of a restoration run goes down: the task layer uses the pipeline's parts
    assert (
        "singexp.assembly" in graph["singexp.tasks"]
        and "singexp.assembly" in (graph["singexp.pipeline"])
    )


def test_the_importers_check_sees_an_indirect_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": set(), "d": set()}
    assert importers_of("c", graph) == {"a", "b"}


def test_tasks_only_orchestrates() -> None:
    path = _modules()["singexp.tasks"]
    source = path.read_text()
    assert len(source.splitlines()) <= 300
    names = {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Name | ast.Attribute)
    }
    imported = {
        alias.asname or alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert sorted((names | imported) & set(NOT_IN_TASKS)) == []


# ---- the typed run config ----------------------------------------------------------------------
def test_validate_gives_the_typed_run_config(make_cfg: Any) -> None:
    run = validate(make_cfg("+experiment=sing_inn", "channel.snr_db=-3", "bcr=1_48"))
    assert isinstance(run, RunConfig)
    assert run.task == "restore" and run.bcr == Fraction(1, 48) and run.channel.snr_db == -3.0
    # the methods are checked objects, in the config's order
    assert list(run.methods) == ["sing_zero", "sing_inn"]
    assert run.methods["sing_inn"].name == "sing_inn" and run.methods["sing_inn"].config.steps > 0
    # the other groups are resolved plain mappings, no interpolation left
    assert run.data.spec["_target_"].startswith("singexp.data") and run.data.batch_size >= 1
    assert run.select("bcr.ratio") == "1/48" and run.select("no.such.key", 7) == 7
    assert "${" not in str(run.plain)


def test_with_settings_validates_the_derived_config_again(make_cfg: Any) -> None:
    run = validate(make_cfg("+experiment=sing_inn"))
    other = run.with_settings({"channel.snr_db": 4.0, "task": "jscc"})
    assert other.channel.snr_db == 4.0 and other.task == "jscc"
    assert run.channel.snr_db != 4.0  # the original is left as it was
    with pytest.raises(ConfigError, match=r"channel\.snr_db"):
        run.with_settings({"channel.snr_db": 1000.0})


def test_a_sampler_that_methods_would_ignore_fails_in_validate(make_cfg: Any) -> None:
    with pytest.raises(ConfigError, match=r"^sampler: is ignored by this experiment"):
        validate(make_cfg("+experiment=sing_inn", "sampler=sing_zero"))


def test_the_run_config_is_frozen(make_cfg: Any) -> None:
    """Nothing after validate writes into the run's config: what a run resolves is
    returned (require_codec) or kept in its RunState."""
    import dataclasses

    run = validate(make_cfg("+experiment=sing_inn"))
    embedded = run.jscc.checkpoint
    assert embedded is not None and embedded.endswith(".safetensors")  # validate resolved it
    for target, name, value in (
        (run, "task", "jscc"),
        (run, "seed", 1),
        (run, "jscc", None),
        (run.jscc, "checkpoint", "elsewhere.safetensors"),
        (run.channel, "snr_db", 9.0),
        (run.compute, "precision", "fp32"),
        (run.inn, "checkpoint", "auto"),
        (run.metrics, "lpips", False),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, value)
    assert not hasattr(run, "extra")  # the run's state lives in singexp.state.RunState
    derived = run.with_settings({"channel.snr_db": 2.0})  # another run: a new config
    assert derived.channel.snr_db == 2.0 and run.channel.snr_db != 2.0
    assert derived.jscc == run.jscc


def test_the_inn_and_metrics_groups_are_typed_and_checked_in_validate(make_cfg: Any) -> None:
    from singexp.metrics import MetricsConfig
    from singexp.models.inn import INNConfig

    run = validate(make_cfg("+experiment=sing_inn"))
    assert isinstance(run.inn, INNConfig) and isinstance(run.metrics, MetricsConfig)
    assert run.inn.checkpoint == "embedded" and run.inn.scale == run.plain["inn"]["scale"]
    assert run.metrics.perceptual_size == run.plain["metrics"]["perceptual_size"]
    # once, in validate: a bad key is a one-line error naming it before anything runs
    with pytest.raises(ConfigError, match=r"^inn\.lr: "):
        validate(make_cfg("+experiment=sing_inn", "inn.lr=-0.001"))
    with pytest.raises(ConfigError, match=r"^metrics\.perceptual_size: "):
        validate(make_cfg("+experiment=sing_inn", "metrics.perceptual_size=16"))
