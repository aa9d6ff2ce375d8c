"""Thin task functions, one per job kind, and :func:`run`, which every entry point calls.

A task receives the composed config, returns JSON-ready metrics, and :func:`run` writes them to
``metrics.json`` in the run folder before any logger sees them. What a run prints is
:mod:`singexp.printing`; reusing or setting aside a run folder's results, :mod:`singexp.results`;
what a shared trained model's identity is, :mod:`singexp.artifacts`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from singexp.artifacts import (
    codec_artifact_identity,
    ensure,
    inn_artifact_identity,
    prior_artifact_identity,
    training_warnings,
)
from singexp.bcr import format_ratio
from singexp.callbacks import TrainingSizeCheck, training_notes
from singexp.config import Validated, apply_quick, build, print_config_mode, show_config, validate
from singexp.distributed import launch_rank
from singexp.errors import ConfigError, SingexpError
from singexp.faults import (
    Terminated,
    atomic_write_text,
    point_lock,
    resume_checkpoint,
    set_aside_unfinished_wandb,
    sigterm_ends_point,
)
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
from singexp.modules.prior import train_prior
from singexp.modules.restoration import RestorationModule, Restorer, write_outputs
from singexp.operators import (
    LinearOperator,
    codec_pairs,
    describe_operator,
    measurement_noise_std,
    operator_from_config,
)
from singexp.preflight import preflight
from singexp.printing import print_results
from singexp.prior import build_scheduler, load_prior, prior_trained_on
from singexp.results import archive_results, finished_results, write_json
from singexp.samplers.compute import ComputeConfig
from singexp.samplers.registry import Method, check_method, restore
from singexp.samplers.sing_inn import check_measurement
from singexp.samplers.sing_zero import SIGMA_Y_AUTO
from singexp.threads import apply_thread_policy, wait_policy

log = logging.getLogger("singexp")

Task = Callable[[DictConfig, Validated, list[Logger]], dict[str, Any]]


def trainer_kwargs(cfg: DictConfig, loggers: list[Logger]) -> dict[str, Any]:
    """``lightning.Trainer`` keyword arguments of the config, with loggers and callbacks built."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_", None)
    return {**kwargs, "logger": loggers or False, "callbacks": build_callbacks(cfg)}


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """The Lightning callbacks of the ``callbacks`` group, and the training-size check that
    every run gets (:class:`~singexp.callbacks.TrainingSizeCheck`, ``min_train_steps``)."""
    chosen = [build(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    return [*chosen, TrainingSizeCheck(int(cfg.get("min_train_steps") or 0))]


def build_trainer(cfg: DictConfig, loggers: list[Logger], **overrides: Any) -> L.Trainer:
    callbacks = build_callbacks(cfg)
    return build(cfg.trainer, logger=loggers or False, callbacks=callbacks, **overrides)


def mean_image_or_skip(datamodule: Any) -> tuple[torch.Tensor | None, str | None]:
    """The trivial baseline's image, the mean training image, or ``(None, why)`` where the data
    has no training split (a test-only folder): the baseline is then skipped, said in one line,
    never replaced by the mean of the test images it is scored on."""
    if datamodule.split_size("train") > 0:
        return datamodule.mean_image(), None
    why = (
        f"mean-image baseline skipped: {datamodule.name} has no training images to average "
        "(a test-only data set); add a train/ folder of the same kind of images to get it"
    )
    log.warning(why)
    return None, why


def mean_image_baseline(datamodule: Any) -> dict[str, float]:
    """PSNR of the trivial receiver that always outputs the mean training image (empty when
    the data has no training split: :func:`mean_image_or_skip`)."""
    mean, _ = mean_image_or_skip(datamodule)
    if mean is None:
        return {}
    test = datamodule.test_images(len(datamodule.test_dataset))
    return {"psnr": float(psnr(mean.to(test.dtype).expand_as(test), test).mean())}


def indexed_data(cfg: DictConfig, v: Validated) -> Any:
    """The run's data module, indexed (files checked, splits made and said: a bad folder, a
    split overlap fail here), once per run: :func:`run` calls it before the loggers start, the
    task reuses it."""
    if "datamodule" not in v.extra:
        datamodule = build(cfg.dataset)
        datamodule.setup()
        v.extra["datamodule"] = datamodule
    return v.extra["datamodule"]


def jscc_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train a DeepJSCC codec (or load ``jscc.checkpoint``) and test it at ``channel.snr_db``."""
    preflight(cfg, v)
    out = Path(cfg.paths.output_dir)
    datamodule = indexed_data(cfg, v)  # the split said before building or training a model
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
        trainer.test(module, datamodule=datamodule, verbose=False)
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
            dataset=str(cfg.dataset.name),
        )
        resume = resume_checkpoint(out, v.jscc.resume)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        checkpoint = best or None
        if v.jscc.export and trainer.is_global_zero:  # one process writes the file
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
        "warnings": [*v.extra.get("warnings", []), *training_notes(trainer.callbacks)],
    }


def method_configs(cfg: DictConfig) -> dict[str, Method]:
    """The restorers to evaluate, checked before anything runs: ``methods`` (name → sampler
    config; errors name ``methods.<name>.<key>``) or the one ``sampler``."""
    methods = cfg.get("methods")
    sampler = cfg.get("sampler")
    if methods:
        if sampler and (sampler.get("name", "none") != "none" or len(sampler) > 1):
            first = next(iter(methods))
            raise ConfigError(
                "sampler",
                f"is ignored by this experiment, which evaluates methods {', '.join(methods)}; "
                f"set their keys instead, e.g. methods.{first}.steps=10",
            )
        return {
            str(name): check_method(OmegaConf.to_container(node, resolve=True), f"methods.{name}")
            for name, node in methods.items()
        }
    if not sampler or sampler.get("name", "none") == "none":
        return {}
    return {sampler.name: check_method(OmegaConf.to_container(sampler, resolve=True))}


def measured_sigma_y(
    cfg: DictConfig,
    v: Validated,
    methods: dict[str, Method],
    codec: DeepJSCCModule,
    operator: Any,
    datamodule: Any,
) -> float | None:
    """σ_y for ``sigma_y=auto``: the RMS of A x̂ − A x over up to 64 validation images of
    ``datamodule`` sent through the codec at the test SNR
    (:func:`~singexp.operators.measurement_noise_std`)."""
    if not any(getattr(m.config, "sigma_y", None) == SIGMA_Y_AUTO for m in methods.values()):
        return None
    val = datamodule.val_dataset
    if len(val) == 0:
        raise ConfigError(
            "sigma_y",
            f"auto measures σ_y on validation images and {datamodule.name} has none (a "
            "test-only data set); set sigma_y to a number (0 = noise-free DDNM)",
        )
    x = torch.stack([val[i] for i in range(min(64, len(val)))])
    generator = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + 2)
    with torch.no_grad():
        x_hat = codec.eval()(x, v.channel.snr_db, generator).clamp(-1, 1)
    return measurement_noise_std(operator, x, x_hat)


def method_record(method: Method, operator: Any, inn: Any, sigma_y: float | None) -> dict:
    """What ran, for metrics.json: every key of the method's config (variant, update form,
    clipping, ...) plus the measurement it used and σ_y as measured for ``auto``."""
    record: dict[str, Any] = {**method.raw}
    if method.config is None:
        return record
    record.update(
        {f.name: getattr(method.config, f.name) for f in dataclasses.fields(method.config)}
    )
    if hasattr(method.config, "time_travel"):  # InverseJSCC runs no sampling loop
        record["time_travel"] = dataclasses.asdict(method.config.time_travel)  # JSON-ready
    if method.name == "sing_zero":
        record["measurement_operator"] = repr(operator)
        if method.config.sigma_y == SIGMA_Y_AUTO:
            record["sigma_y_measured"] = sigma_y
    if method.name == "sing_inn":
        scale = getattr(inn, "scale", None)
        record["measurement_operator"] = f"AveragePool(scale={scale})"
        record["inn_input_clip"] = "x0|t clipped to [-1, 1] before the INN"
    if method.name in ("dps_jscc", "inverse_jscc"):  # forward model: the DeepJSCC chain
        c = method.config
        noise = "noiseless" if c.forward_noise == "none" else f"mean of {c.noise_samples} draws"
        # the printed line's "A = ..." (printing.describe_sampler)
        record["measurement_operator"] = f"the DeepJSCC chain at the test SNR ({noise})"
    if method.name == "dps_jscc":
        record["measurement_operator"] += f"; DPS step ζ {c.zeta} ({c.zeta_schedule})"
    if method.name == "inverse_jscc":
        record["generator"] = (
            f"the prior's DDIM map from x_T (eta {c.generator_eta}, {c.generator_steps} steps); "
            "no generator trained"
        )
        # the printed line's update / η / steps: InverseJSCC's optimisation and its generator
        record["update"] = (
            f"{c.iterations} Adam iterations (lr {c.lr}, init {c.init}, {c.loss}) on x_T of "
            "G = the prior's DDIM map"
        )
        record["eta"], record["steps"] = c.generator_eta, c.generator_steps
    return record


def method_scheduler(cfg: DictConfig, method: Method) -> Any:
    """The diffusers scheduler of one method: the prior's schedule, the method's kind and
    spacing, no clipping inside ``step`` (:func:`~singexp.prior.build_scheduler`)."""
    return build_scheduler(
        num_train_timesteps=cfg.prior.num_train_timesteps,
        beta_start=cfg.prior.beta_start,
        beta_end=cfg.prior.beta_end,
        schedule=cfg.prior.schedule,
        kind=method.raw.get("scheduler", "ddim"),
        timestep_spacing=method.raw.get("timestep_spacing", "leading"),
    )


def build_restorers(
    cfg: DictConfig,
    v: Validated,
    methods: dict[str, Method],
    operator: LinearOperator,
    inn_path: Path | None,
    prior_source: str | None = None,
    sigma_y: float | None = None,
    codec: DeepJSCCModule | None = None,
) -> tuple[dict[str, Restorer], dict[str, torch.nn.Module]]:
    """Restorer callables for ``methods`` and the networks they share (moved by Lightning).

    The prior (``prior_source``, default: :func:`resolve_prior_source`) is loaded when a method
    is configured; the INN when ``inn_path`` is given; the codec for the baselines that run the
    DeepJSCC chain (``dps_jscc``, ``inverse_jscc``): ``codec``, the one the run already loaded,
    else loaded from ``jscc.checkpoint``. ``sigma_y``: what ``sigma_y=auto`` means.
    """
    if not methods:
        return {}, {}
    compute = ComputeConfig.from_config(cfg.get("evaluate"))
    source = resolve_prior_source(cfg) if prior_source is None else prior_source
    networks: dict[str, torch.nn.Module] = {
        "prior": compute.prepare_prior(load_prior(source, expected_size=v.latent.image_size))
    }
    if inn_path is not None:
        networks["inn"] = load_inn(inn_path).inn.eval().requires_grad_(False)
    if any(m.name in ("dps_jscc", "inverse_jscc") for m in methods.values()):
        # the baselines' forward model: the DeepJSCC the images went through (frozen; the SNR
        # each restorer is called with is the test SNR)
        if codec is None:
            codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db)
        networks["codec"] = codec.codec.eval().requires_grad_(False)
    restorers: dict[str, Restorer] = {}
    for name, method in methods.items():
        if method.name == "sing_inn" and "inn" in networks:
            check_measurement(method.config, networks["inn"], operator, method.prefix)
        components = {
            "unet": networks["prior"],
            "scheduler": method_scheduler(cfg, method),
            "operator": operator,
            "sigma_y": sigma_y,
            "compute": compute,
        }
        for part in ("inn", "codec"):
            if part in networks:
                components[part] = networks[part]
        restorers[name] = partial(_restore, method, components)
    return restorers, networks


def _restore(
    method: Method,
    components: dict[str, Any],
    x_hat: torch.Tensor,
    snr_db: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    return restore(method, x_hat, generator=generator, snr_db=snr_db, **components)


def require_codec(cfg: DictConfig, v: Validated, purpose: str) -> None:
    """A trained codec for ``purpose``: ``jscc.checkpoint`` set, ``auto`` resolved (below)."""
    if not v.jscc.checkpoint:
        raise ConfigError(
            "jscc.checkpoint",
            f"{purpose} needs a trained DeepJSCC; set jscc.checkpoint=embedded, auto or a path",
        )
    resolve_auto_codec(cfg, v)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the body from ``seed``, then give the caller back its own random state (a job's
    results must not depend on whether it trained an artifact or reused one)."""
    state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            L.seed_everything(seed, workers=True, verbose=False)
            yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


def train_artifact(
    cfg: DictConfig,
    task: str,
    identity: dict[str, Any],
    artifact: str,
    overrides: Callable[[Path], dict[str, Any]],
) -> Path:
    """The model that ``task`` trains for ``identity``, trained once and shared (:func:`ensure`).

    The first caller runs ``task`` on a copy of ``cfg`` (seeded by ``seed``) whose run folder is
    the artifact folder, with no callbacks and the dotted keys of ``overrides(folder)``; it writes
    ``folder/metrics.json`` and ``folder/<artifact>`` (a file or a folder), the path returned.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)

    def train(folder: Path) -> Path:
        sub = OmegaConf.create(plain)
        settings = {
            "task": task,
            "paths.output_dir": str(folder),
            "callbacks": {},
            # Lightning adds checkpoints/ itself (issue 15: not checkpoints/checkpoints/)
            "trainer.default_root_dir": str(folder),
            **single_process(sub),
            **overrides(folder),
        }
        for key, value in settings.items():
            OmegaConf.update(sub, key, value, merge=False, force_add=True)
        with _seeded(int(sub.seed)):
            results = TASKS[task](sub, validate(sub), [])
        write_json(folder / "metrics.json", results)
        path = folder / artifact
        if not path.exists():
            raise SingexpError(f"training the {task} artifact in {folder} wrote no {artifact}")
        return path

    return ensure(Path(cfg.paths.artifacts), task, identity, train)


def single_process(cfg: DictConfig) -> dict[str, Any]:
    """Trainer overrides that train an artifact in this process when the run is multi-process
    (``trainer=ddp``): the processes a DDP trainer launches re-run the command and would wait on
    the artifact's lock that this process holds while it trains (:func:`ensure`). Empty
    otherwise; the artifact's identity keeps the run's trainer."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if "ddp" not in strategy and "fsdp" not in strategy:
        return {}
    log.info("an auto artifact of a %s run trains in one process (devices=1)", strategy)
    return {"trainer.strategy": "auto", "trainer.devices": 1, "trainer.num_nodes": 1}


def resolve_auto_codec(cfg: DictConfig, v: Validated) -> None:
    """``jscc.checkpoint=auto``: the codec this config would train, trained once and shared."""
    if v.jscc.checkpoint != "auto":
        return
    path = train_artifact(
        cfg,
        "jscc",
        codec_artifact_identity(cfg, v),
        "codec.safetensors",
        lambda folder: {
            "jscc.checkpoint": None,
            "jscc.export": str(folder / "codec.safetensors"),
            "channel.train_snr_range": list(v.channel.shared_train_range()),
        },
    )
    v.jscc.checkpoint = str(path)


def resolve_inn(cfg: DictConfig, v: Validated) -> Path | None:
    """``inn.checkpoint`` as a file (:func:`resolve_inn_checkpoint`: null, ``embedded``, a path);
    ``auto`` = the INN this config's ``inn`` keys train on the codec in use, trained once."""
    if str(cfg.inn.checkpoint) != "auto":
        return resolve_inn_checkpoint(cfg.inn.checkpoint, v.bcr, v.latent.image_size, cfg.inn)
    require_codec(cfg, v, "inn.checkpoint=auto")
    codec = v.jscc.checkpoint
    return train_artifact(
        cfg,
        "inn",
        inn_artifact_identity(cfg, v),
        "inn.safetensors",
        lambda folder: {
            "inn.checkpoint": None,
            "inn.export": str(folder / "inn.safetensors"),
            "jscc.checkpoint": codec,
        },
    )


def resolve_prior_source(cfg: DictConfig) -> str:
    """``prior.source``; ``auto`` = the exported folder of the prior this config's ``prior`` keys
    train on this dataset, trained once and shared."""
    source = str(cfg.prior.source)
    if source != "auto":
        return source
    identity = prior_artifact_identity(cfg)
    return str(train_artifact(cfg, "prior", identity, "prior", lambda _: {"export_to": None}))


def task_operator(
    cfg: DictConfig, v: Validated, codec: Any, train_dataset: Callable[[], Any]
) -> LinearOperator:
    """The ``operator`` group's A for a restoration run (``restore_task`` and the pipeline):
    a fitted A (``operator=fitted``) is fitted here on training pairs (``train_dataset()``, only
    read then) at the test SNR, channel noise seeded by ``seed``: the same A on every run."""
    return operator_from_config(
        cfg.operator,
        v.bcr,
        v.latent.image_size,
        pairs=lambda n: codec_pairs(
            codec.eval(), train_dataset(), n, v.channel.snr_db, int(cfg.seed) * 1_000_003 + 3
        ),
    )


def training_split(datamodule: Any, purpose: str) -> Any:
    """The training split for ``purpose``; a test-only data set is a one-line error naming it."""
    if datamodule.split_size("train") == 0:
        raise ConfigError(
            "dataset.root",
            f"{purpose} needs training images and {datamodule.name} has none (a test-only data "
            "set); add a train/ folder or choose a setting that needs none",
        )
    return datamodule.train_dataset


def restore_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """DeepJSCC at ``channel.snr_db`` then each restorer, on the same received images."""
    preflight(cfg, v)  # sizes, prior present, given models: before any auto training (issue 15)
    # index the data first: a bad folder fails, and the split is said, before any auto training
    datamodule = indexed_data(cfg, v)
    require_codec(cfg, v, "restoration")
    check_checkpoint(
        v.jscc.checkpoint, {"bcr": format_ratio(v.bcr), "image_size": v.latent.image_size}
    )
    out = Path(cfg.paths.output_dir)
    metrics = ImageMetrics.from_config(cfg.metrics)
    codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db)
    methods = method_configs(cfg)
    operator = task_operator(cfg, v, codec, lambda: training_split(datamodule, "operator=fitted"))
    # auto models are trained only for a job that restores (a bare DeepJSCC run needs none)
    needs_inn = bool(methods) or str(cfg.inn.checkpoint) != "auto"
    inn_path = resolve_inn(cfg, v) if needs_inn else None
    prior_source = resolve_prior_source(cfg) if methods else None
    if inn_path is not None:
        check_inn_checkpoint(
            inn_path, {**jscc_identity(v.jscc.checkpoint), "snr_db": v.channel.snr_db}
        )
    sigma_y = measured_sigma_y(cfg, v, methods, codec, operator, datamodule)
    restorers, networks = build_restorers(
        cfg, v, methods, operator, inn_path, prior_source, sigma_y, codec
    )
    mean_image, skipped = mean_image_or_skip(datamodule)
    module = RestorationModule(
        codec,
        restorers,
        networks=networks,
        snr_db=v.channel.snr_db,
        metrics=metrics,
        seed=int(cfg.seed),
        grid_images=int(cfg.evaluate.grid_images),
        mean_image=mean_image,
        operator=operator,
    )
    models_trained_on = trained_on(codec, inn_path, prior_source, cfg.prior.get("trained_on"))
    elsewhere = trained_elsewhere(cfg, models_trained_on, trainable=skipped is None)
    warnings = [*v.extra.get("warnings", []), *elsewhere, *([skipped] if skipped else [])]
    for key, value, path in (
        ("jscc.checkpoint", cfg.jscc.checkpoint, v.jscc.checkpoint),
        ("inn.checkpoint", cfg.inn.checkpoint, inn_path),
        ("prior.source", cfg.prior.source, prior_source),
    ):
        if str(value) == "auto" and path is not None:  # its training's warnings, said again
            warnings += [f"{key}=auto: {note}" for note in training_warnings(path)]
    # guidance (SING-INN) takes gradients w.r.t. x0: no inference mode, the loop's no_grad
    # suffices; under DDP each process takes whole batches of the single-process order
    # (singexp.distributed), not Lightning's DistributedSampler
    trainer = build_trainer(cfg, loggers, inference_mode=False, use_distributed_sampler=False)
    trainer.test(module, dataloaders=datamodule.sharded_test_dataloader(), verbose=False)
    if not trainer.is_global_zero:  # rank 0 gathered the results and writes them
        return {"methods": {}, "rank": trainer.global_rank}
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
        "samplers": {
            name: method_record(m, operator, networks.get("inn"), sigma_y)
            for name, m in methods.items()
        },
        "operator": describe_operator(operator, str(cfg.operator.name)),
        # how the restorers computed: precision, guidance micro-batch, checkpointing
        "evaluate": dataclasses.asdict(ComputeConfig.from_config(cfg.get("evaluate"))),
        "jscc_checkpoint": v.jscc.checkpoint,
        "inn_checkpoint": str(inn_path) if inn_path else None,
        "prior_source": prior_source,
        "files": files,
        "trained_on": models_trained_on,
        "warnings": warnings,
    }


