"""The DeepJSCC codec as a model kind: its identity, checks, metadata, loading, export, the
model a run resolves (``jscc.checkpoint``) and its training job.

- identity: :func:`checkpoint_identity` (what a codec file was trained for),
  :func:`jscc_identity` (what an INN records about its codec: that plus a fingerprint of its
  weights, :func:`codec_fingerprint`), :func:`codec_artifact_identity` (what
  ``jscc.checkpoint=auto`` depends on);
- checks: :func:`check_checkpoint`, :func:`snr_range_note`, :func:`preflight_codec` (the
  preflight's);
- files: :func:`read_hparams`, :func:`load_codec`, :func:`export_codec` (safetensors with the
  hyper-parameters in its metadata);
- resolution: :func:`require_codec` (``auto`` trained once, :mod:`singexp.models.artifact`);
- training: :func:`codec_job` (``task=jscc``; also what an ``auto`` codec runs), with the
  LightningModule :class:`~singexp.modules.jscc.DeepJSCCModule` (training logic only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.loggers import Logger
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from singexp.bcr import format_ratio
from singexp.callbacks import training_notes
from singexp.data.base import indexed_data
from singexp.errors import ConfigError
from singexp.faults import atomic_path, resume_checkpoint
from singexp.models.artifact import preflight_checks, train_artifact, training_identity, without
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import mean_image_baseline
from singexp.reuse import file_identity, reused
from singexp.state import RunState
from singexp.trainers import build_trainer
from singexp.weights import check_finite

if TYPE_CHECKING:
    from singexp.config import RunConfig

log = logging.getLogger("singexp.models.jscc")

# hyper-parameters that must agree between a checkpoint and the config that loads it
IDENTITY_KEYS: dict[str, str] = {
    "bcr": "bcr.ratio",
    "image_size": "dataset.image_size",
    "channel": "channel.name",
    "downsample": "jscc.downsample",
}


#: the network's keys (besides ``downsample``) that must agree: the codec is built from the file,
#: so a config with other values would record a network that did not run
ARCHITECTURE_KEYS: dict[str, str] = {"width": "jscc.width", "snr_adaptive": "jscc.snr_adaptive"}


#: how far (dB) outside its training SNR range a codec may be tested without a warning
SNR_MARGIN_DB = 5.0


def codec_artifact_identity(run: RunConfig) -> dict[str, Any]:
    """What ``jscc.checkpoint=auto`` depends on: data, BCR, channel, ``jscc`` training keys; the
    training SNR (``ChannelConfig.shared_train_range``), never the test SNR ``channel.snr_db``."""
    return training_identity(
        run,
        bcr=format_ratio(run.bcr),
        channel={"name": run.channel.name, "train_snr": list(run.channel.shared_train_range())},
        jscc=without(run.plain["jscc"], "checkpoint", "export", "resume"),
    )


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
        codec_job,
        codec_artifact_identity(run),
        "codec.safetensors",
        lambda folder: {
            "jscc.checkpoint": None,
            "jscc.export": str(folder / "codec.safetensors"),
            "channel.train_snr_range": list(run.channel.shared_train_range()),
        },
    )


# ---- the training jobs ----------------------------------------------------------------------
def codec_job(
    run: RunConfig, loggers: list[Logger], state: RunState | None = None
) -> dict[str, Any]:
    """Train a DeepJSCC codec (or load ``jscc.checkpoint``) and test it at ``channel.snr_db``."""
    state = RunState() if state is None else state
    preflight_checks(run, state, preflight_codec)  # a given codec file: identity, architecture
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


def export_codec(
    module: DeepJSCCModule, path: str | Path, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the codec's weights as safetensors, its hyper-parameters in the file's metadata.

    This is the shipped format of the embedded weights: small (float16 by default) and
    loadable without Lightning's pickled checkpoint state. :func:`load_codec` reads it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hparams = {k: v for k, v in module.hparams.items() if k != "metrics"}
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in module.codec.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"singexp_hparams": json.dumps(hparams)})
    return path


def read_hparams(path: str | Path) -> dict[str, Any]:
    """Hyper-parameters of a DeepJSCC ``.ckpt`` (Lightning) or exported ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("singexp_hparams", "{}"))
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return dict(ckpt.get("hyper_parameters", {}))


