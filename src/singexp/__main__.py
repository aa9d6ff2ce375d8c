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

from singexp.cli import (
    check_group_overrides,
    check_launcher_multirun,
    check_override_keys,
    check_override_syntax,
    quote_group_overrides,
)
from singexp.config import CONF_DIR
from singexp.errors import SingexpError
from singexp.faults import (
    SIGINT_EXIT,
    SIGTERM_EXIT,
    Interrupted,
    Terminated,
    record_failure,
    sigint_ends_point,
    sigterm_ends_point,
)


def _fail(error: SingexpError) -> None:
    print(f"singexp: error: {error}", file=sys.stderr)
    sys.exit(2)


def objective(cfg: DictConfig, results: dict[str, Any]) -> float:
    """What a hyper-parameter search optimises (:func:`singexp.points.objective`), printed."""
    from omegaconf import OmegaConf

    from singexp.points import objective as score

    penalty = cfg.get("objective_penalty")
    settings = {
        "optimized_metric": cfg.get("optimized_metric"),
        "objective_penalty": OmegaConf.to_container(penalty, resolve=True) if penalty else None,
    }
    total, line = score(settings, results)
    print(f"objective: {line}")
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
        check_override_syntax(sys.argv[1:])
        check_launcher_multirun(sys.argv[1:])
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
        # between points too; the current point ends, no results written for it
        with sigterm_ends_point(), sigint_ends_point():
            hydra_main()
    except (Interrupted, KeyboardInterrupt):
        print(
            "singexp: interrupted (Ctrl-C); finished points are kept, the unfinished point has "
            "none: re-run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(SIGINT_EXIT)
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
