"""Sweep folder → paper-ready tables and figures.

    python -m singexp.report SWEEP_DIR [--wandb]

Reads every grid point's ``metrics.json`` (and ``per_image.csv`` for confidence intervals) under
SWEEP_DIR and writes ``results.csv`` (rows sorted by BCR, SNR, method), ``results.md`` and figures
(metric vs SNR, one line per method, one panel per BCR with a shared y axis, one legend outside
the panels, methods offset slightly along x so that error bars do not overlap; PNG and PDF) into
SWEEP_DIR/report. A point is its resolved config (:mod:`singexp.points`): every key whose value
differs between the sweep's points besides BCR and SNR (a sampler's η, a method's ζ, the seed,
the channel, the data, the operator A, …) goes into the point's ``variant`` (``A=fitted,
seed=1``) and a column of its own in ``results.csv``; a method gets one line per variant
("sing_zero · A=fitted"), and one line when its numbers are the same for every variant
(DeepJSCC's PSNR under each A). Points that differ only in keys that do not change results
(``threads``) are one point. A hyper-parameter search's report opens with its trials, best
first. SWD is a set-level measure (one value per point, no interval), reported ×10³ as
:func:`singexp.metrics.swd` computes it.
:class:`ReportCallback` does the same at the end of a Hydra multirun.

The package, by concern (every name is importable from ``singexp.report`` as before):
:mod:`~singexp.report.collect` reads a sweep folder's points and rows,
:mod:`~singexp.report.statistics` holds the arithmetic (mean and CI, paired differences, the
mismatch drop), :mod:`~singexp.report.labels` the metrics, their labels and the rows' order,
:mod:`~singexp.report.tables` writes the Markdown and CSV files,
:mod:`~singexp.report.figures` draws the figures, :mod:`~singexp.report.run` is the report
itself, its W&B run and the Hydra callback, :mod:`~singexp.report.cli` the command line.
"""

from __future__ import annotations

from singexp.report.cli import main, summary_line
from singexp.report.collect import (
    NOT_POINTS,
    collect,
    failed_points,
    paired_rows,
    search_direction,
    sweep_info,
    sweep_points,
    torn_points,
    trial_rows,
    unmeasured,
)
from singexp.report.figures import (
    AXIS_LABELS,
    DEFAULT_STEPS,
    FIGURES,
    LINE_STYLES,
    figure,
    line_rows,
    plot,
    plot_steps,
    steps_figure,
    steps_vary,
)
from singexp.report.labels import (
    LABELS,
    LOWER_IS_BETTER,
    METHOD_NAMES,
    METHOD_ORDER,
    METRICS,
    QUICK_NOTE,
    display_name,
    method_order,
    short_name,
)
from singexp.report.run import FAILED_POINTS, ReportCallback, report, report_to_wandb
from singexp.report.statistics import Z95, better, drop_rows, mean_ci, paired_differences
from singexp.report.tables import (
    PAIRED_FIELDS,
    flat_row,
    paired_markdown,
    read_paired,
    write_drop,
    write_flops,
    write_paired,
    write_tables,
    write_trials,
)

__all__ = [
    "AXIS_LABELS",
    "DEFAULT_STEPS",
    "FAILED_POINTS",
    "FIGURES",
    "LABELS",
    "LINE_STYLES",
    "LOWER_IS_BETTER",
    "METHOD_NAMES",
    "METHOD_ORDER",
    "METRICS",
    "NOT_POINTS",
    "PAIRED_FIELDS",
    "QUICK_NOTE",
    "Z95",
    "ReportCallback",
    "better",
    "collect",
    "display_name",
    "drop_rows",
    "failed_points",
    "figure",
    "flat_row",
    "line_rows",
    "main",
    "mean_ci",
    "method_order",
    "paired_differences",
    "paired_markdown",
    "paired_rows",
    "plot",
    "plot_steps",
    "read_paired",
    "report",
    "report_to_wandb",
    "search_direction",
    "short_name",
    "steps_figure",
    "steps_vary",
    "summary_line",
    "sweep_info",
    "sweep_points",
    "torn_points",
    "trial_rows",
    "unmeasured",
    "write_drop",
    "write_flops",
    "write_paired",
    "write_tables",
    "write_trials",
]
