"""Experiment loggers from the ``logger`` config group, and W&B that never hangs offline.

``wandb_logger`` resolves ``mode: auto`` to ``online`` only when there are credentials and the
W&B host answers; otherwise it runs ``offline`` (sync later with ``wandb sync``), saying why in
one line. ``finish_loggers`` closes the W&B run so multirun jobs never share a run.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from singexp.config import build
from singexp.errors import ConfigError

log = logging.getLogger("singexp.loggers")

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _wandb_host() -> str:
    return (
        urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        or "api.wandb.ai"
    )


def has_wandb_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def host_reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> tuple[str, str]:
    """The W&B mode to use and why: explicit config, WANDB_MODE, or auto-detection."""
    if mode not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", f"{mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode, "set in config"
    env = os.environ.get("WANDB_MODE")
    if env == "":
        del os.environ["WANDB_MODE"]  # wandb itself rejects an empty mode
    if env in ("online", "offline", "disabled", "dryrun"):
        return ("offline" if env == "dryrun" else env), "set by WANDB_MODE"
    if not has_wandb_credentials():
        return "offline", "no W&B credentials (WANDB_API_KEY or `wandb login`)"
    if not host_reachable(_wandb_host()):
        return "offline", f"{_wandb_host()} is not reachable"
    return "online", "credentials and network found"


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """A Lightning WandbLogger whose mode is resolved so that it never waits for a network."""
    resolved, why = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.warning("W&B runs offline (%s); upload later with `wandb sync %s/wandb`", why, save_dir)
    os.makedirs(save_dir, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return WandbLogger(mode=resolved, save_dir=save_dir, dir=save_dir, **kwargs)


def build_loggers(node: DictConfig | Mapping[str, Any] | None) -> list[Logger]:
    """Instantiate every logger of the ``logger`` group (an empty group gives none)."""
    if not node:
        return []
    return [build(spec) for spec in node.values() if spec and "_target_" in spec]


def log_results(loggers: list[Logger], metrics: dict[str, float], results_file: Path) -> None:
    """Send the final metrics to every logger; W&B runs also keep a copy of ``results_file``
    among their files (so an offline run folder holds the results, synced with it)."""
    for logger in loggers:
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger) and logger.experiment is not None:
            logger.experiment.summary.update(metrics)
            shutil.copy(results_file, Path(logger.experiment.dir) / results_file.name)


def finish_loggers(loggers: list[Logger], failed: bool) -> None:
    """Flush every logger; finish W&B runs, marked failed when the job raised."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1 if failed else 0)
        else:
            logger.finalize("failed" if failed else "success")


WANDB_TARGET = "singexp.loggers.wandb_logger"


def wandb_spec(node: DictConfig | Mapping[str, Any] | None) -> DictConfig | None:
    """The W&B entry of a ``logger`` group, if any."""
    for spec in (node or {}).values():
        if spec and spec.get("_target_") == WANDB_TARGET:
            return spec
    return None


def log_sweep_table(
    spec: Mapping[str, Any],
    group: str,
    rows: list[dict[str, Any]],
    figures: list[Path],
    save_dir: Path,
) -> Path | None:
    """One W&B run (``job_type=report``) in the sweep's ``group`` holding the aggregated table
    as a W&B Table and the figures as images; its folder (the offline run, for ``wandb sync``)
    or None when W&B is disabled."""
    import wandb

    mode, why = resolve_wandb_mode(str(spec.get("mode", "auto")))
    if mode == "disabled":
        return None
    save_dir.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else []

    def cell(value: Any) -> Any:  # NaN (no CI from one image) is not valid JSON
        return None if isinstance(value, float) and not math.isfinite(value) else value

    run = wandb.init(
        project=spec.get("project"),
        entity=spec.get("entity"),
        group=group,
        job_type="report",
        name=f"{group}-report",
        dir=str(save_dir),
        mode=mode,
        config={"sweep_group": group, "points": len({(r["bcr"], r["snr_db"]) for r in rows})},
    )
    try:
        table = wandb.Table(columns=columns, data=[[cell(r[c]) for c in columns] for r in rows])
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}
        run.log({"results": table, **images})
        folder = Path(run.dir).parent
    finally:
        run.finish()
    if mode == "offline":
        log.info("W&B report run offline (%s): `wandb sync %s`", why, folder)
    return folder
