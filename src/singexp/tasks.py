"""Thin task functions, one per job kind, and :func:`run`, which every entry point calls.

A task receives the composed config, returns JSON-ready metrics, and :func:`run` writes them to
``metrics.json`` in the run folder before any logger sees them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from singexp.artifacts import ensure
from singexp.bcr import format_ratio
from singexp.config import Validated, build, validate
from singexp.errors import ConfigError
from singexp.loggers import build_loggers, finish_loggers, log_results
from singexp.metrics import ImageMetrics, psnr
from singexp.modules.inn import (
    check_inn_checkpoint,
    jscc_identity,
    load_inn,
    read_inn_metadata,
    resolve_inn_checkpoint,
    train_inn,
)
from singexp.modules.jscc import DeepJSCCModule, check_checkpoint, export_codec, load_codec
from singexp.modules.restoration import RestorationModule, Restorer, write_outputs
from singexp.operators import LinearOperator, build_operator
from singexp.prior import build_scheduler, load_prior, train_prior
from singexp.samplers.registry import restore

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


def trainer_kwargs(cfg: DictConfig, loggers: list[Logger]) -> dict[str, Any]:
    """``lightning.Trainer`` keyword arguments of the config, with loggers and callbacks built."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    callbacks = [build(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    return {**kwargs, "logger": loggers or False, "callbacks": callbacks}


