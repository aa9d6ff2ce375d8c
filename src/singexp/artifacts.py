"""Shared trained models: what each one's identity is, how a run resolves and trains one on
demand, and the training jobs themselves.

A grid point that needs a model (``jscc.checkpoint=auto``, ``inn.checkpoint=auto``,
``prior.source=auto``) asks for it by its training identity; the first job trains it into
``<paths.artifacts>/<kind>/<hash>/``, the others wait on the folder's file lock and reuse the
result (a file or a folder). Explicit checkpoint paths in config always win.

- identities: :func:`codec_artifact_identity`, :func:`inn_artifact_identity`,
  :func:`prior_artifact_identity` (the config keys a model's training depends on);
- resolution: :func:`require_codec`, :func:`resolve_inn`, :func:`resolve_prior_source`, trained
  once by :func:`train_artifact` (:func:`ensure`);
- the training jobs (``task=jscc``, ``inn``, ``prior``; also what an ``auto`` model runs):
  :func:`codec_job`, :func:`inn_job`, :func:`prior_job` (:data:`JOBS`);
- provenance: :func:`trained_on` (the data each model of a run was trained on) and
  :func:`trained_elsewhere` (the mismatch warnings).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch.loggers import Logger

from singexp.bcr import format_ratio
from singexp.callbacks import training_notes
from singexp.config import RunConfig
from singexp.data.base import indexed_data
from singexp.errors import ConfigError, SingexpError
from singexp.faults import atomic_write_text, resume_checkpoint
from singexp.modules.inn import read_inn_metadata, resolve_inn_checkpoint, train_inn
from singexp.modules.jscc import (
    DeepJSCCModule,
    export_codec,
    load_codec,
)
from singexp.modules.prior import train_prior
from singexp.modules.restoration import mean_image_baseline
from singexp.points import file_digest, identity_hash, read_results, write_json
from singexp.preflight import preflight
from singexp.prior import prior_trained_on
from singexp.state import RunState
from singexp.trainers import build_trainer, trainer_kwargs

log = logging.getLogger("singexp.artifacts")

__all__ = ["file_digest", "identity_hash"]  # re-exported: the digests identities are made of

#: a training job: the run's config, its loggers and its state (:class:`RunState`; None: a
#: fresh one) → its JSON-ready results
Job = Callable[[RunConfig, list[Logger], RunState | None], dict[str, Any]]


def ensure(root: Path, kind: str, identity: dict[str, Any], build: Callable[[Path], Path]) -> Path:
    """The artifact ``kind`` for ``identity``: reused when present, else ``build(folder)`` once.

    Concurrent callers with the same identity serialise on ``folder/.lock``; the first builds,
    the rest find ``artifact.json`` and return its path. ``build`` returns the artifact, a file
    or a folder; one that has gone missing since is built again.
    """
    folder = Path(root) / kind / identity_hash(identity)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "artifact.json"
    with FileLock(str(folder / ".lock")):
        done, _ = read_results(record, ("path",))  # a torn record (a killed job) does not count
        if done is not None and Path(done["path"]).exists():
            path = Path(done["path"])
            log.info("reusing %s artifact %s", kind, path)
            return path
        log.info("training %s artifact in %s", kind, folder)
        atomic_write_text(folder / "identity.json", json.dumps(identity, indent=2, default=str))
        path = build(folder)
        atomic_write_text(record, json.dumps({"path": str(path)}))
        return path


def training_warnings(path: str | Path) -> list[str]:
    """What the training job of the artifact at ``path`` warned about (its folder's
    metrics.json ``warnings``, e.g. a tiny training split): said again by every run that reuses
    it, since it trained before them."""
    results, _ = read_results(Path(path).parent / "metrics.json", ())
    return [str(w) for w in (results or {}).get("warnings") or []]


def _without(node: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: val for k, val in node.items() if k not in keys}


#: dataset keys that do not change what a model trains on (how the data is batched or loaded,
#: the test split, what is warned about)
DATASET_RUN_KEYS = ("batch_size", "num_workers", "test_size", "min_train_images", "split_overlap")


def _training_identity(run: RunConfig, **parts: Any) -> dict[str, Any]:
    """What every trained artifact depends on (the data, not how it is batched or loaded nor the
    test split; the trainer, not where it writes; the seed) plus ``parts``."""
    dataset = _without(run.plain["dataset"], *DATASET_RUN_KEYS)
    if dataset.get("content") in (None, dataset.get("name")):  # says nothing beyond the name:
        dataset.pop("content", None)  # the identity (and hash) of models trained before the key
    return {
        "dataset": dataset,
        "trainer": _without(run.trainer, "default_root_dir"),
        "seed": run.seed,
        **parts,
    }


def codec_artifact_identity(run: RunConfig) -> dict[str, Any]:
    """What ``jscc.checkpoint=auto`` depends on: data, BCR, channel, ``jscc`` training keys; the
    training SNR (``ChannelConfig.shared_train_range``), never the test SNR ``channel.snr_db``."""
    return _training_identity(
        run,
        bcr=format_ratio(run.bcr),
        channel={"name": run.channel.name, "train_snr": list(run.channel.shared_train_range())},
        jscc=_without(run.plain["jscc"], "checkpoint", "export", "resume"),
    )


def inn_artifact_identity(run: RunConfig, codec: str | Path | None = None) -> dict[str, Any]:
    """What ``inn.checkpoint=auto`` depends on: data, the ``inn`` training keys and the codec in
    use (``codec``, the resolved codec file, :func:`require_codec`; default ``jscc.checkpoint``
    as validated: its content, not its path)."""
    codec = run.jscc.checkpoint if codec is None else codec
    return _training_identity(
        run,
        bcr=format_ratio(run.bcr),
        codec={"sha256": file_digest(str(codec)), "bcr": format_ratio(run.bcr)},
        inn=_without(run.plain.get("inn") or {}, "checkpoint", "export", "resume"),
    )


#: prior keys that do not change the trained weights (where they come from, monitoring)
PRIOR_RUN_KEYS = (
    "source",
    "resume",
    "checkpoint_every",
    "val_every",
    "val_batches",
    "grid_size",
    "grid_steps",
    "save_grids",
    "trained_on",
)


def prior_artifact_identity(run: RunConfig) -> dict[str, Any]:
    """What ``prior.source=auto`` depends on: data and the ``prior`` training keys."""
    prior = _without(run.plain["prior"], *PRIOR_RUN_KEYS)
    # prior.batch_size=null trains with dataset.batch_size: then that one counts
    prior["batch_size"] = prior.get("batch_size") or run.data.batch_size
    return _training_identity(run, prior=prior)


# ---- resolution: the model a run's ``auto`` keys name, trained once -------------------------
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


def single_process(run: RunConfig) -> dict[str, Any]:
    """Trainer overrides that train an artifact in this process when the run is multi-process
    (``trainer=ddp``): the processes a DDP trainer launches re-run the command and would wait on
    the artifact's lock that this process holds while it trains (:func:`ensure`). Empty
    otherwise; the artifact's identity keeps the run's trainer."""
    strategy = str(run.trainer.get("strategy", "auto"))
    if "ddp" not in strategy and "fsdp" not in strategy:
        return {}
    log.info("an auto artifact of a %s run trains in one process (devices=1)", strategy)
    return {"trainer.strategy": "auto", "trainer.devices": 1, "trainer.num_nodes": 1}


def train_artifact(
    run: RunConfig,
    job: str,
    identity: dict[str, Any],
    artifact: str,
    overrides: Callable[[Path], dict[str, Any]],
) -> Path:
    """The model that the training job ``job`` (:data:`JOBS`) trains for ``identity``, trained
    once and shared (:func:`ensure`).

    The first caller runs the job on ``run`` (seeded by ``seed``) whose run folder is the
    artifact folder, with no callbacks and the dotted keys of ``overrides(folder)``; it writes
    ``folder/metrics.json`` and ``folder/<artifact>`` (a file or a folder), the path returned.
    """

    def train(folder: Path) -> Path:
        sub = run.with_settings(
            {
                "task": job,
                "paths.output_dir": str(folder),
                "callbacks": {},
                # Lightning adds checkpoints/ itself (not checkpoints/checkpoints/)
                "trainer.default_root_dir": str(folder),
                **single_process(run),
                **overrides(folder),
            }
        )
        with _seeded(sub.seed):
            results = JOBS[job](sub, [], RunState())  # a run of its own
        write_json(folder / "metrics.json", results)
        path = folder / artifact
        if not path.exists():
            raise SingexpError(f"training the {job} artifact in {folder} wrote no {artifact}")
        return path

    return ensure(Path(str(run.paths["artifacts"])), job, identity, train)


def require_codec(run: RunConfig, purpose: str) -> Path:
    """The trained codec file for ``purpose``: ``jscc.checkpoint`` set (a file, ``embedded``
    resolved by validation), ``auto`` resolved (trained once: :func:`train_artifact`). The run's
    config is left as it is: callers pass the returned file on."""
    if not run.jscc.checkpoint:
        raise ConfigError(
            "jscc.checkpoint",
            f"{purpose} needs a trained DeepJSCC; set jscc.checkpoint=embedded, auto or a path",
        )
    if run.jscc.checkpoint != "auto":
        return Path(run.jscc.checkpoint)
    return train_artifact(
        run,
        "jscc",
        codec_artifact_identity(run),
        "codec.safetensors",
        lambda folder: {
            "jscc.checkpoint": None,
            "jscc.export": str(folder / "codec.safetensors"),
            "channel.train_snr_range": list(run.channel.shared_train_range()),
        },
    )


def resolve_inn(run: RunConfig, codec: Path | None = None) -> Path | None:
    """``inn.checkpoint`` as a file (:func:`resolve_inn_checkpoint`: null, ``embedded``, a path);
    ``auto`` = the INN this config's ``inn`` keys train on the codec in use (``codec``, the
    resolved codec file; None: :func:`require_codec`), trained once."""
    value = run.inn.checkpoint if run.inn else None
    if str(value) != "auto":
        return resolve_inn_checkpoint(value, run.bcr, run.latent.image_size, run.inn)
    if codec is None:
        codec = require_codec(run, "inn.checkpoint=auto")
    return train_artifact(
        run,
        "inn",
        inn_artifact_identity(run, codec),
        "inn.safetensors",
        lambda folder: {
            "inn.checkpoint": None,
            "inn.export": str(folder / "inn.safetensors"),
            "jscc.checkpoint": str(codec),
        },
    )


def resolve_prior_source(run: RunConfig) -> str:
    """``prior.source``; ``auto`` = the exported folder of the prior this config's ``prior`` keys
    train on this dataset, trained once and shared."""
    assert run.prior is not None  # preflight: a restoring run has a prior
    if not run.prior.trains:
        return run.prior.source
    identity = prior_artifact_identity(run)
    return str(train_artifact(run, "prior", identity, "prior", lambda _: {"export_to": None}))


# ---- the training jobs ----------------------------------------------------------------------
def codec_job(
    run: RunConfig, loggers: list[Logger], state: RunState | None = None
) -> dict[str, Any]:
    """Train a DeepJSCC codec (or load ``jscc.checkpoint``) and test it at ``channel.snr_db``."""
    state = RunState() if state is None else state
    preflight(run, state)  # a given codec file checked (its identity and architecture)
    datamodule = indexed_data(run, state)  # the split said before building or training a model
    identity: dict[str, Any] = {
        "bcr": format_ratio(run.bcr),
        "image_size": run.latent.image_size,
        "channel": run.channel.name,
        "downsample": run.jscc.downsample,
    }
    trainer = build_trainer(run, loggers)
    if run.jscc.checkpoint:  # a file (auto is refused for a jscc run), checked by preflight
        module = load_codec(
            run.jscc.checkpoint, test_snr_db=run.channel.snr_db, metrics=asdict(run.metrics)
        )
        trainer.test(module, datamodule=datamodule, verbose=False)
        checkpoint: str | None = run.jscc.checkpoint
    else:
        module = DeepJSCCModule(
            **identity,
            latent_channels=run.latent.channels,
            width=run.jscc.width,
            snr_adaptive=run.jscc.snr_adaptive,
            train_snr=run.channel.train_range(),
            test_snr_db=run.channel.snr_db,
            lr=run.jscc.lr,
            weight_decay=run.jscc.weight_decay,
            metrics=asdict(run.metrics),
            dataset=run.data_content,
        )
        resume = resume_checkpoint(run.output_dir, run.jscc.resume)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""  # type: ignore[attr-defined]  # Lightning types checkpoint_callback as Checkpoint; it is a ModelCheckpoint
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        checkpoint = best or None
        if run.jscc.export and trainer.is_global_zero:  # one process writes the file
            checkpoint = str(export_codec(module, run.jscc.export))
            log.info("exported the codec to %s", checkpoint)
    return {
        "test": module.test_summary,
        "metric_status": module.metrics.status(),
        "perceptual_size": module.metrics.perceptual_size,
        "baseline_mean_image": mean_image_baseline(datamodule),
        "checkpoint": checkpoint,
        "latent_channels": run.latent.channels,
        "channel_symbols": run.latent.symbols,
        "warnings": [*state.warnings, *training_notes(trainer.callbacks)],  # type: ignore[attr-defined]  # Lightning's Trainer.callbacks is set dynamically
    }


def inn_job(run: RunConfig, loggers: list[Logger], state: RunState | None = None) -> dict[str, Any]:
    """Train SING-INN's conditional INN on pairs made by the codec of ``jscc.checkpoint``."""
    state = RunState() if state is None else state
    preflight(run, state)
    datamodule = indexed_data(run, state)  # a bad folder fails before an auto codec trains
    codec = require_codec(run, "INN training")
    kwargs = trainer_kwargs(run, loggers)
    path = train_inn(
        run.inn,
        datamodule=datamodule,
        codec=str(codec),
        out_dir=run.output_dir,
        trainer_kwargs=kwargs,
    )
    return {
        "inn": str(path),
        "validation": read_inn_metadata(path).get("metrics"),
        "warnings": training_notes(kwargs["callbacks"]),
    }