def trained_on(
    codec: Any,
    inn_path: Path | None,
    prior_source: str | None = None,
    prior_declared: str | None = None,
) -> dict[str, str | None]:
    """The data set each model of the run was trained on, as it records it: the codec's and
    INN's checkpoint ``dataset``, the prior's (:func:`~singexp.prior.prior_trained_on`: its
    folder's record, a preset's known data, or ``prior.trained_on``); None: not recorded. In
    metrics.json as ``trained_on``: the report tells matched points from mismatched ones by it
    (``+experiment=mismatch``)."""
    found = {"jscc": codec.hparams.get("dataset")}
    if inn_path is not None:
        found["inn"] = read_inn_metadata(inn_path)["hparams"].get("dataset")
    if prior_source is not None:
        found["prior"] = prior_trained_on(prior_source, prior_declared)
    return {key: None if value is None else str(value) for key, value in found.items()}


#: the config key that names each model of :func:`trained_on`, and the value that trains it on
#: the tested data
MODEL_KEYS: dict[str, tuple[str, str]] = {
    "jscc": ("jscc.checkpoint", "auto"),
    "inn": ("inn.checkpoint", "auto"),
    "prior": ("prior.source", "auto"),
}


def trained_elsewhere(
    cfg: DictConfig, models: dict[str, str | None], trainable: bool = True
) -> list[str]:
    """One warning per model (:func:`trained_on`) trained on another data set than
    ``dataset.name`` (issue 15 item 6, issue 32): its numbers can look like the paper's pattern
    while every output is off-distribution. Logged now, printed under the table. ``trainable``:
    the data has a training split (else the fix is a model trained on data like it)."""
    tested = str(cfg.dataset.name)
    warnings = []
    for key, trained in models.items():
        if trained is None or trained == tested:
            continue
        name, train_here = MODEL_KEYS[key]
        fix = (
            f"train on this data: {name}={train_here}"
            if trainable
            else f"a test-only data set: give {name} a model trained on data like it"
        )
        warnings.append(
            f"{name} ({OmegaConf.select(cfg, name)}) was trained on {trained!r}, this run tests "
            f"on {tested!r}: its numbers measure a distribution mismatch, not the method ({fix})"
        )
    for warning in warnings:
        log.warning(warning)
    return warnings


