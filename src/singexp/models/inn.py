"""SING-INN's conditional INN as a model kind: its config group, identity, checks, files,
the INN a run resolves (``inn.checkpoint``) and its training job.

A file records the DeepJSCC it was trained on (``jscc``: path, a fingerprint of its weights
and its identity hparams bcr, image_size, channel, downsample) and the training SNR range;
:func:`check_inn_checkpoint` refuses an INN trained for another BCR or DeepJSCC.

- config: :class:`INNConfig` (the ``inn`` group, :func:`inn_config`);
- identity: :func:`inn_checkpoint_identity` (what a file was trained for),
  :func:`inn_artifact_identity` (what ``inn.checkpoint=auto`` depends on);
- checks: :func:`check_inn_checkpoint`, :func:`check_inn_architecture`, :func:`preflight_inn`
  (the preflight's);
- files: :func:`read_inn_metadata`, :func:`load_inn`, :func:`export_inn`, the shipped ones
  (:func:`embedded_inn`);
- resolution: :func:`resolve_inn_checkpoint`, :func:`resolve_inn` (``auto`` trained once);
- training: :func:`train_inn` and the job :func:`inn_job` (``task=inn``), with the
  LightningModule :class:`~singexp.modules.inn.INNModule` (training logic only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from singexp.bcr import format_ratio, parse_ratio
from singexp.callbacks import training_notes
from singexp.data.base import indexed_data
from singexp.errors import ConfigError, missing_file
from singexp.faults import atomic_path, resume_checkpoint
from singexp.locations import ASSETS_DIR
from singexp.models.artifact import preflight_checks, train_artifact, training_identity, without
from singexp.models.jscc import (
    codec_fingerprint,
    jscc_identity,
    load_codec,
    mismatched_tensors,
    preflight_codec,
    require_codec,
)
from singexp.modules.inn import INNHParams, INNModule
from singexp.modules.jscc import DeepJSCCModule
from singexp.nn.inn import INNArchitecture
from singexp.operators import scale_for_bcr
from singexp.points import file_digest, json_ready
from singexp.reuse import file_identity, reused
from singexp.schema import check_schema
from singexp.state import RunState
from singexp.trainers import trainer_kwargs
from singexp.weights import check_finite

if TYPE_CHECKING:
    from singexp.config import RunConfig

log = logging.getLogger("singexp")


def inn_artifact_identity(run: RunConfig, codec: str | Path | None = None) -> dict[str, Any]:
    """What ``inn.checkpoint=auto`` depends on: data, the ``inn`` training keys and the codec in
    use (``codec``, the resolved codec file, :func:`require_codec`; default ``jscc.checkpoint``
    as validated: its content, not its path)."""
    codec = run.jscc.checkpoint if codec is None else codec
    return training_identity(
        run,
        bcr=format_ratio(run.bcr),
        codec={"sha256": file_digest(str(codec)), "bcr": format_ratio(run.bcr)},
        inn=without(run.plain.get("inn") or {}, "checkpoint", "export", "resume"),
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
        inn_job,
        inn_artifact_identity(run, codec),
        "inn.safetensors",
        lambda folder: {
            "inn.checkpoint": None,
            "inn.export": str(folder / "inn.safetensors"),
            "jscc.checkpoint": str(codec),
        },
    )


def inn_job(run: RunConfig, loggers: list[Logger], state: RunState | None = None) -> dict[str, Any]:
    """Train SING-INN's conditional INN on pairs made by the codec of ``jscc.checkpoint``."""
    state = RunState() if state is None else state
    preflight_checks(run, state, preflight_codec)
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


#: the shipped INNs ("embedded"), one per BCR, trained on the embedded 32 px codecs
EMBEDDED_INN_DIR = ASSETS_DIR / "inn_shapes32"


#: what an INN checkpoint must share with the config that loads it -> the config key to change
IDENTITY_KEYS: dict[str, str] = {
    "bcr": "bcr.ratio",
    "image_size": "dataset.image_size",
    "channel": "channel.name",
    "downsample": "jscc.downsample",
    "fingerprint": "jscc.checkpoint",
}


