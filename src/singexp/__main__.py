"""``singexp +experiment=NAME [overrides]`` (the installed command; ``python -m singexp`` is the
same, flags such as ``-m`` included): the one entry point.

User mistakes (a bad key, an unknown option, a missing dataset folder) end in one line on stderr
and exit status 2, without a traceback.
"""

from __future__ import annotations

# first, before anything imports torch: libgomp reads its wait policy once, when torch loads it
from singexp.threads import set_wait_policy

set_wait_policy()

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from singexp.cli import check_group_overrides, check_override_keys, quote_group_overrides
from singexp.config import CONF_DIR
from singexp.errors import ConfigError, SingexpError
from singexp.faults import SIGTERM_EXIT, Terminated, record_failure, sigterm_ends_point


def _fail(error: SingexpError) -> None:
    print(f"singexp: error: {error}", file=sys.stderr)
    sys.exit(2)


def _result(results: dict[str, Any], key: str, config_key: str) -> float:
    """The number at the dotted ``key`` of a run's results (metrics.json), e.g.
    ``methods.sing_inn.stlpips``; a missing or null one is a one-line error naming
    ``config_key``."""
    value: Any = results
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(config_key, f"{key!r} is not a number in this run's metrics.json")
    return float(value)


def objective(cfg: DictConfig, results: dict[str, Any]) -> float:
    """What a hyper-parameter search (``hparams_search``, Hydra's Optuna sweeper) optimises:
    ``optimized_metric`` (a dotted key of metrics.json) plus, with ``objective_penalty``,
    ``weight × max(0, floor − margin − value)``: e.g. ST-LPIPS of SING-INN, penalised when its
    PSNR falls more than ``margin`` dB below DeepJSCC's."""
    key = str(cfg.optimized_metric)
    total = metric = _result(results, key, "optimized_metric")
    line = f"{key} {metric:.4f}"
    penalty = cfg.get("objective_penalty")
    if penalty:
        missing = [k for k in ("value", "floor", "margin", "weight") if penalty.get(k) is None]
        if missing:
            raise ConfigError(f"objective_penalty.{missing[0]}", "must be set")
        value = _result(results, str(penalty.value), "objective_penalty.value")
        floor = _result(results, str(penalty.floor), "objective_penalty.floor")
        shortfall = max(0.0, floor - float(penalty.margin) - value)
        total += float(penalty.weight) * shortfall
        line += f" + {float(penalty.weight):g} × {shortfall:.4f} ({penalty.value} below floor)"
    print(f"objective: {line} = {total:.4f}")
    return total


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Run the task; return the ``optimized_metric`` objective when set (for sweepers such as
    Optuna's), else nothing."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from singexp.tasks import run

    try:
        results = run(cfg)
        if cfg.get("optimized_metric"):
            return objective(cfg, results)
        return None
    except Exception as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            from singexp.report import FAILED_POINTS

            # one failing grid point is recorded in its folder; the sweep goes on
            out = Path(HydraConfig.get().runtime.output_dir)
            FAILED_POINTS.append(out)
            details = record_failure(out, error)
            print(f"singexp: error in {out.name}: {error} ({details})", file=sys.stderr)
            return None
        # a failed run keeps its folder (.hydra/, the log) with error.txt saying why
        record_failure(Path(HydraConfig.get().runtime.output_dir), error)
        if isinstance(error, SingexpError):
            _fail(error)
        raise


def main() -> None:
    if sys.argv[1:2] == ["restore"]:  # singexp restore PATH... [overrides]: singexp.pipeline
        from singexp.restore_cli import restore_cli

        restore_cli(sys.argv[2:])
        return
    try:
        check_group_overrides(sys.argv[1:])
    except SingexpError as error:
        _fail(error)
    # `+experiment=x -m a=1,2`: argparse refuses overrides on both sides of a flag; flags first
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    rest = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
    rest = quote_group_overrides(rest)
    try:
        check_override_keys(rest)
    except SingexpError as error:
        _fail(error)
    sys.argv[1:] = flags + rest
    try:
        with sigterm_ends_point():  # between points too; the current point ends as on Ctrl-C
            hydra_main()
    except Terminated:
        print(
            "singexp: stopped by SIGTERM; finished results are kept, the unfinished point has "
            "none: re-run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(SIGTERM_EXIT)
    from singexp.report import FAILED_POINTS

    failed = list(dict.fromkeys(p.resolve() for p in FAILED_POINTS))
    if failed:  # the sweep went on past them; its exit status still says so
        names = ", ".join(p.name for p in failed)
        print(f"singexp: {len(failed)} grid point(s) failed: {names}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