def load_codec(path: str | Path, **overrides: Any) -> DeepJSCCModule:
    """A DeepJSCCModule from a ``.ckpt`` or exported ``.safetensors`` file, in float32."""
    path = Path(path)
    try:
        if path.suffix != ".safetensors":
            module = DeepJSCCModule.load_from_checkpoint(path, map_location="cpu", **overrides)
        else:
            module = DeepJSCCModule(**{**read_hparams(path), **overrides})
            state = {k: v.float() for k, v in load_file(str(path)).items()}
            module.codec.load_state_dict(state)
    except RuntimeError as error:  # tensors of another network than the recorded one
        raise mismatched_tensors("jscc.checkpoint", path, error) from None
    check_finite("jscc.checkpoint", path, module)
    return module


def mismatched_tensors(key: str, path: str | Path, error: RuntimeError) -> Exception:
    """The one-line ConfigError for ``load_state_dict``'s size mismatch or missing keys (the
    file's tensors are not those of the network its metadata records); else ``error``."""
    text = str(error)
    if "size mismatch" not in text and "Missing key" not in text and "Unexpected key" not in text:
        return error
    detail = next((line.strip() for line in text.splitlines()[1:] if line.strip()), text)
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return ConfigError(
        key,
        f"{path}: its tensors do not fit the network its metadata records (another BCR or "
        f"architecture; {detail.rstrip('.')}); re-export it or use a matching file",
    )


def snr_range_note(path: str | Path, snr_db: float) -> str | None:
    """A one-line warning when ``snr_db`` is far (over :data:`SNR_MARGIN_DB`) outside the
    training SNR range the codec file at ``path`` records (``train_snr``), else None."""
    recorded = read_hparams(path).get("train_snr") or ()
    try:
        low, high = sorted(float(x) for x in recorded)
    except (TypeError, ValueError):  # not recorded (or not a range): nothing to compare
        return None
    if low - SNR_MARGIN_DB <= float(snr_db) <= high + SNR_MARGIN_DB:
        return None
    return (
        f"channel.snr_db={float(snr_db):g} dB is far outside the range the codec "
        f"{Path(path).name} was trained on, [{low:g}, {high:g}] dB: its results there are an "
        "extrapolation; test within (or near) that range or use a codec trained for this SNR"
    )


def checkpoint_identity(path: str | Path) -> dict[str, Any]:
    """The training identity stored in a DeepJSCC checkpoint's hyper-parameters."""
    hparams = read_hparams(path)
    if "bcr" not in hparams:
        raise ConfigError(
            "jscc.checkpoint", f"{path} is not a singexp DeepJSCC checkpoint (no bcr recorded)"
        )
    return {key: hparams.get(key) for key in IDENTITY_KEYS}


def configured_architecture(jscc: Any) -> dict[str, Any]:
    """The ``jscc`` group's network keys (``downsample`` and :data:`ARCHITECTURE_KEYS`), as
    :func:`check_checkpoint` compares them with a given codec file."""
    return {key: getattr(jscc, key) for key in ("downsample", *ARCHITECTURE_KEYS)}


def check_checkpoint(path: str | Path, expected: dict[str, Any]) -> None:
    """Raise a one-line ConfigError when the checkpoint was trained for another configuration
    (:data:`IDENTITY_KEYS`, naming ``jscc.checkpoint``) or built with another network than the
    ``jscc`` group's (:data:`ARCHITECTURE_KEYS`, naming the key; only those ``expected`` has)."""
    found = checkpoint_identity(path)
    for key, cfg_key in IDENTITY_KEYS.items():
        if key in expected and str(found[key]) != str(expected[key]):
            raise ConfigError(
                "jscc.checkpoint",
                f"{Path(path).name} was trained for {key}={found[key]} but the config has "
                f"{cfg_key}={expected[key]}; set {cfg_key}={found[key]} "
                "or use a matching checkpoint",
            )
    hparams = read_hparams(path)
    for key, cfg_key in ARCHITECTURE_KEYS.items():
        if key in expected and key in hparams and str(hparams[key]) != str(expected[key]):
            raise ConfigError(
                cfg_key,
                f"is {expected[key]} but {Path(path).name} was built with {key}={hparams[key]}; "
                f"set {cfg_key}={hparams[key]} to use this codec or use one trained with "
                f"{cfg_key}={expected[key]}",
            )