#: ``inn.export_dtype``: the dtypes an INN is exported in (exactly invertible either way)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class INNConfig(INNHParams):
    """The ``inn`` config group (``conf/inn/default.yaml``): the recorded hyper-parameters and
    where the INN comes from or goes to. Read by :func:`inn_config`."""

    checkpoint: str | None = None
    resume: bool = True
    export: str | None = None
    export_dtype: str = "float32"

    def check(self) -> None:
        super().check()
        if self.export_dtype not in _DTYPES:
            raise ConfigError(
                "inn.export_dtype", f"float32, float16 or bfloat16, got {self.export_dtype!r}"
            )


def inn_config(node: Mapping[str, Any] | None) -> INNConfig:
    """The ``inn`` group checked (:func:`~singexp.config.check_schema` and
    :meth:`INNConfig.check`): unknown keys, wrong types and values out of range are one-line
    ConfigErrors naming the ``inn.*`` key."""
    config = check_schema("inn", {} if node is None else node, INNConfig)
    config.check()
    return config


def export_inn(
    module: INNModule,
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write the INN's weights as safetensors with its hyper-parameters (and optionally its
    validation metrics) in the file's metadata; :func:`load_inn` reads it back."""
    dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", dtype).contiguous() for k, v in module.inn.state_dict().items()
    }
    metadata = {"singexp_inn_hparams": json.dumps(json_ready(dict(module.hparams)))}
    if metrics:
        metadata["singexp_inn_metrics"] = json.dumps(json_ready(dict(metrics)))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_inn_metadata(path: str | Path) -> dict[str, Any]:
    """``{"hparams": ..., "metrics": ...}`` of an INN ``.ckpt`` or exported ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise missing_file("inn.checkpoint", path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return {
            "hparams": json.loads(meta.get("singexp_inn_hparams", "{}")),
            "metrics": json.loads(meta.get("singexp_inn_metrics", "{}")),
        }
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any unreadable file is the same user error
        raise ConfigError(
            "inn.checkpoint", f"{path} is not a readable checkpoint: {error}"
        ) from None
    return {"hparams": dict(ckpt.get("hyper_parameters", {})), "metrics": {}}


def read_inn_hparams(path: str | Path) -> dict[str, Any]:
    hparams = read_inn_metadata(path)["hparams"]
    if "jscc" not in hparams or "scale" not in hparams:
        raise ConfigError(
            "inn.checkpoint",
            f"{Path(path).name} is not a singexp INN checkpoint (no jscc recorded)",
        )
    return hparams


def load_inn(path: str | Path, **overrides: Any) -> INNModule:
    """An INNModule (float32, eval mode) from a ``.ckpt`` or an exported ``.safetensors``.

    Its DeepJSCC is not loaded (only needed to train or validate): pass ``codec=`` (a
    DeepJSCCModule, which must be the one it was trained on) where it is.
    """
    path = Path(path)
    hparams = read_inn_hparams(path)
    recorded = (hparams.get("jscc") or {}).get("fingerprint")
    codec = overrides.get("codec")
    if codec is not None and recorded and codec_fingerprint(codec) != recorded:
        raise ConfigError("jscc.checkpoint", f"is not the DeepJSCC {path.name} was trained on")
    try:
        if path.suffix != ".safetensors":
            module = INNModule.load_from_checkpoint(path, map_location="cpu", **overrides)
        else:
            module = INNModule(**{**hparams, **overrides})
            module.inn.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except RuntimeError as error:  # tensors of another network than the recorded one
        raise mismatched_tensors("inn.checkpoint", path, error) from None
    check_finite("inn.checkpoint", path, module.inn)
    return module.eval()


def inn_checkpoint_identity(path: str | Path) -> dict[str, Any]:
    """What the INN at ``path`` was trained for: its DeepJSCC's identity and the SNR range."""
    hparams = read_inn_hparams(path)
    jscc = dict(hparams.get("jscc") or {})
    return {
        **{k: jscc.get(k) for k in IDENTITY_KEYS},
        "jscc_checkpoint": jscc.get("checkpoint"),
        "train_snr": tuple(hparams.get("train_snr", ())),
        "scale": hparams.get("scale"),
    }