def prior_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train the unconditional diffusion prior of the ``prior`` group on ``dataset``.

    The EMA weights go to ``<run>/prior`` (diffusers format); ``export_to`` copies them there too
    (how the embedded prior is rebuilt).
    """
    out = Path(cfg.paths.output_dir)
    prior_cfg = OmegaConf.to_container(cfg.prior, resolve=True)
    kwargs = trainer_kwargs(cfg, loggers)
    exported = train_prior(prior_cfg, indexed_data(cfg, v), kwargs, out)
    if cfg.get("export_to"):
        target = Path(cfg.export_to)
        shutil.copytree(exported, target, dirs_exist_ok=True)
        log.info("copied the prior to %s", target)
    return {
        "prior": str(exported),
        "export_to": cfg.get("export_to"),
        "warnings": training_notes(kwargs["callbacks"]),
    }


def inn_task(cfg: DictConfig, v: Validated, loggers: list[Logger]) -> dict[str, Any]:
    """Train SING-INN's conditional INN on pairs made by the codec of ``jscc.checkpoint``."""
    preflight(cfg, v)
    datamodule = indexed_data(cfg, v)  # a bad folder fails before an auto codec trains
    require_codec(cfg, v, "INN training")
    out = Path(cfg.paths.output_dir)
    kwargs = trainer_kwargs(cfg, loggers)
    path = train_inn(
        OmegaConf.to_container(cfg.inn, resolve=True),
        datamodule=datamodule,
        codec=v.jscc.checkpoint,
        out_dir=out,
        trainer_kwargs=kwargs,
    )
    return {
        "inn": str(path),
        "validation": read_inn_metadata(path).get("metrics"),
        "warnings": training_notes(kwargs["callbacks"]),
    }


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
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}; choose one of {sorted(TASKS)}")
    apply_quick(cfg)  # after the experiment's own settings, so that quick=true wins over them
    print_config_mode(cfg.get("print_config", "short"))  # a bad value fails before anything runs
    v = validate(cfg)
    method_configs(cfg)  # a sampler override that methods would ignore fails here, early
    preflight(cfg, v)  # sizes, prior present, given models: before loggers and any training
    apply_thread_policy(cfg.get("threads", "auto"))  # never oversubscribe the CPU
    _single_log_stream()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if launch_rank() > 0:  # a DDP process that Lightning or Slurm started beside rank 0
        return _run_other_rank(cfg, v)
    with sigterm_ends_point(), point_lock(out):
        try:
            return _run_locked(cfg, v, out)
        except Terminated:
            log.warning("SIGTERM: %s stopped unfinished; re-run the same command to resume", out)
            raise