# ---- the DeepJSCC an INN is trained on -----------------------------------------------------
def codec_fingerprint(codec: Any) -> str:
    """A short hash of a DeepJSCC's weights (as float16, so a ``.ckpt`` and its float16
    ``.safetensors`` export have the same fingerprint)."""
    net = codec.codec if hasattr(codec, "codec") else codec
    digest = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def jscc_identity(codec: str | Path | DeepJSCCModule, path: str | Path | None = None) -> dict:
    """What an INN records about its DeepJSCC (and what :func:`check_inn_checkpoint` compares):
    ``checkpoint`` (path), ``fingerprint`` (:func:`codec_fingerprint`), ``bcr``,
    ``image_size``, ``channel``, ``downsample``. ``codec``: a checkpoint path or a module
    (then ``path`` names where it came from, if known)."""
    if isinstance(codec, str | Path):
        path = codec if path is None else path
        hparams = read_hparams(codec)
        if "bcr" not in hparams:
            raise ConfigError(
                "jscc.checkpoint", f"{codec} is not a singexp DeepJSCC checkpoint (no bcr recorded)"
            )
        codec = load_codec(codec)
    hparams = dict(codec.hparams)
    return {
        "checkpoint": None if path is None else str(path),
        "fingerprint": codec_fingerprint(codec),
        "bcr": str(hparams.get("bcr")),
        "image_size": hparams.get("image_size"),
        "channel": hparams.get("channel"),
        "downsample": hparams.get("downsample"),
    }


def preflight_codec(v: RunConfig) -> list[str]:
    """A given ``jscc.checkpoint`` (not ``auto``) was trained for this BCR and image size;
    returns the warnings (a test SNR far outside the codec's training range)."""
    if v.jscc.checkpoint == "auto" and v.task == "jscc":
        raise ConfigError(
            "jscc.checkpoint",
            "auto is the codec a restoration or INN run trains for itself; a jscc run trains "
            "its codec with jscc.checkpoint=null (or tests a file: jscc.checkpoint=PATH)",
        )
    if v.jscc.checkpoint in (None, "auto"):
        return []
    check_checkpoint(
        v.jscc.checkpoint,
        {
            "bcr": format_ratio(v.bcr),
            "image_size": v.latent.image_size,
            **configured_architecture(v.jscc),
        },
    )
    note = snr_range_note(v.jscc.checkpoint, v.channel.snr_db)
    # one line, printed with the results (their warnings)
    return [note] if note is not None else []


def run_codec(run: RunConfig) -> tuple[Path, DeepJSCCModule]:
    """The codec of a restoration run and its file: ``jscc.checkpoint`` resolved
    (:func:`require_codec`: ``auto`` trained once), checked (an ``auto`` one here, a given file
    by the preflight) and loaded once per process and test SNR (:mod:`singexp.reuse`)."""
    codec_path = require_codec(run, "restoration")
    if run.jscc.checkpoint == "auto":  # a given file was checked by preflight; this one is new
        check_checkpoint(
            codec_path,
            {
                "bcr": format_ratio(run.bcr),
                "image_size": run.latent.image_size,
                **configured_architecture(run.jscc),
            },
        )
    path, snr_db = str(codec_path), run.channel.snr_db
    codec = reused(
        ("codec", file_identity(path), snr_db), lambda: load_codec(path, test_snr_db=snr_db)
    )
    return codec_path, codec