def build_trainer(cfg: DictConfig, loggers: list[Logger], **overrides: Any) -> L.Trainer:
    callbacks = [build(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    return build(cfg.trainer, logger=loggers or False, callbacks=callbacks, **overrides)


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
        module = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db, metrics=metrics_cfg)
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
        if v.jscc.export:
            checkpoint = str(export_codec(module, v.jscc.export))
            log.info("exported the codec to %s", checkpoint)
    return {
        "test": module.test_summary,
        "metric_status": module.metrics.status(),
        "perceptual_size": module.metrics.perceptual_size,
        "baseline_mean_image": mean_image_baseline(datamodule),
        "checkpoint": checkpoint,
        "latent_channels": v.latent.channels,
        "channel_symbols": v.latent.symbols,
    }


def method_configs(cfg: DictConfig) -> dict[str, Any]:
    """The restorers to evaluate: ``methods`` (name → sampler config) or the one ``sampler``."""
    methods = cfg.get("methods")
    if methods:
        return {str(name): node for name, node in methods.items()}
    sampler = cfg.get("sampler")
    return {} if not sampler or sampler.get("name", "none") == "none" else {sampler.name: sampler}


def build_restorers(
    cfg: DictConfig,
    v: Validated,
    configs: dict[str, Any],
    operator: LinearOperator,
    inn_path: Path | None,
) -> tuple[dict[str, Restorer], dict[str, torch.nn.Module]]:
    """Restorer callables for ``configs`` and the networks they share (moved by Lightning).

    The prior is loaded when a method is configured; the INN when ``inn.checkpoint`` is set.
    """
    if not configs:
        return {}, {}
    networks: dict[str, torch.nn.Module] = {
        "prior": load_prior(cfg.prior.source, expected_size=v.latent.image_size)
    }
    if inn_path is not None:
        networks["inn"] = load_inn(inn_path).inn.eval().requires_grad_(False)
    restorers: dict[str, Restorer] = {}
    for name, scfg in configs.items():
        scheduler = build_scheduler(
            num_train_timesteps=cfg.prior.num_train_timesteps,
            beta_start=cfg.prior.beta_start,
            beta_end=cfg.prior.beta_end,
            schedule=cfg.prior.schedule,
            kind=scfg.get("scheduler", "ddim"),
            timestep_spacing=scfg.get("timestep_spacing", "leading"),
        )
        components = {"unet": networks["prior"], "scheduler": scheduler, "operator": operator}
        if "inn" in networks:
            components["inn"] = networks["inn"]
        restorers[name] = partial(_restore, OmegaConf.to_container(scfg, resolve=True), components)
    return restorers, networks


def _restore(
    cfg: dict[str, Any],
    components: dict[str, Any],
    x_hat: torch.Tensor,
    snr_db: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    return restore(cfg, x_hat, generator=generator, snr_db=snr_db, **components)


def require_codec(cfg: DictConfig, v: Validated, purpose: str) -> None:
    """A trained codec for ``purpose``: ``jscc.checkpoint`` set, ``auto`` resolved (below)."""
    if not v.jscc.checkpoint:
        raise ConfigError(
            "jscc.checkpoint",
            f"{purpose} needs a trained DeepJSCC; set jscc.checkpoint=embedded, auto or a path",
        )
    resolve_auto_codec(cfg, v)


def resolve_auto_codec(cfg: DictConfig, v: Validated) -> None:
    """``jscc.checkpoint=auto``: the codec this config would train, trained once and shared."""
    if v.jscc.checkpoint != "auto":
        return
    plain = OmegaConf.to_container(cfg, resolve=True)
    drop = {"checkpoint", "export", "resume"}
    identity = {
        "dataset": {
            k: val for k, val in plain["dataset"].items() if k not in ("batch_size", "num_workers")
        },
        "bcr": format_ratio(v.bcr),
        "channel": {"name": v.channel.name, "train_snr": list(v.channel.train_range())},
        "jscc": {k: val for k, val in plain["jscc"].items() if k not in drop},
        "trainer": {k: val for k, val in plain["trainer"].items() if k != "default_root_dir"},
        "seed": plain["seed"],
    }

    def train(folder: Path) -> Path:
        sub = OmegaConf.create(plain)
        sub.task, sub.paths.output_dir, sub.callbacks = "jscc", str(folder), {}
        sub.jscc.checkpoint, sub.jscc.export = None, str(folder / "codec.safetensors")
        trainer_dir = folder / "checkpoints"
        sub.trainer.default_root_dir = str(trainer_dir)
        results = jscc_task(sub, validate(sub), [])
        write_json(folder / "metrics.json", results)
        return Path(sub.jscc.export)

    v.jscc.checkpoint = str(ensure(Path(cfg.paths.artifacts), "jscc", identity, train))


def restore_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """DeepJSCC at ``channel.snr_db`` then each restorer, on the same received images."""
    require_codec(cfg, v, "restoration")
    check_checkpoint(
        v.jscc.checkpoint, {"bcr": format_ratio(v.bcr), "image_size": v.latent.image_size}
    )
    out = Path(cfg.paths.output_dir)
    metrics = ImageMetrics.from_config(cfg.metrics)
    codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db)
    configs = method_configs(cfg)
    operator = build_operator(cfg.operator.name, cfg.operator.scale, v.bcr, v.latent.image_size)
    inn_path = resolve_inn_checkpoint(cfg.inn.checkpoint, v.bcr, v.latent.image_size)
    if inn_path is not None:
        check_inn_checkpoint(
            inn_path, {**jscc_identity(v.jscc.checkpoint), "snr_db": v.channel.snr_db}
        )
    restorers, networks = build_restorers(cfg, v, configs, operator, inn_path)
    module = RestorationModule(
        codec,
        restorers,
        networks=networks,
        snr_db=v.channel.snr_db,
        metrics=metrics,
        seed=int(cfg.seed),
        grid_images=int(cfg.evaluate.grid_images),
    )
    # guidance (SING-INN) takes gradients w.r.t. x0: no inference mode, the loop's no_grad suffices
    trainer = build_trainer(cfg, loggers, inference_mode=False)
    trainer.test(module, datamodule=build(cfg.dataset))
    identity = describe_run(cfg, v)
    title = " · ".join(f"{k} {identity[k]}" for k in ("dataset", "channel", "snr_db", "bcr"))
    files = write_outputs(module, out, title)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="grid", images=[files["grid"]], caption=[" | ".join(module.grid)])
    return {
        "methods": module.summary,
        "metric_status": metrics.status(),
        "perceptual_size": metrics.perceptual_size,
        "samplers": {name: OmegaConf.to_container(c, resolve=True) for name, c in configs.items()},
        "operator": {
            "name": cfg.operator.name,
            "scale": getattr(
                build_operator(cfg.operator.name, cfg.operator.scale, v.bcr, v.latent.image_size),
                "scale",
                None,
            ),
        },
        "jscc_checkpoint": v.jscc.checkpoint,
        "inn_checkpoint": str(inn_path) if inn_path else None,
        "files": files,
    }


def prior_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train the unconditional diffusion prior of the ``prior`` group on ``dataset``.

    The EMA weights go to ``<run>/prior`` (diffusers format); ``export_to`` copies them there too
    (how the embedded prior is rebuilt).
    """
    out = Path(cfg.paths.output_dir)
    prior_cfg = OmegaConf.to_container(cfg.prior, resolve=True)
    exported = train_prior(prior_cfg, build(cfg.dataset), trainer_kwargs(cfg, loggers), out)
    if cfg.get("export_to"):
        target = Path(cfg.export_to)
        shutil.copytree(exported, target, dirs_exist_ok=True)
        log.info("copied the prior to %s", target)
    return {"prior": str(exported), "export_to": cfg.get("export_to")}


def inn_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train SING-INN's conditional INN on pairs made by the codec of ``jscc.checkpoint``."""
    require_codec(cfg, v, "INN training")
    out = Path(cfg.paths.output_dir)
    path = train_inn(
        OmegaConf.to_container(cfg.inn, resolve=True),
        datamodule=build(cfg.dataset),
        codec=v.jscc.checkpoint,
        out_dir=out,
        trainer_kwargs=trainer_kwargs(cfg, loggers),
    )
    return {"inn": str(path), "validation": read_inn_metadata(path).get("metrics")}


