"""A report's orchestration: :func:`report` writes every table and figure of a sweep folder,
:func:`report_to_wandb` logs them in one W&B run of the sweep's group, and
:class:`ReportCallback` does both when a Hydra multirun ends, gathering the failed points in
:data:`FAILED_POINTS`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from singexp.report.collect import (
    collect,
    failed_points,
    paired_rows,
    sweep_info,
    sweep_points,
    unmeasured,
)
from singexp.report.figures import FIGURES, plot, plot_steps, steps_figure, steps_vary
from singexp.report.labels import short_name
from singexp.report.tables import (
    flat_row,
    write_drop,
    write_flops,
    write_paired,
    write_tables,
    write_trials,
)
from singexp.resolvers import sweep_group

log = logging.getLogger("singexp.report")


#: failed points of the multiruns of this process (python -m singexp exits 1 when any)
FAILED_POINTS: list[Path] = []


def report(sweep_dir: str | Path) -> dict[str, Any]:
    """Tables and figures for every finished grid point under ``sweep_dir``; failed points and
    metrics that could not be measured are listed under the table. ``unchanged``: the table is
    the one already there (nothing new was evaluated)."""
    sweep_dir = Path(sweep_dir)
    points_found, duplicates = sweep_points(sweep_dir)  # each point's files read once here
    rows = collect(sweep_dir, points_found)
    out = sweep_dir / "report"
    failed = failed_points(sweep_dir)
    if not rows:
        log.warning("no finished restoration results under %s", sweep_dir)
        return {"points": 0, "rows": 0, "files": [], "failed": [str(f) for f in failed]}
    before = (out / "results.csv").read_text() if (out / "results.csv").is_file() else None
    notes = [f"{short_name(m)} not measured: {why}" for m, why in unmeasured(sweep_dir).items()]
    notes += [
        f"failed point: {f.relative_to(sweep_dir)} (see its error.txt)"
        if (f / "error.txt").is_file()
        else f"unfinished point: {f.relative_to(sweep_dir)} (torn metrics.json)"
        for f in failed
    ]
    notes += [
        f"{other.relative_to(sweep_dir)} is the same point as {kept.relative_to(sweep_dir)} "
        "(they differ only in keys that do not change results: singexp.points.NOT_IDENTITY); "
        "the newer is shown"
        for kept, other in duplicates
    ]
    trials, trial_files = write_trials(points_found, sweep_dir, out)
    files = [*write_tables(rows, out, notes, trials), *trial_files, *write_drop(rows, out)]
    info = sweep_info(sweep_dir)
    files += write_paired(paired_rows(sweep_dir, points_found), out, info)
    by_steps = steps_vary(rows)
    one_snr = len({r["snr_db"] for r in rows}) == 1
    for metric in FIGURES:
        if not (by_steps and one_snr):  # a single SNR: the steps figures say it all
            files += plot(rows, metric, out, info)
        if by_steps:
            files += plot_steps(rows, metric, out, info)
    if by_steps:
        files += write_flops(rows, out)
    if len({r["inn_pairs"] for r in rows if r.get("inn_pairs")}) > 1:
        for metric in FIGURES:
            if any(r["metric"] == metric and r.get("inn_pairs") for r in rows):
                fig = steps_figure(rows, metric, "inn_pairs", info)
                for ext in ("png", "pdf"):
                    files.append(out / f"{metric}_vs_inn_pairs.{ext}")
                    fig.savefig(files[-1])
    points = len(points_found)
    log.info("report of %d grid points written to %s", points, out)
    return {
        "points": points,
        "rows": len(rows),
        "files": [str(f) for f in files],
        "failed": [str(f) for f in failed],
        "unchanged": before == (out / "results.csv").read_text(),
    }


def report_to_wandb(
    sweep_dir: Path, summary: dict[str, Any], config: Mapping[str, Any] | None, always: bool = False
) -> Path | None:
    """Log the sweep's table (a W&B Table) and figures in one ``report`` run of its W&B group.

    ``config``: the sweep's config (as Hydra callbacks get it, or ``multirun.yaml``); its W&B
    logger entry gives project, entity, mode and group. Without one nothing is logged unless
    ``always`` (then project ``singexp``, group :func:`sweep_group` of the folder). Failures are
    one warning: the table and figures are on disk already."""
    from singexp.loggers import log_sweep_table, wandb_spec  # torch-heavy: only when needed

    spec = wandb_spec(config.get("logger")) if config is not None else None
    if spec is None and not always:
        return None
    if not summary["points"] or (summary.get("unchanged") and not always):
        return None  # nothing new since the last report run
    if spec is None:
        name = config.get("experiment_name") if config is not None else None
        group = sweep_group(str(name), sweep_dir) if name else sweep_dir.resolve().name
        spec = OmegaConf.create({"mode": "auto", "project": "singexp", "group": group})
    try:
        return log_sweep_table(
            spec,
            str(spec.group),
            [flat_row(r) for r in collect(sweep_dir)],
            [Path(f) for f in summary["files"]],
            sweep_dir / "report",
        )
    except Exception as error:
        log.warning("could not log the sweep table to W&B: %s", error)
        return None


class ReportCallback(Callback):
    """Hydra callback: aggregate the sweep when a multirun ends; with W&B on, also log the table
    as a W&B Table (and the figures) in the sweep's group."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from filelock import FileLock

        sweep_dir = Path(config.hydra.sweep.dir)
        with FileLock(str(sweep_dir / ".report.lock")):  # two copies of a sweep end together
            summary = report(sweep_dir)
        FAILED_POINTS.extend(Path(f) for f in summary["failed"])
        report_to_wandb(sweep_dir, summary, config)