def prior_job(
    run: RunConfig, loggers: list[Logger], state: RunState | None = None
) -> dict[str, Any]:
    """Train the unconditional diffusion prior of the ``prior`` group on ``dataset``.

    The EMA weights go to ``<run>/prior`` (diffusers format); ``export_to`` copies them there too
    (how the embedded prior is rebuilt).
    """
    kwargs = trainer_kwargs(run, loggers)
    exported = train_prior(run.plain["prior"], indexed_data(run, state), kwargs, run.output_dir)
    export_to = run.select("export_to")
    if export_to:
        shutil.copytree(exported, Path(export_to), dirs_exist_ok=True)
        log.info("copied the prior to %s", export_to)
    return {
        "prior": str(exported),
        "export_to": export_to,
        "warnings": training_notes(kwargs["callbacks"]),
    }


#: the training jobs by ``task`` (also what an ``auto`` model's training runs)
JOBS: dict[str, Job] = {"jscc": codec_job, "inn": inn_job, "prior": prior_job}


# ---- provenance: what each model of a run was trained on ------------------------------------
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
    run: RunConfig, models: dict[str, str | None], trainable: bool = True
) -> list[str]:
    """One warning per model (:func:`trained_on`) trained on another data set than the tested
    images (:attr:`RunConfig.data_content`: ``dataset.content``, else ``dataset.name``): its
    numbers can look like the paper's pattern
    while every output is off-distribution. Logged now, printed under the table. ``trainable``:
    the data has a training split (else the fix is a model trained on data like it)."""
    tested = run.data_content
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
            f"{name} ({run.select(name)}) was trained on {trained!r}, this run tests "
            f"on {tested!r}: its numbers measure a distribution mismatch, not the method ({fix})"
        )
    for warning in warnings:
        log.warning(warning)
    return warnings


def auto_training_notes(
    run: RunConfig, codec: Path | None, inn_path: Path | None, prior_source: str | None
) -> list[str]:
    """What the trainings of the run's ``auto`` models warned about (:func:`training_warnings`),
    said again by every run that uses them, each prefixed with its key (``codec``, ``inn_path``,
    ``prior_source``: the resolved models)."""
    notes: list[str] = []
    for key, path in (
        ("jscc.checkpoint", codec),
        ("inn.checkpoint", inn_path),
        ("prior.source", prior_source),
    ):
        if str(run.select(key)) == "auto" and path is not None:
            notes += [f"{key}=auto: {note}" for note in training_warnings(path)]
    return notes