def _run_other_rank(cfg: DictConfig, v: Validated) -> dict[str, Any]:
    """:func:`run` in a DDP process of rank > 0: the task's share of the work, without the run
    folder's lock, config, results or loggers, which rank 0 owns (:mod:`singexp.distributed`)."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    return TASKS[cfg.task](cfg, v, [])


def _command_line_overrides() -> list[str]:
    """This job's overrides as Hydra received them (a sweep point's own values); none outside
    Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _run_locked(cfg: DictConfig, v: Validated, out: Path) -> dict[str, Any]:
    """:func:`run` in the run folder ``out``, whose lock this job holds."""
    previous = finished_results(cfg, out)
    if previous is not None:
        log.info("%s already holds this config's results: reusing them (force=true re-runs)", out)
        print_results(previous)
        return previous
    archive_results(out)
    set_aside_unfinished_wandb(out)
    show_config(cfg, _command_line_overrides())
    indexed_data(cfg, v)  # a folder that cannot be used fails before the loggers start
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
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
        if cfg.get("quick", False):
            results["quick"] = True
        results["threads"] = torch.get_num_threads()  # what threads=auto chose (threads.py)
        results["omp_wait_policy"] = wait_policy()
        write_json(out / "metrics.json", results)
        (out / "error.txt").unlink(missing_ok=True)  # of an earlier, failed attempt
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
