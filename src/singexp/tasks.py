"""Thin task functions, one per job kind, and :func:`run`, which every entry point calls.

A task receives the composed config, returns JSON-ready metrics, and :func:`run` writes them to
``metrics.json`` in the run folder before any logger sees them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from singexp.bcr import format_ratio
from singexp.config import Validated, build, validate
from singexp.errors import ConfigError
from singexp.loggers import build_loggers, finish_loggers, log_results
from singexp.metrics import psnr
from singexp.modules.jscc import DeepJSCCModule, check_checkpoint

log = logging.getLogger("singexp")

Task = Callable[[DictConfig, Validated, list[Logger]], dict[str, Any]]


def _jsonable(value: Any) -> Any:
    """Replace NaN/inf by None so that metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def build_trainer(cfg: DictConfig, loggers: list[Logger]) -> L.Trainer:
    callbacks = [build(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    return build(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def mean_image_baseline(datamodule: Any) -> dict[str, float]:
    """PSNR of the trivial receiver that always outputs the mean training image."""
    test = datamodule.test_images(len(datamodule.test_dataset))
    mean = datamodule.mean_image().to(test.dtype)
    return {"psnr": float(psnr(mean.expand_as(test), test).mean())}


def jscc_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train a DeepJSCC codec (or load ``jscc.checkpoint``) and test it at ``channel.snr_db``."""
    out = Path(cfg.paths.output_dir)
    datamodule = build(cfg.dataset)
    identity = {
        "bcr": format_ratio(v.bcr),
        "image_size": v.latent.image_size,
        "channel": v.channel.name,
        "downsample": v.jscc.downsample,
    }
    metrics_cfg = OmegaConf.to_container(cfg.metrics, resolve=True)
    trainer = build_trainer(cfg, loggers)
    if v.jscc.checkpoint:
        check_checkpoint(v.jscc.checkpoint, identity)
        module = DeepJSCCModule.load_from_checkpoint(
            v.jscc.checkpoint, map_location="cpu", test_snr_db=v.channel.snr_db, metrics=metrics_cfg
        )
        trainer.test(module, datamodule=datamodule)
        checkpoint = v.jscc.checkpoint
    else:
        module = DeepJSCCModule(
            **identity,
            latent_channels=v.latent.channels,
            width=v.jscc.width,
            snr_adaptive=v.jscc.snr_adaptive,
            train_snr=v.channel.train_range(),
            test_snr_db=v.channel.snr_db,
            lr=v.jscc.lr,
            weight_decay=v.jscc.weight_decay,
            metrics=metrics_cfg,
        )
        last = out / "checkpoints" / "last.ckpt"
        resume = str(last) if v.jscc.resume and last.is_file() else None
        if resume:
            log.info("resuming training from %s", resume)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        checkpoint = best or None
    return {
        "test": module.test_summary,
        "metric_status": module.metrics.status(),
        "perceptual_size": module.metrics.perceptual_size,
        "baseline_mean_image": mean_image_baseline(datamodule),
        "checkpoint": checkpoint,
        "latent_channels": v.latent.channels,
        "channel_symbols": v.latent.symbols,
    }


TASKS: dict[str, Task] = {"jscc": jscc_task}


def describe_run(cfg: DictConfig, v: Validated) -> dict[str, Any]:
    """Top-level identity of a run: the keys results are grouped by."""
    return {
        "task": cfg.task,
        "dataset": cfg.dataset.name,
        "image_size": v.latent.image_size,
        "channel": v.channel.name,
        "snr_db": v.channel.snr_db,
        "bcr": format_ratio(v.bcr),
        "bcr_value": float(v.bcr),
        "seed": int(cfg.seed),
    }


def print_results(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{results['task']} · {results['dataset']} · "
        f"SNR {results['snr_db']} dB · BCR {results['bcr']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.get("test", {}).items():
        table.add_row(key, "missing" if value is None else f"{value:.4f}")
    for key, value in results.get("baseline_mean_image", {}).items():
        table.add_row(f"mean-image baseline {key}", f"{value:.4f}")
    Console().print(table)
    for key, why in results.get("metric_status", {}).items():
        if why != "ok":
            print(f"note: {key}: {why}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, seed, run the configured task, write config.yaml and metrics.json."""
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}; choose one of {sorted(TASKS)}")
    v = validate(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("print_config", True):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    loggers = build_loggers(cfg.get("logger"))
    failed = True
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        results = {**describe_run(cfg, v), **TASKS[cfg.task](cfg, v, loggers)}
        write_json(out / "metrics.json", results)
        log.info("results written to %s", out / "metrics.json")
        print_results(results)
        flat = {
            f"final/{k}": float(val)
            for k, val in results.get("test", {}).items()
            if isinstance(val, int | float)
        }
        log_results(loggers, flat, out / "metrics.json")
        failed = False
        return results
    finally:
        finish_loggers(loggers, failed)
