"""The task layer: :func:`run`, which every entry point calls, and the tasks by ``task:``.

It only orchestrates. :func:`run` validates the config once into a typed
:class:`~singexp.config.RunConfig` (what every layer below receives), takes the run folder's
lock, reuses finished results (:mod:`singexp.points`), writes config.yaml, starts the loggers,
runs the task (:data:`TASKS`) and writes ``metrics.json`` before any logger sees it. The tasks:
``restore`` builds the restoration (:mod:`singexp.assembly`) and evaluates it
(:mod:`singexp.modules.restoration`); the training tasks ``jscc``, ``inn`` and ``prior`` are
each model kind's training job (:mod:`singexp.models`: the same job trains an ``auto`` model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from singexp import reuse
from singexp.assembly import build_restoration, method_records
from singexp.config import RunConfig, validate
from singexp.config_print import print_config_mode, show_config
from singexp.console import quiet_console
from singexp.data.base import indexed_data
from singexp.distributed import launch_rank
from singexp.errors import ConfigError
from singexp.faults import (
    Terminated,
    atomic_write_text,
    point_lock,
    set_aside_unfinished_wandb,
    sigterm_ends_point,
)
from singexp.loggers import build_loggers, finish_loggers, log_results
from singexp.metrics import ImageMetrics
from singexp.models.inn import inn_job
from singexp.models.jscc import codec_job
from singexp.models.prior import prior_job
from singexp.models.provenance import auto_training_notes, trained_elsewhere, trained_on
from singexp.modules.restoration import RestorationModule, mean_image_or_skip, write_outputs
from singexp.operators import describe_operator
from singexp.points import (
    archive_results,
    describe,
    finished_results,
    logger_keys,
    write_json,
)
from singexp.preflight import preflight
from singexp.printing import print_results
from singexp.progress import set_plan
from singexp.quick import Quick, apply_quick, command_line_overrides
from singexp.state import RunState
from singexp.threads import apply_thread_policy, wait_policy
from singexp.trainers import build_trainer

log = logging.getLogger("singexp")

Task = Callable[[RunConfig, list[Logger], RunState | None], dict[str, Any]]


def restore_task(
    run: RunConfig, loggers: list[Logger], state: RunState | None = None
) -> dict[str, Any]:
    """DeepJSCC at ``channel.snr_db`` then each restorer, on the same received images."""
    state = RunState() if state is None else state
    preflight(run, state)  # sizes, prior present, given models: before any auto training
    # index the data first: a bad folder fails, and the split is said, before any auto training
    datamodule = indexed_data(run, state)
    metrics = ImageMetrics(run.metrics)
    parts = build_restoration(run, lambda: datamodule)
    # the ETA counts every method of the run (InverseJSCC runs no sampling loop)
    set_plan(
        [
            int(m.config.steps)
            for m in run.methods.values()
            if m.name != "inverse_jscc" and getattr(m.config, "steps", None)
        ]
    )
    mean_image, skipped = mean_image_or_skip(datamodule)
    module = RestorationModule(
        parts.codec,
        parts.restorers,
        networks=parts.networks,
        snr_db=run.channel.snr_db,
        metrics=metrics,
        seed=run.seed,
        grid_images=run.evaluate.grid_images if run.evaluate else 0,
        mean_image=mean_image,
        operator=parts.operator,
    )
    models = trained_on(
        parts.codec, parts.inn_path, parts.prior_source, run.prior.trained_on if run.prior else None
    )
    warnings = [
        *state.warnings,
        *trained_elsewhere(run, models, trainable=skipped is None),
        *([skipped] if skipped else []),
        *auto_training_notes(run, parts.codec_path, parts.inn_path, parts.prior_source),
    ]
    # guidance (SING-INN) takes gradients w.r.t. x0: no inference mode, the loop's no_grad
    # suffices; under DDP each process takes whole batches of the single-process order
    # (singexp.distributed), not Lightning's DistributedSampler
    trainer = build_trainer(run, loggers, inference_mode=False, use_distributed_sampler=False)
    split = run.evaluate_split  # val: a tuning trial
    count = run.evaluate.images if run.evaluate else None
    images = datamodule.sharded_test_dataloader(split, count)
    trainer.test(module, dataloaders=images, verbose=False)
    if not trainer.is_global_zero:  # rank 0 gathered the results and writes them
        return {"methods": {}, "rank": trainer.global_rank}
    identity = describe_run(run)
    title = " · ".join(f"{k} {identity[k]}" for k in ("dataset", "channel", "snr_db", "bcr"))
    title += "" if split == "test" else f" · {split} images"
    files = write_outputs(module, run.output_dir, title)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="grid", images=[files["grid"]], caption=[" | ".join(module.grid)])
    return {
        "evaluated_split": split,
        "methods": module.summary,
        "metric_status": metrics.status(),
        "perceptual_size": metrics.perceptual_size,
        "samplers": method_records(
            run.methods, parts.operator, parts.networks.get("inn"), parts.sigma_y
        ),
        "operator": describe_operator(
            parts.operator, run.operator.name if run.operator else "none"
        ),
        # how the restorers computed: precision (and the one used), guidance micro-batch,
        # checkpointing, compile
        "evaluate": run.compute.record(module.device),
        "jscc_checkpoint": str(parts.codec_path),
        "inn_checkpoint": str(parts.inn_path) if parts.inn_path else None,
        "prior_source": parts.prior_source,
        "files": files,
        "trained_on": models,
        "warnings": warnings,
    }


#: the tasks by ``task:``: the restoration and the training jobs of the model kinds
TASKS: dict[str, Task] = {
    "restore": restore_task,
    "jscc": codec_job,
    "inn": inn_job,
    "prior": prior_job,
}


def describe_run(run: RunConfig) -> dict[str, Any]:
    """The top of the run's metrics.json: its grid coordinates (:func:`singexp.points.describe`)."""
    return describe(
        run.task,
        run.dataset_name,
        run.latent.image_size,
        run.channel.name,
        run.channel.snr_db,
        run.bcr,
        run.seed,
    )


