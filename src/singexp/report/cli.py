"""``python -m singexp.report SWEEP_DIR [--wandb] [--json]``: the report of a sweep folder
on demand, its table printed, and a last line (or JSON summary) for the reader."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from singexp.report.run import report, report_to_wandb


def summary_line(sweep_dir: Path, result: dict[str, Any]) -> str:
    """The report's last line for a reader: points, files written, failed points, W&B run."""
    n, files, failed = result["points"], len(result["files"]), len(result["failed"])
    line = (
        f"report: {n} point{'s' if n != 1 else ''}, {files} file{'s' if files != 1 else ''} in "
        f"{sweep_dir / 'report'}, {failed} failed"
    )
    if result.get("wandb_run"):
        line += f"; W&B run {result['wandb_run']}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m singexp.report", description="Aggregate a singexp sweep folder."
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and figures to W&B (the sweep's group; offline without "
        "credentials or network)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="end with the summary as one JSON line (`summary: {...}`: files, failed points, "
        "W&B run) for scripts",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir() or not any(args.sweep_dir.rglob("metrics.json")):
        why = "no such folder" if not args.sweep_dir.is_dir() else "no metrics.json in it"
        print(f"singexp.report: {args.sweep_dir}: {why}", file=sys.stderr)
        raise SystemExit(2)
    result = report(args.sweep_dir)
    if args.wandb:
        saved = args.sweep_dir / "multirun.yaml"
        config = cast("DictConfig | None", OmegaConf.load(saved) if saved.is_file() else None)
        folder = report_to_wandb(args.sweep_dir, result, config, always=True)
        result["wandb_run"] = str(folder) if folder else None
    table = args.sweep_dir / "report" / "results.md"
    if result["rows"] and table.is_file():  # the table it wrote, as a reader wants it
        print(table.read_text())
    if args.json:  # the files written, failed points and W&B run, for scripts: one line, last
        print("summary: " + json.dumps(result))
    else:
        print(summary_line(args.sweep_dir, result))
    if result["failed"]:  # said above, one line each; the exit status says so too
        raise SystemExit(1)
