"""The diffusion prior as a model kind: its config group, presets, offline loading and checks,
the prior a run resolves (``prior.source``) and its training job.

- config: :class:`PriorConfig` (the ``prior`` group, :func:`prior_settings`);
- files: :func:`load_prior` — a local diffusers folder or a preset name (``embedded``, the
  shipped shapes-32 prior; ``google/ddpm-*`` from the Hugging Face cache, never downloaded),
  checked against the dataset's image size and channels; failures are one-line
  ``ConfigError``\\ s; :func:`prior_trained_on` (what it was trained on);
- checks: :func:`check_prior`, :func:`check_prior_source`, :func:`preflight_prior` (the
  preflight's);
- resolution: :func:`resolve_prior_source` (``auto`` trained once);
- training: :func:`train_prior` and the job :func:`prior_job` (``task=prior``), with the
  LightningModule :class:`~singexp.modules.prior.DiffusionPriorModule` (training logic only).

The network is built by :func:`singexp.nn.unet.build_unet` (an unconditional
``diffusers.UNet2DModel``), the noise schedules by :mod:`singexp.samplers.schedulers`.

One concern, one module (over 600 lines): the prior model kind, as the codec's and the INN's
are each one module; what makes it longer is finding weights offline (a local folder, the
shipped one or a Hugging Face cache, each failure diagnosed in one line).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from diffusers.models import UNet2DModel  # not `diffusers`: dummies under TYPE_CHECKING
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from singexp.callbacks import training_notes
from singexp.data.base import indexed_data
from singexp.errors import ConfigError
from singexp.faults import resume_checkpoint
from singexp.locations import ASSETS_DIR
from singexp.models.artifact import train_artifact, training_identity, without
from singexp.modules.prior import DiffusionPriorModule
from singexp.nn.unet import build_unet, count_parameters
from singexp.reuse import folder_identity, reused
from singexp.state import RunState
from singexp.trainers import trainer_kwargs
from singexp.weights import check_finite

if TYPE_CHECKING:
    from singexp.config import RunConfig

log = logging.getLogger("singexp.prior")

#: the shipped prior (trained on 32×32 shapes, docs/guide/methods.md), in diffusers format
EMBEDDED_DIR: Path = ASSETS_DIR / "prior_shapes32"

#: preset name -> Hugging Face repo id ("embedded" is the shipped folder, see EMBEDDED_DIR)
PRESETS: dict[str, str] = {
    "embedded": "embedded",
    "google/ddpm-celebahq-256": "google/ddpm-celebahq-256",
    "google/ddpm-ema-celebahq-256": "google/ddpm-ema-celebahq-256",
    "google/ddpm-cifar10-32": "google/ddpm-cifar10-32",
    # short aliases (the config file names)
    "ddpm_celebahq_256": "google/ddpm-celebahq-256",
    "ddpm_ema_celebahq_256": "google/ddpm-ema-celebahq-256",
    "ddpm_cifar10_32": "google/ddpm-cifar10-32",
}

#: the data each Hugging Face preset was trained on (Ho et al. 2020), named as the dataset
#: configs name it (``dataset.name``): what the distribution-mismatch warning compares
PRESET_TRAINED_ON: dict[str, str] = {
    "google/ddpm-celebahq-256": "celebahq",
    "google/ddpm-ema-celebahq-256": "celebahq",
    "google/ddpm-cifar10-32": "cifar10",
}

#: the file a prior folder exported by singexp records its training data in (``{"dataset": ...}``)
TRAINING_RECORD: str = "singexp.json"

#: where a diffusers checkpoint may keep its UNet: at the top level or in a pipeline's unet/
UNET_SUBFOLDERS: tuple[str, ...] = ("", "unet")


# ---- building -----------------------------------------------------------------------------
#: the keys of the ``prior`` group that only a prior trained here needs (``prior.source=auto``,
#: ``+experiment=train_prior``): its architecture and training recipe (conf/prior/embedded.yaml)
TRAINING_KEYS = (
    "block_out_channels",
    "layers_per_block",
    "attention",
    "norm_num_groups",
    "lr",
    "weight_decay",
    "loss_weighting",
    "min_snr_gamma",
    "ema_decay",
    "batch_size",
    "max_steps",
    "checkpoint_every",
    "val_every",
    "val_batches",
    "grid_size",
    "grid_steps",
    "save_grids",
    "resume",
    "export_dtype",
)


@dataclass(frozen=True)
class PriorConfig:
    """The ``prior`` config group, checked once (:func:`prior_settings`, from
    ``config.validate``). Its values come from the YAML (``conf/prior/*.yaml``); the fields
    without one are :data:`TRAINING_KEYS`, which a preset of a pretrained model leaves out
    (None: absent, not a default)."""

    source: str
    image_size: int | None
    in_channels: int
    num_train_timesteps: int
    beta_start: float
    beta_end: float
    schedule: str
    trained_on: str | None
    block_out_channels: list[int] | None = None
    layers_per_block: int | None = None
    attention: bool | None = None
    norm_num_groups: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    loss_weighting: str | None = None
    min_snr_gamma: float | None = None
    ema_decay: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    checkpoint_every: int | None = None
    val_every: int | None = None
    val_batches: int | None = None
    grid_size: int | None = None
    grid_steps: int | None = None
    save_grids: bool | None = None
    resume: bool | None = None
    export_dtype: str | None = None

    @property
    def trains(self) -> bool:
        """Whether this prior is trained here (``source: auto``)."""
        return self.source == "auto"


def prior_settings(node: Mapping[str, Any], trains: bool = False) -> PriorConfig:
    """The ``prior`` group as a :class:`PriorConfig`: unknown keys, wrong types and missing keys
    are one-line errors naming ``prior.<key>``; a prior trained here (``source: auto``, or
    ``trains``: the prior task) needs every :data:`TRAINING_KEYS` (``prior=embedded`` has them)."""
    from singexp.schema import check_schema

    required = [f.name for f in fields(PriorConfig) if f.name not in TRAINING_KEYS]
    missing = [k for k in required if k not in node]
    if missing:
        raise ConfigError(f"prior.{missing[0]}", "missing; every prior preset sets it")
    prior = check_schema("prior", node, PriorConfig)
    if trains or prior.trains:
        absent = [k for k in TRAINING_KEYS if k not in node]
        if absent:
            raise ConfigError(
                f"prior.{absent[0]}",
                "missing: a prior trained here (prior.source=auto, +experiment=train_prior) "
                "needs the architecture and training keys of prior=embedded",
            )
    return prior


# ---- loading ------------------------------------------------------------------------------
def resolve_source(source: str | Path) -> tuple[str, Path | None]:
    """``(repo id or description, local folder or None)`` for a ``prior.source`` value.

    ``embedded`` is the shipped folder (``./embedded`` names a local one); otherwise an existing
    folder wins, and the other presets are Hugging Face repo ids (looked up in the local cache
    only by :func:`load_prior`).
    """
    text = str(source).strip()
    if not text:
        raise ConfigError("prior.source", "is empty; use embedded, a preset name or a folder")
    if PRESETS.get(text) == "embedded":  # the shipped prior, whatever folders the cwd holds
        return "embedded", EMBEDDED_DIR
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), path
    preset = PRESETS.get(text)
    if preset is not None:
        return preset, None
    raise ConfigError(
        "prior.source",
        f"{text!r} is neither a local folder nor a preset; use a diffusers folder or one of "
        f"{sorted(k for k in PRESETS if '/' in k or k == 'embedded')}",
    )


def _unet_subfolder(folder: Path) -> str | None:
    """The subfolder ("" or "unet") of a local diffusers folder that holds a UNet config."""
    for sub in UNET_SUBFOLDERS:
        if (folder / sub / "config.json").is_file():
            return sub
    return None


def _cache_diagnosis(repo: str) -> str:
    """What of ``repo`` is missing from the Hugging Face cache: which folder was searched and
    what it lacks (the repo folder, ``refs/main``, its snapshot, the UNet's config or weights)."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    folder = f"models--{repo.replace('/', '--')}"
    where = f"searched the Hugging Face cache {cache} (HF_HUB_CACHE, else HF_HOME/hub)"
    repo_dir = cache / folder
    if not repo_dir.is_dir():
        for other, fix in (
            (cache / "hub", f"HF_HUB_CACHE={cache / 'hub'} (or HF_HOME={cache})"),
            (cache.parent, f"HF_HUB_CACHE={cache.parent}"),
        ):
            if (other / folder).is_dir():
                return f"{where}: no {folder} in it, but {other} has one; set {fix}"
        return f"{where}: no {folder} in it"
    ref = repo_dir / "refs" / "main"
    if not ref.is_file():
        return f"{where}: {repo_dir} has no refs/main (the commit of the snapshot to use)"
    commit = ref.read_text().strip()
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        return f"{where}: refs/main names {commit} but {snapshot} is missing"
    for sub in UNET_SUBFOLDERS:
        unet = snapshot / sub
        if (unet / "config.json").is_file():
            if not any((unet / name).exists() for name in UNET_WEIGHTS):
                return (
                    f"{where}: {unet} has config.json but no weights ({' or '.join(UNET_WEIGHTS)})"
                )
            return f"{where}: {unet} has a UNet that could not be read"
    return f"{where}: {snapshot} has no UNet config.json (at its top level or in unet/)"


def _not_found(repo: str) -> ConfigError:
    return ConfigError(
        "prior.source",
        f"{repo} not found locally ({_cache_diagnosis(repo)}; offline: nothing is downloaded); "
        "on a machine with network "
        f"run `hf download {repo} --local-dir DIR` (older huggingface_hub: `huggingface-cli "
        "download`), copy DIR here and set prior.source=DIR",
    )


def _load_local(folder: Path, label: str) -> UNet2DModel:
    sub = _unet_subfolder(folder)
    if sub is None:
        if label == "embedded":
            raise ConfigError(
                "prior.source",
                f"the embedded prior is missing from {folder}; reinstall singexp or retrain it "
                "with `python -m singexp +experiment=train_prior`",
            )
        raise ConfigError(
            "prior.source",
            f"{folder} holds no diffusers UNet (no config.json at its top level or in unet/)",
        )
    try:
        return UNet2DModel.from_pretrained(
            str(folder), subfolder=sub or None, local_files_only=True, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            "prior.source", f"cannot load a UNet2DModel from {folder}: {first}"
        ) from None


def _load_cached(repo: str) -> UNet2DModel:
    for sub in UNET_SUBFOLDERS:
        try:
            return UNet2DModel.from_pretrained(
                repo, subfolder=sub or None, local_files_only=True, low_cpu_mem_usage=False
            )
        except (OSError, ValueError):
            continue
    raise _not_found(repo)


def _as_int(value: Any) -> int:
    if isinstance(value, list | tuple):
        return int(value[0])
    return int(value)


def check_prior(
    unet: UNet2DModel, *, expected_size: int | None, expected_channels: int = 3, label: str = ""
) -> None:
    """Raise a one-line ConfigError when the UNet's image size or channels differ from the data."""
    check_prior_config(
        dict(unet.config),
        expected_size=expected_size,
        expected_channels=expected_channels,
        label=label,
    )


def check_prior_config(
    config: Mapping[str, Any],
    *,
    expected_size: int | None,
    expected_channels: int = 3,
    label: str = "",
) -> None:
    """:func:`check_prior` on a UNet's ``config.json`` (read without loading the weights)."""
    size = _as_int(config.get("sample_size"))
    name = label or "the prior"
    if expected_size is not None and size != int(expected_size):
        raise ConfigError(
            "prior.source",
            f"{name} generates {size}x{size} images but dataset.image_size={expected_size}; "
            f"set dataset.image_size={size} or choose a prior of {expected_size} px "
            "(prior.source=auto trains one on this data)",
        )
    channels = (int(config.get("in_channels", 3)), int(config.get("out_channels", 3)))
    if channels != (expected_channels, expected_channels):
        raise ConfigError(
            "prior.source",
            f"{name} has {channels[0]} input / {channels[1]} output channels but the "
            f"dataset has {expected_channels} (dataset.image_size={expected_size}); "
            "choose an RGB prior",
        )


#: file names of a diffusers UNet's weights (safetensors or the older pickle)
UNET_WEIGHTS: tuple[str, ...] = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
)


def _read_config(path: Path) -> dict[str, Any]:
    """A UNet's ``config.json``; one line naming ``prior.source`` and the file when it is not a
    JSON object."""
    import json

    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(
            "prior.source", f"{path} is not valid JSON ({error}); restore or re-export the prior"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError("prior.source", f"{path} is not a JSON object (a UNet's config)")
    return config


def prior_config(source: str | Path) -> tuple[str, dict[str, Any]]:
    """``(label, the UNet's config.json)`` of ``prior.source``, found as :func:`load_prior` would
    find it (a local folder, ``embedded``, or the local Hugging Face cache, never downloaded),
    without loading the weights; a missing UNet or weights file is the one-line error
    :func:`load_prior` gives. What the preflight checks before any training."""

    label, folder = resolve_source(source)
    if folder is not None:
        sub = _unet_subfolder(folder)
        if sub is None:
            _load_local(folder, label)  # raises the one-line error for this folder
        unet_dir = folder / (sub or "")
        if not any((unet_dir / name).is_file() for name in UNET_WEIGHTS):
            raise ConfigError(
                "prior.source", f"{unet_dir} holds a UNet config.json but no weights file"
            )
        return label, _read_config(unet_dir / "config.json")
    from huggingface_hub import try_to_load_from_cache

    for sub in UNET_SUBFOLDERS:
        prefix = f"{sub}/" if sub else ""
        config = try_to_load_from_cache(label, f"{prefix}config.json")
        weights = [try_to_load_from_cache(label, f"{prefix}{name}") for name in UNET_WEIGHTS]
        if isinstance(config, str) and any(isinstance(w, str) for w in weights):
            return label, _read_config(Path(config))
    raise _not_found(label)


def check_prior_source(
    source: str | Path, *, expected_size: int | None, expected_channels: int = 3
) -> str:
    """The checks of :func:`load_prior` (present, image size, channels) on ``config.json``
    alone: fast, so they run before any training. Returns the prior's label."""
    label, config = prior_config(source)
    check_prior_config(
        config, expected_size=expected_size, expected_channels=expected_channels, label=label
    )
    return label


def write_training_record(folder: str | Path, dataset: str) -> Path:
    """Record the data set an exported prior folder was trained on (:data:`TRAINING_RECORD`)."""
    import json

    path = Path(folder) / TRAINING_RECORD
    path.write_text(json.dumps({"dataset": str(dataset)}, indent=2) + "\n")
    return path


def prior_trained_on(source: str | Path, declared: str | None = None) -> str | None:
    """The data set the prior of ``source`` was trained on: ``declared`` (``prior.trained_on``,
    for a folder that records nothing) wins, then the folder's :data:`TRAINING_RECORD` (written
    when singexp exports a prior; the embedded prior's says ``shapes``), then what a preset is
    known to be trained on (:data:`PRESET_TRAINED_ON`); None: not recorded."""
    import json

    if declared is not None and str(declared).strip():
        return str(declared).strip()
    label, folder = resolve_source(source)
    if folder is None:
        return PRESET_TRAINED_ON.get(label)
    record = folder / TRAINING_RECORD
    if record.is_file():
        try:
            dataset = json.loads(record.read_text()).get("dataset")
        except (ValueError, AttributeError):
            raise ConfigError(
                "prior.source", f"{record} is not a JSON object with a dataset key"
            ) from None
        return None if dataset is None else str(dataset)
    return None


def load_prior(
    source: str | Path,
    *,
    expected_size: int | None,
    expected_channels: int = 3,
    dtype: torch.dtype = torch.float32,
) -> UNet2DModel:
    """Load an ε-prediction UNet from a local folder or a preset, offline, in eval mode.

    ``source``: a diffusers folder (a UNet's ``config.json`` at its top level or under
    ``unet/``), ``embedded`` (the shipped shapes-32 prior) or a ``google/ddpm-*`` preset found
    in the local Hugging Face cache (``local_files_only=True``: nothing is downloaded).
    The prior must generate ``expected_size``² images with ``expected_channels`` channels.
    """
    label, folder = resolve_source(source)
    unet = _load_local(folder, label) if folder is not None else _load_cached(label)
    check_finite("prior.source", folder if folder is not None else label, unet)
    check_prior(unet, expected_size=expected_size, expected_channels=expected_channels, label=label)
    torch.nn.Module.to(unet, dtype)  # plain cast (an fp16 file loads into the given dtype)
    return unet.eval().requires_grad_(False)


# ---- training -----------------------------------------------------------------------------
#: prior config keys that are model/schedule/optimiser hyper-parameters of the module
MODULE_KEYS: tuple[str, ...] = (
    "block_out_channels",
    "layers_per_block",
    "attention",
    "norm_num_groups",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "schedule",
    "lr",
    "weight_decay",
    "ema_decay",
    "loss_weighting",
    "min_snr_gamma",
    "grid_size",
    "grid_steps",
)


def train_prior(
    prior_cfg: Mapping[str, Any],
    datamodule: Any,
    trainer_kwargs: Mapping[str, Any],
    out_dir: Path,
) -> Path:
    """Train an unconditional DDPM prior on ``datamodule`` and export its EMA weights.

    ``prior_cfg``: the ``prior`` config group (architecture, schedule, ``lr``, ``ema_decay``,
    ``max_steps``, ``checkpoint_every``, ``val_every``, ``val_batches``, ``batch_size``, ...).
    ``trainer_kwargs``: ``lightning.Trainer`` keyword arguments (loggers and callbacks as
    objects); ``max_steps`` comes from ``prior_cfg`` (``max_epochs`` is then unlimited) and a
    step-based ``ModelCheckpoint`` writing ``out_dir/checkpoints/last.ckpt`` replaces any
    other ModelCheckpoint, so a rerun with the same ``out_dir`` resumes.
    Returns ``out_dir/prior``: a diffusers folder loadable with :func:`load_prior`.
    """
    out_dir = Path(out_dir)
    cfg = dict(prior_cfg)
    batch_size = cfg.get("batch_size")
    if batch_size is not None and hasattr(datamodule, "batch_size"):
        datamodule.batch_size = int(batch_size)
    image_size = int(datamodule.image_size)
    if cfg.get("image_size") is not None and int(cfg["image_size"]) != image_size:
        raise ConfigError(
            "prior.image_size",
            f"is {cfg['image_size']} but dataset.image_size={image_size}; set them equal",
        )
    module = DiffusionPriorModule(
        image_size=image_size,
        **{k: cfg[k] for k in MODULE_KEYS if k in cfg and cfg[k] is not None},
        sample_dir=str(out_dir / "samples") if cfg.get("save_grids", True) else None,
    )
    log.info("prior UNet: %.2f M parameters", count_parameters(module.unet) / 1e6)

    kwargs = dict(trainer_kwargs)
    kwargs.pop("_target_", None)
    every = int(cfg.get("checkpoint_every", 100))
    checkpoint = ModelCheckpoint(
        dirpath=str(out_dir / "checkpoints"),
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every,
        save_top_k=1,
        monitor="step",
        mode="max",
        save_last=True,
        # always overwrite last.ckpt (a resumed run must not leave its steps in last-v1.ckpt)
        enable_version_counter=False,
    )
    callbacks = [
        cb for cb in (kwargs.pop("callbacks", None) or []) if not isinstance(cb, ModelCheckpoint)
    ]
    kwargs["callbacks"] = [*callbacks, checkpoint]
    if cfg.get("max_steps") is not None:
        kwargs["max_steps"] = int(cfg["max_steps"])
        kwargs["max_epochs"] = -1
    val_every = cfg.get("val_every")
    if val_every:
        kwargs["val_check_interval"] = int(val_every)
        kwargs["check_val_every_n_epoch"] = None
    if cfg.get("val_batches") is not None:
        kwargs["limit_val_batches"] = int(cfg["val_batches"])
    kwargs.setdefault("default_root_dir", str(out_dir))
    trainer = L.Trainer(**kwargs)

    resume = resume_checkpoint(out_dir, bool(cfg.get("resume", True)), "prior training")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    export_dir = out_dir / "prior"
    module.export(export_dir, dtype=cfg.get("export_dtype", "float16"))
    if getattr(datamodule, "name", None) is not None:  # the mismatch warning reads it back
        write_training_record(export_dir, str(datamodule.content or datamodule.name))
    log.info("prior exported to %s", export_dir)
    return export_dir


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
    prior = without(run.plain["prior"], *PRIOR_RUN_KEYS)
    # prior.batch_size=null trains with dataset.batch_size: then that one counts
    prior["batch_size"] = prior.get("batch_size") or run.data.batch_size
    return training_identity(run, prior=prior)


def resolve_prior_source(run: RunConfig) -> str:
    """``prior.source``; ``auto`` = the exported folder of the prior this config's ``prior`` keys
    train on this dataset, trained once and shared."""
    assert run.prior is not None  # preflight: a restoring run has a prior
    if not run.prior.trains:
        return run.prior.source
    identity = prior_artifact_identity(run)
    return str(
        train_artifact(run, "prior", prior_job, identity, "prior", lambda _: {"export_to": None})
    )


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


def check_prior_size(v: RunConfig) -> None:
    """``prior.image_size`` (when set) equals ``dataset.image_size``: a preset fixes its size,
    a trained prior follows the data (``${dataset.image_size}``) unless overridden."""
    if v.prior is None:
        raise ConfigError("prior", "missing; choose e.g. prior=embedded")
    size = v.latent.image_size
    source = v.prior.source
    declared = v.prior.image_size
    if declared is None or int(declared) == size:
        return
    if source == "auto" or v.task == "prior":
        fix = (
            f"a trained prior follows the data's size: drop the prior.image_size override or "
            f"set prior.image_size={size}"
        )
    else:
        fix = (
            f"set dataset.image_size={declared} or choose a prior of {size} px "
            "(prior.source=auto trains one on this data)"
        )
    raise ConfigError(
        "prior.image_size", f"is {declared} ({source}) but dataset.image_size={size}; {fix}"
    )


def preflight_prior(v: RunConfig) -> None:
    """:func:`check_prior_size`; a ``prior.source`` other than ``auto`` is present (local
    folder, ``embedded``, or a preset in the local Hugging Face cache) and generates images of
    that size; ``auto`` can be built at that size."""
    check_prior_size(v)
    prior = v.prior
    assert prior is not None  # check_prior_size said so in one line
    size = v.latent.image_size
    if not prior.trains:
        check_prior_source(prior.source, expected_size=size, expected_channels=prior.in_channels)
        return
    assert prior.block_out_channels is not None  # prior_settings: a trained prior has them
    assert prior.layers_per_block is not None and prior.attention is not None
    build_unet(  # the architecture fits the size (divisible, groups) before anything trains
        size,
        in_channels=prior.in_channels,
        block_out_channels=prior.block_out_channels,
        layers_per_block=prior.layers_per_block,
        attention=prior.attention,
        norm_num_groups=prior.norm_num_groups,
    )


def prior_identity(source: str) -> tuple[Any, ...]:
    """What a prior is loaded from, as a :mod:`singexp.reuse` key: a local folder's files, or
    a Hugging Face cache's repo id (whose snapshots do not change)."""
    label, folder = resolve_source(source)
    if folder is not None:
        return (label, folder_identity(folder))
    return (label, os.environ.get("HF_HUB_CACHE"), os.environ.get("HF_HOME"))


def run_prior(run: RunConfig) -> tuple[str | None, UNet2DModel | None]:
    """The prior of a restoration run whose methods sample it (else ``(None, None)``): its
    source (:func:`resolve_prior_source`: ``auto`` trained once) and its UNet, prepared as
    ``evaluate`` says (gradient checkpointing, compile) and loaded once per process, shared by
    the points of a sweep (:mod:`singexp.reuse`)."""
    if not run.methods:
        return None, None
    source = resolve_prior_source(run)
    compute, size = run.compute, run.latent.image_size
    key = ("prior", prior_identity(source), size, compute.gradient_checkpointing, compute.compile)
    unet = reused(key, lambda: compute.prepare_prior(load_prior(source, expected_size=size)))
    return source, unet