def _single_log_stream() -> None:
    """Lightning adds its own console handler when imported before logging is set up (always
    so in launcher workers); under Hydra's root handlers every line would print twice. Let
    Lightning's records reach the root handlers (console and the run's log) only."""
    if logging.getLogger().handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, seed, run the configured task, write config.yaml and metrics.json.

    One job at a time computes a run folder (:func:`point_lock`: a second copy of a sweep waits,
    then reuses); SIGTERM ends the run like Ctrl-C (:class:`Terminated`), leaving no results.
    """
    quiet_console()  # each note once, no third-party noise (singexp.console)
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}; choose one of {sorted(TASKS)}")
    # after the experiment's own settings, so that quick=true wins over them (not over the
    # command line's keys); before validation, which checks what it set and what it left
    quick = apply_quick(cfg, overrides=_command_line_overrides())
    print_config_mode(cfg.get("print_config", "short"))  # a bad value fails before anything runs
    run_cfg = validate(cfg)  # once: types, ranges, the methods' settings (a sampler override
    # that methods would ignore fails here, early)
    state = RunState()  # what the run learns on the way (run_cfg is frozen)
    preflight(run_cfg, state)  # sizes, prior present, given models: before loggers, training
    apply_thread_policy(cfg.get("threads", "auto"))  # never oversubscribe the CPU
    _single_log_stream()
    out = run_cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if launch_rank() > 0:  # a DDP process that Lightning or Slurm started beside rank 0
        return _run_other_rank(run_cfg, state)
    with sigterm_ends_point(), point_lock(out):
        try:
            return _run_locked(cfg, run_cfg, state, out, quick)
        except Terminated:
            log.warning("SIGTERM: %s stopped unfinished; re-run the same command to resume", out)
            raise


def _run_other_rank(run_cfg: RunConfig, state: RunState) -> dict[str, Any]:
    """:func:`run` in a DDP process of rank > 0: the task's share of the work, without the run
    folder's lock, config, results or loggers, which rank 0 owns (:mod:`singexp.distributed`)."""
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    return TASKS[run_cfg.task](run_cfg, [], state)


def _command_line_overrides() -> list[str]:
    """This job's overrides as Hydra received them (a sweep point's own values); none outside
    Hydra."""
    return command_line_overrides()


def _run_locked(
    cfg: DictConfig, run_cfg: RunConfig, state: RunState, out: Path, quick: Quick
) -> dict[str, Any]:
    """:func:`run` in the run folder ``out``, whose lock this job holds."""
    previous = finished_results(run_cfg.plain, out)
    if previous is not None:
        log.info("%s already holds this config's results: reusing them (force=true re-runs)", out)
        print_results(previous)
        return previous
    archive_results(out)
    set_aside_unfinished_wandb(out)
    show_config(cfg, _command_line_overrides(), quick)
    indexed_data(run_cfg, state)  # a folder that cannot be used fails before the loggers start
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(run_cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    # a restoration's W&B run starts once metrics.json is written (singexp.loggers)
    loggers = build_loggers(run_cfg.logger, defer_wandb=run_cfg.task == "restore")
    failed, finished = True, False
    try:
        # the grid keys at the top level and the run's identity (singexp.points)
        keys = logger_keys(run_cfg.plain, describe_run(run_cfg), list(run_cfg.methods))
        for logger in loggers:
            logger.log_hyperparams(keys)
        wall, cpu = time.perf_counter(), time.process_time()
        results = {**describe_run(run_cfg), **TASKS[run_cfg.task](run_cfg, loggers, state)}
        # the point's own cost (benchmarks/grid.py sums it): this process, from building the
        # models to the written outputs; loggers and the config check are outside
        results["timing"] = {
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "reused": reuse.stats(),  # models and data this process kept (singexp.reuse)
        }
        # what the images are (dataset.content, else the name): what trained_on is compared with
        results["content"] = run_cfg.data_content
        if run_cfg.quick:
            results["quick"] = True
        results["threads"] = torch.get_num_threads()  # what threads=auto chose (threads.py)
        results["omp_wait_policy"] = wait_policy()
        write_json(out / "metrics.json", results)
        (out / "error.txt").unlink(missing_ok=True)  # of an earlier, failed attempt
        log.info("results written to %s", out / "metrics.json")
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
        finish_loggers(loggers, failed)
        finished = True
        print_results(results)  # last: nothing of the loggers' prints below the table
        return results
    finally:
        if not finished:
            finish_loggers(loggers, failed)