TASKS: dict[str, Task] = {
    "jscc": jscc_task,
    "restore": restore_task,
    "prior": prior_task,
    "inn": inn_task,
}


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


def print_method_table(results: dict[str, Any]) -> None:
    """Method × metric table of a restoration run."""
    from rich.console import Console
    from rich.table import Table

    methods: dict[str, dict[str, Any]] = results["methods"]
    keys = [
        k
        for k in ("psnr", "ssim", "stlpips", "lpips", "swd")
        if any(k in m for m in methods.values())
    ]
    table = Table(
        title=f"{results['dataset']} · {results['channel']} SNR {results['snr_db']} dB · "
        f"BCR {results['bcr']} · {next(iter(methods.values())).get('images', 0)} images"
    )
    table.add_column("method")
    for key in keys:
        table.add_column(key.upper() if key != "stlpips" else "ST-LPIPS", justify="right")
    for name, summary in methods.items():
        table.add_row(
            name, *("missing" if summary.get(k) is None else f"{summary[k]:.4f}" for k in keys)
        )
    Console().print(table)


def print_results(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    if "methods" in results:
        print_method_table(results)
        for key, why in results.get("metric_status", {}).items():
            if why != "ok":
                print(f"note: {key}: {why}")
        return

    table = Table(
        title=f"{results['task']} · {results['dataset']} · "
        f"SNR {results['snr_db']} dB · BCR {results['bcr']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (results.get("test") or results.get("validation") or {}).items():
        table.add_row(key, "missing" if value is None else f"{value:.4f}")
    for key, value in results.get("baseline_mean_image", {}).items():
        table.add_row(f"mean-image baseline {key}", f"{value:.4f}")
    Console().print(table)
    for key, why in results.get("metric_status", {}).items():
        if why != "ok":
            print(f"note: {key}: {why}")


def finished_results(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """The results of an earlier run of exactly this config in ``out``, unless ``force``."""
    done, saved = out / "metrics.json", out / "config.yaml"
    if cfg.get("force", False) or not done.is_file() or not saved.is_file():
        return None
    ignore = {"force", "print_config"}
    now = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ignore}
    before = {
        k: v for k, v in OmegaConf.to_container(OmegaConf.load(saved)).items() if k not in ignore
    }
    return json.loads(done.read_text()) if now == before else None


def _single_log_stream() -> None:
    """Lightning adds its own console handler; under Hydra's root handlers every line would
    print twice. Let Lightning's records reach the root handlers (console and the run's log)."""
    if logging.getLogger().handlers:
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, seed, run the configured task, write config.yaml and metrics.json."""
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}; choose one of {sorted(TASKS)}")
    v = validate(cfg)
    _single_log_stream()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = finished_results(cfg, out)
    if previous is not None:
        log.info("%s already holds this config's results: reusing them (force=true re-runs)", out)
        print_results(previous)
        return previous
    if cfg.get("print_config", True):
        print(OmegaConf.to_yaml(cfg, resolve=True))
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    loggers = build_loggers(cfg.get("logger"))
    failed = True
    try:
        # the grid keys at the top level, so dashboards can group, filter and plot by them
        grid_keys = {**describe_run(cfg, v), "method": list(method_configs(cfg)) or ["deepjscc"]}
        for logger in loggers:
            logger.log_hyperparams({**grid_keys, **OmegaConf.to_container(cfg, resolve=True)})
        results = {**describe_run(cfg, v), **TASKS[cfg.task](cfg, v, loggers)}
        write_json(out / "metrics.json", results)
        log.info("results written to %s", out / "metrics.json")
        print_results(results)
        flat = {
            f"final/{k}": float(val)
            for k, val in results.get("test", {}).items()
            if isinstance(val, int | float)
        }
        for method, summary in results.get("methods", {}).items():
            flat.update(
                {
                    f"final/{method}/{k}": float(val)
                    for k, val in summary.items()
                    if isinstance(val, int | float)
                }
            )
        log_results(loggers, flat, out / "metrics.json")
        failed = False
        return results
    finally:
        finish_loggers(loggers, failed)