def _same(key: str, found: Any, expected: Any) -> bool:
    if key == "bcr":
        try:
            return parse_ratio(found) == parse_ratio(expected)
        except ConfigError:
            pass
    return str(found) == str(expected)


def check_inn_checkpoint(path: str | Path, expected: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError naming ``inn.checkpoint`` when the INN at ``path`` was
    trained for another BCR, image size, channel or DeepJSCC than ``expected``.

    ``expected``: any of ``bcr``, ``image_size``, ``channel``, ``downsample``, ``fingerprint``
    (:func:`jscc_identity` of the configured ``jscc.checkpoint`` gives all of them). An
    ``snr_db`` outside the INN's training range only logs a warning.
    """
    found = inn_checkpoint_identity(path)
    name = Path(path).name
    for key, cfg_key in IDENTITY_KEYS.items():
        if key not in expected or expected[key] is None or found[key] is None:
            continue
        if _same(key, found[key], expected[key]):
            continue
        if key == "fingerprint":
            raise ConfigError(
                "inn.checkpoint",
                f"{name} was trained on another DeepJSCC (weights {found[key]}, from "
                f"{found['jscc_checkpoint']}) than {cfg_key} (weights {expected[key]}); use the "
                "INN trained for this codec or train one: python -m singexp +experiment=train_inn",
            )
        raise ConfigError(
            "inn.checkpoint",
            f"{name} was trained for {key}={found[key]} but the config has "
            f"{cfg_key}={expected[key]}; use an INN trained for {key}={expected[key]} "
            "(python -m singexp +experiment=train_inn) or change the config to match",
        )
    snr = expected.get("snr_db")
    low_high = found["train_snr"]
    if snr is not None and len(low_high) == 2 and not low_high[0] <= float(snr) <= low_high[1]:
        log.warning(
            "inn.checkpoint %s was trained for SNRs in [%g, %g] dB; evaluating at %g dB",
            name,
            low_high[0],
            low_high[1],
            float(snr),
        )


#: the architecture keys an INN file must share with the ``inn`` group that loads it, in the
#: order a mismatch is reported (those ``inn=light`` changes first)
ARCHITECTURE_KEYS = ("width", "pairs", "cond_blocks", "emb_dim", "scale", "clamp")


def inn_architecture(arch: Any = None) -> dict[str, Any]:
    """The architecture keys that ``arch`` sets (null or absent ones left out): ``arch`` is the
    ``inn`` group as a plain dict or a DictConfig (any mapping), an object with the keys as
    attributes (:class:`~singexp.nn.inn.INNArchitecture`, :class:`INNConfig`), or None."""
    if arch is None:
        return {}
    if isinstance(arch, Mapping):
        values = {key: arch.get(key) for key in ARCHITECTURE_KEYS}
    else:
        values = {key: getattr(arch, key, None) for key in ARCHITECTURE_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def _same_value(found: Any, wanted: Any) -> bool:
    try:
        return float(found) == float(wanted)
    except (TypeError, ValueError):
        return str(found) == str(wanted)


def _order(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def check_inn_architecture(path: str | Path, arch: Any) -> None:
    """Raise a one-line ConfigError naming the ``inn.*`` key when the INN at ``path`` was built
    with another architecture than ``arch`` sets (:func:`inn_architecture`): the network is
    built from the file, so the config would record keys that did not run."""
    found = inn_architecture(read_inn_hparams(path))
    for key, wanted in inn_architecture(arch).items():
        if key in found and not _same_value(found[key], wanted):
            raise ConfigError(
                f"inn.{key}",
                f"is {wanted} but {Path(path).name} was built with {key}={found[key]}; set "
                f"inn.{key}={found[key]} to use this file (the network is built from it) or use an "
                f"INN trained with inn.{key}={wanted}",
            )


def embedded_inn(ratio: Fraction | str, image_size: int, arch: Any = None) -> Path:
    """The shipped INN for ``ratio`` at 32 px whose architecture is ``arch``'s
    (``inn.checkpoint=embedded``: the ``inn`` group, a dict, DictConfig or INNArchitecture;
    absent keys: the defaults, ``scale`` by the BCR rule), read from the files' metadata, or a
    one-line ConfigError naming the first key no shipped file has (``inn=default``:
    ``inn_<bcr>.safetensors``, ``inn=light``: ``inn_<bcr>_w16p2.safetensors``)."""
    rho = ratio if isinstance(ratio, Fraction) else parse_ratio(ratio)
    bcr = f"{rho.numerator}_{rho.denominator}"
    shipped = sorted(EMBEDDED_INN_DIR.glob(f"inn_{bcr}.safetensors"))
    shipped += sorted(EMBEDDED_INN_DIR.glob(f"inn_{bcr}_*.safetensors"))
    train = "train one with `python -m singexp +experiment=train_inn` and set inn.checkpoint=PATH"
    if int(image_size) != 32 or not shipped:
        raise ConfigError(
            "inn.checkpoint",
            f"no embedded INN for bcr {rho.numerator}/{rho.denominator} at {image_size} px "
            f"(docs/results/embedded_weights.md); {train}",
        )
    default = dataclasses.asdict(INNArchitecture(scale=scale_for_bcr(rho, 32)))
    wanted = {**default, **inn_architecture(arch)}
    candidates = {path: inn_architecture(read_inn_hparams(path)) for path in shipped}
    for key in ARCHITECTURE_KEYS:
        matching = {p: a for p, a in candidates.items() if _same_value(a.get(key), wanted[key])}
        if not matching:
            values = sorted({a.get(key) for a in candidates.values()}, key=_order)
            shown = " or ".join(str(v) for v in values)
            hint = " (inn.scale follows operator.scale)" if key == "scale" else ""
            fix = f"set inn.{key}={values[0]}" if len(values) == 1 else "use a shipped one"
            raise ConfigError(
                f"inn.{key}",
                f"is {wanted[key]}{hint} but no embedded INN for bcr "
                f"{rho.numerator}/{rho.denominator} has it (shipped: {key} {shown}; "
                f"docs/results/embedded_weights.md); {fix} (inn=default, or inn=light where "
                f"shipped), or {train}",
            )
        candidates = matching
    return next(iter(candidates))


def resolve_inn_checkpoint(
    value: Any, ratio: Fraction | str, image_size: int, arch: Any = None
) -> Path | None:
    """``inn.checkpoint`` as a file: null → None, ``embedded`` → :func:`embedded_inn` (the
    shipped network of ``arch``'s architecture: the ``inn`` group), else the path, which must
    exist and, when ``arch`` is given, have its architecture (:func:`check_inn_architecture`)."""
    if value is None:
        return None
    if str(value) == "embedded":
        return embedded_inn(ratio, image_size, arch)
    path = Path(str(value))
    if not path.is_file():
        raise missing_file("inn.checkpoint", value)
    if arch is not None:
        # the data it was trained for first: an INN of another BCR is the wrong file, whatever
        # its architecture says (its scale follows its BCR)
        rho = ratio if isinstance(ratio, Fraction) else parse_ratio(ratio)
        check_inn_checkpoint(path, {"bcr": f"{rho.numerator}/{rho.denominator}"})
        check_inn_architecture(path, arch)
    return path


# ---- training --------------------------------------------------------------------------------
def train_inn(
    cfg: Mapping[str, Any] | INNConfig | None,
    *,
    datamodule: L.LightningDataModule,
    codec: str | Path | DeepJSCCModule,
    out_dir: str | Path,
    trainer_kwargs: Mapping[str, Any] | None = None,
    trainer: L.Trainer | None = None,
    jscc_checkpoint: str | Path | None = None,
) -> Path:
    """Train the SING-INN network on pairs from ``codec`` and export it; returns the exported
    ``.safetensors`` (``inn.export`` or ``out_dir/inn.safetensors``), loadable by
    :func:`load_inn` and usable as ``inn.checkpoint``.

    ``cfg``: the ``inn`` config node (:class:`INNConfig`). ``codec``: the DeepJSCC checkpoint
    path (``jscc.checkpoint``) or a loaded DeepJSCCModule (then pass ``jscc_checkpoint`` to
    record where it came from). ``trainer``: a ready Lightning Trainer; else one is built from
    ``trainer_kwargs`` with ``default_root_dir=out_dir`` and, unless the kwargs bring one, a
    ModelCheckpoint in ``out_dir/checkpoints`` (best by ``val/psnr`` and ``last.ckpt``).
    With ``inn.resume`` the fit resumes from ``out_dir/checkpoints/last.ckpt`` when it exists.
    The best checkpoint's weights (the last ones without validation) are exported, with their
    validation metrics in the file's metadata (:func:`read_inn_metadata`).
    """
    c = cfg if isinstance(cfg, INNConfig) else inn_config(cfg)
    out = Path(out_dir)
    if isinstance(codec, str | Path):
        jscc_checkpoint = codec if jscc_checkpoint is None else jscc_checkpoint
        codec = load_codec(codec)
    identity = jscc_identity(codec, jscc_checkpoint)
    size = getattr(datamodule, "image_size", identity.get("image_size"))
    if size is not None and int(size) % c.scale:
        raise ConfigError(
            "inn.scale",
            f"{c.scale} does not divide the image size {size}; use a power of two that divides it",
        )
    name = getattr(datamodule, "name", None)
    module = INNModule(c, jscc=identity, codec=codec, dataset=None if name is None else str(name))
    if trainer is None:
        kwargs = {"default_root_dir": str(out), **dict(trainer_kwargs or {})}
        callbacks = list(kwargs.get("callbacks") or [])
        if kwargs.get("enable_checkpointing", True) and not any(
            isinstance(cb, ModelCheckpoint) for cb in callbacks
        ):
            validates = kwargs.get("limit_val_batches", 1) not in (0, 0.0)
            callbacks.append(
                ModelCheckpoint(
                    dirpath=out / "checkpoints",
                    filename="epoch{epoch:03d}",
                    auto_insert_metric_name=False,
                    monitor="val/psnr" if validates else None,
                    mode="max",
                    save_top_k=1,
                    save_last=True,
                )
            )
        kwargs["callbacks"] = callbacks
        trainer = L.Trainer(**kwargs)
    resume = resume_checkpoint(out, c.resume, "INN training")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        log.info("best INN checkpoint: %s", best)
        trainer.validate(module, datamodule=datamodule, verbose=False)  # its metrics
    path = Path(c.export) if c.export else out / "inn.safetensors"
    export_inn(module, path, c.export_dtype, metrics=module.val_summary)
    log.info("exported the INN to %s", path)
    return path


def preflight_inn(v: RunConfig) -> None:
    """A given ``inn.checkpoint`` (``embedded`` or a file, not ``auto``) exists for this BCR and
    was trained at this image size (its codec's content is compared once the codec is known)."""
    value = v.inn.checkpoint if v.inn else None
    if value is None or str(value) == "auto":
        return
    path = resolve_inn_checkpoint(value, v.bcr, v.latent.image_size, v.inn)
    if path is not None:
        check_inn_checkpoint(path, {"bcr": format_ratio(v.bcr), "image_size": v.latent.image_size})


def run_inn(run: RunConfig, codec: Path) -> tuple[Path | None, torch.nn.Module | None]:
    """The INN of a restoration run on the codec file ``codec`` (:func:`run_codec`'s): its file
    (:func:`resolve_inn`; an ``auto`` one is trained only for a run that restores), checked
    against that codec and the test SNR, and its network (frozen, eval mode; loaded once per
    process, :mod:`singexp.reuse`) when a method samples."""
    needed = bool(run.methods) or run.inn is None or run.inn.checkpoint != "auto"
    path = resolve_inn(run, codec) if needed else None
    if path is None:
        return None, None
    check_inn_checkpoint(path, {**jscc_identity(codec), "snr_db": run.channel.snr_db})
    if not run.methods:
        return path, None
    network = reused(
        ("inn", file_identity(path)), lambda: load_inn(path).inn.eval().requires_grad_(False)
    )
    return path, network
