"""The diffusion prior: diffusers UNet and noise schedules, presets, offline loading, training.

Plain functions, no Lightning (training, :func:`singexp.modules.prior.train_prior`, lives next
to its LightningModule):

- :func:`build_unet` — an unconditional ``diffusers.UNet2DModel`` (no attention by default:
  attention is what costs on a CPU, docs/guide/methods.md).
- :func:`build_scheduler` — DDPM/DDIM scheduler with the paper's schedule (linear β from 1e-4
  to 0.02, T = 1000; Ho et al. 2020).
- :func:`load_prior` — a local diffusers folder or a preset name (``embedded``, the shipped
  shapes-32 prior; ``google/ddpm-*`` from the Hugging Face cache, never downloaded), checked
  against the dataset's image size and channels; failures are one-line ``ConfigError``\\ s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from diffusers.models import UNet2DModel  # not `diffusers`: dummies under TYPE_CHECKING
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

from singexp.errors import ConfigError
from singexp.weights import check_finite

log = logging.getLogger("singexp.prior")

#: the shipped prior (trained on 32×32 shapes, docs/guide/methods.md), in diffusers format
EMBEDDED_DIR: Path = Path(__file__).resolve().parent / "assets" / "prior_shapes32"

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

SCHEDULES: dict[str, str] = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
}
SCHEDULER_KINDS: dict[str, type] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
#: the multistep kinds (deterministic, η = 0; they keep the previous steps' x̂0): their own
#: settings, and a multistep scheduler does not clip inside ``step`` (``thresholding`` off)
MULTISTEP_KINDS: dict[str, dict[str, Any]] = {
    # DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095), data prediction, Alg. 2
    "dpmsolver++": {"algorithm_type": "dpmsolver++", "solver_order": 2, "thresholding": False},
    # UniPC-2 with the B(h) = e^h − 1 variant (bh2), Zhao et al. 2023 (arXiv 2302.04867)
    "unipc": {"predict_x0": True, "solver_type": "bh2", "solver_order": 2, "thresholding": False},
}


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


def default_norm_groups(channels: Sequence[int]) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 that divides every channel count."""
    for groups in (32, 16, 8, 4, 2, 1):
        if all(int(c) % groups == 0 for c in channels):
            return groups
    return 1


def build_unet(
    sample_size: int,
    in_channels: int = 3,
    block_out_channels: Sequence[int] = (32, 64, 128),
    layers_per_block: int = 1,
    attention: bool | Sequence[bool] = False,
    norm_num_groups: int | None = None,
    attention_head_dim: int = 8,
    dropout: float = 0.0,
) -> UNet2DModel:
    """An unconditional ε-prediction ``UNet2DModel`` for ``sample_size``² images.

    ``attention``: False (default: no attention block anywhere — attention is what costs on a
    CPU, docs/guide/methods.md), True (attention in the lowest-resolution level only) or one
    flag per level.
    ``norm_num_groups``: GroupNorm groups; None picks the largest of 32, 16, ... dividing
    every entry of ``block_out_channels``.
    """
    channels = tuple(int(c) for c in block_out_channels)
    if not channels:
        raise ConfigError("prior.block_out_channels", "must list at least one channel count")
    levels = len(channels)
    if isinstance(attention, bool):
        flags = [False] * levels
        if attention:
            flags[-1] = True
    else:
        flags = [bool(a) for a in attention]
        if len(flags) != levels:
            raise ConfigError(
                "prior.attention",
                f"needs one flag per level ({levels}), got {len(flags)}",
            )
    factor = 2 ** (levels - 1)
    if sample_size % factor:
        raise ConfigError(
            "dataset.image_size",
            f"{sample_size} is not divisible by {factor} "
            f"(the UNet downsamples {levels - 1} times); change prior.block_out_channels",
        )
    groups = default_norm_groups(channels) if norm_num_groups is None else int(norm_num_groups)
    if any(c % groups for c in channels):
        raise ConfigError(
            "prior.norm_num_groups", f"{groups} must divide every channel count {list(channels)}"
        )
    return UNet2DModel(
        sample_size=int(sample_size),
        in_channels=int(in_channels),
        out_channels=int(in_channels),
        block_out_channels=channels,
        layers_per_block=int(layers_per_block),
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in flags),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(flags)),
        norm_num_groups=groups,
        attention_head_dim=int(attention_head_dim),
        dropout=float(dropout),
        add_attention=any(flags),  # the mid block's attention follows the levels' choice
    )


def build_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear",
    kind: str = "ddim",
    clip_sample: bool = False,
    **kwargs: Any,
) -> DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler | UniPCMultistepScheduler:
    """A diffusers scheduler with the paper's noise schedule (linear β 1e-4..0.02, T = 1000).

    ``schedule``: linear | scaled_linear | cosine; ``kind``: ddim | ddpm | dpmsolver++ | unipc
    (:data:`MULTISTEP_KINDS`: deterministic multistep solvers). The model predicts ε;
    x0 is not clipped inside ``step`` unless ``clip_sample`` (restoration never does: its loop
    clips only with ``sampler.clip_x0``); extra keyword arguments go to the scheduler (e.g.
    ``timestep_spacing``).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(
            "prior.schedule", f"unknown {schedule!r}; choose one of {list(SCHEDULES)}"
        )
    if kind not in SCHEDULER_KINDS:
        raise ConfigError(
            "sampler.scheduler", f"unknown {kind!r}; choose one of {list(SCHEDULER_KINDS)}"
        )
    options: dict[str, Any] = {
        "num_train_timesteps": int(num_train_timesteps),
        "beta_start": float(beta_start),
        "beta_end": float(beta_end),
        "beta_schedule": SCHEDULES[schedule],
        "prediction_type": "epsilon",
    }
    if kind in MULTISTEP_KINDS:
        if clip_sample:
            raise ConfigError(
                "sampler.scheduler", f"{kind} has no clip_sample; use sampler.clip_x0"
            )
        options.update(MULTISTEP_KINDS[kind])
    else:
        options["clip_sample"] = bool(clip_sample)
    options.update(kwargs)
    return SCHEDULER_KINDS[kind](**options)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of a model."""
    return sum(p.numel() for p in model.parameters())


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


def sample_grid_rows(n: int) -> int:
    """Images per row of a roughly square grid of ``n`` images."""
    return max(1, math.ceil(math.sqrt(n)))
