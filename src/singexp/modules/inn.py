"""SING-INN's network, trained on DeepJSCC pairs (paper: SING-INN): loss, checkpoints, export.

Training loss (the paper's Eq. 16; its exact weights are **open**, so λs come from
``conf/inn/default.yaml``), per batch of pairs (x, x̂ = DeepJSCC(x, snr), snr):

    (c, d) = f(x; snr),  c_y = coarse(x̂) = A x̂  (A: s×s average pooling, s = inn.scale)
    loss_c = mean ‖c − c_y‖²                    c matches the DeepJSCC output's coarse part
    loss_x = mean ‖f⁻¹(c_y, d; snr) − x‖²       the measurement's c with x's d gives back x
    loss_d = mean ‖d‖²                           d small (= a unit Gaussian NLL on d up to ½
                                                 and a constant)
    loss   = λ_c loss_c + λ_x loss_x + λ_d loss_d

Each mean is over the elements of its tensor. ``coarse`` is :meth:`ConditionalINN.coarse`,
the same A that SING-INN's guidance uses for c_y (samplers/sing_inn.py).

A checkpoint records the DeepJSCC it was trained on (``jscc``: path, a fingerprint of its
weights and its identity hparams bcr, image_size, channel, downsample) and the training SNR
range; :func:`check_inn_checkpoint` refuses an INN trained for another BCR or DeepJSCC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from singexp.bcr import parse_ratio
from singexp.data.pairs import freeze, make_pairs
from singexp.errors import ConfigError, missing_file
from singexp.faults import atomic_path, resume_checkpoint
from singexp.locations import ASSETS_DIR
from singexp.metrics import psnr_from_mse
from singexp.modules.jscc import DeepJSCCModule, load_codec, mismatched_tensors
from singexp.modules.jscc import read_hparams as read_jscc_hparams
from singexp.nn.inn import ConditionalINN, INNArchitecture
from singexp.operators import scale_for_bcr
from singexp.schema import check_schema
from singexp.weights import check_finite

log = logging.getLogger("singexp")

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


# ---- config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class INNHParams(INNArchitecture):
    """What an INN checkpoint records (besides its DeepJSCC and data set): the architecture
    (:class:`~singexp.nn.inn.INNArchitecture`, its keys and defaults) and the training keys.
    ``train_snr_range`` is recorded as ``train_snr`` (:data:`RECORDED_AS`)."""

    lambda_c: float = 1.0
    lambda_x: float = 1.0
    lambda_d: float = 0.01
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_snr_range: tuple[float, float] = (-5.0, 5.0)
    val_snr_db: tuple[float, ...] | None = None

    def recorded(self) -> dict[str, Any]:
        """The hyper-parameters as a checkpoint records them (flat, under their recorded names)."""
        return {
            RECORDED_AS.get(f.name, f.name): getattr(self, f.name)
            for f in dataclasses.fields(INNHParams)
        }

    def check(self) -> None:
        """Raise a one-line ConfigError naming the first ``inn.*`` key out of range."""
        problems = self.problems()
        if not self.lr > 0:
            problems.append(("lr", f"must be > 0, got {self.lr}"))
        for key in ("lambda_c", "lambda_x", "lambda_d", "weight_decay"):
            if getattr(self, key) < 0:
                problems.append((key, f"must be ≥ 0, got {getattr(self, key)}"))
        if self.lambda_c == self.lambda_x == self.lambda_d == 0:
            problems.append(("lambda_c", "all loss weights are 0; set λ_c, λ_x or λ_d > 0"))
        low, high = self.train_snr_range
        if low > high:
            problems.append(
                ("train_snr_range", f"must be [low, high] with low ≤ high, got {[low, high]}")
            )
        if self.val_snr_db is not None and not self.val_snr_db:
            problems.append(("val_snr_db", "must be null or a non-empty list of SNRs in dB"))
        if problems:
            key, why = problems[0]
            raise ConfigError(f"inn.{key}", why)


#: hyper-parameters an INN checkpoint records under another name than their ``inn.*`` key
RECORDED_AS = {"train_snr_range": "train_snr"}
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


def inn_hparams(base: INNHParams | None = None, **recorded: Any) -> INNHParams:
    """``base`` (default: the defaults) with the ``recorded`` hyper-parameters (a checkpoint's,
    under their recorded names) replacing some, checked like the config."""
    values = {f.name: getattr(base or INNHParams(), f.name) for f in dataclasses.fields(INNHParams)}
    names = {recorded_name: name for name, recorded_name in RECORDED_AS.items()}
    values.update({names.get(key, key): value for key, value in recorded.items()})
    hparams = check_schema("inn", values, INNHParams)
    hparams.check()
    return hparams


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
        hparams = read_jscc_hparams(codec)
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


# ---- the LightningModule -------------------------------------------------------------------
class INNModule(L.LightningModule):
    """Trains :class:`ConditionalINN` on pairs made on the fly from a frozen DeepJSCC.

    ``codec``: the trained DeepJSCCModule (not saved in checkpoints; loaded lazily from
    ``jscc['checkpoint']`` when absent). ``jscc``: its identity (:func:`jscc_identity`;
    computed from ``codec`` when not given). Batches are image tensors (B, 3, H, W).
    Validation: for each SNR of ``val_snr_db`` (default: low, middle and high of
    ``train_snr``) the MSE/PSNR of c vs coarse(x̂) and the PSNR of f⁻¹(coarse(x̂), d) vs x;
    ``val/psnr`` is the mean c-PSNR over those SNRs (what checkpointing monitors).
    """

    def __init__(
        self,
        config: INNHParams | None = None,
        /,
        *,
        jscc: dict[str, Any] | None = None,
        codec: DeepJSCCModule | None = None,
        dataset: str | None = None,
        **recorded: Any,
    ) -> None:
        # config: the architecture and training keys (an INNConfig will do); ``recorded``
        # replaces some, under the names a checkpoint records (scale=8, train_snr=(-5, 5)), so
        # a checkpoint's hyper-parameters rebuild the module. dataset: name of the data set its
        # pairs came from (recorded for the restoration run's trained-elsewhere warning)
        super().__init__()
        if jscc is None and codec is not None:
            jscc = jscc_identity(codec)
        self.config = inn_hparams(config, **recorded)
        self.save_hyperparameters({"jscc": jscc, **self.config.recorded(), "dataset": dataset})
        self.inn = ConditionalINN(self.config)
        object.__setattr__(self, "_codec", None if codec is None else freeze(codec))
        self._val: dict[float, dict[str, list[Tensor]]] = {}
        self.val_summary: dict[str, float] = {}

    # --- the frozen codec and pairs ----------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The frozen DeepJSCC network (loaded from the recorded checkpoint when needed)."""
        if self._codec is None:
            jscc = self.hparams.get("jscc") or {}
            path = jscc.get("checkpoint")
            if not path or not Path(path).is_file():
                raise ConfigError(
                    "jscc.checkpoint",
                    f"this INN needs its DeepJSCC to make training pairs, but {path!r} is not a "
                    "file; pass the codec (codec=...) or set jscc.checkpoint",
                )
            module = load_codec(path)
            if jscc.get("fingerprint") and codec_fingerprint(module) != jscc["fingerprint"]:
                raise ConfigError(
                    "jscc.checkpoint", f"{path} is not the DeepJSCC this INN was trained on"
                )
            object.__setattr__(self, "_codec", freeze(module))
        return self._codec

    def val_snrs(self) -> list[float]:
        if self.config.val_snr_db:
            return list(self.config.val_snr_db)
        low, high = self.config.train_snr_range
        return sorted({low, (low + high) / 2.0, high})

    # --- loss ----------------------------------------------------------------------------------
    def losses(self, x: Tensor, x_hat: Tensor, snr_db: Tensor) -> dict[str, Tensor]:
        """The loss terms of the module docstring on one batch of pairs."""
        h = self.config
        c, d = self.inn(x, snr_db)
        c_y = self.inn.coarse(x_hat)
        loss_c = F.mse_loss(c, c_y)
        loss_x = F.mse_loss(self.inn.inverse(c_y, d, snr_db), x)
        loss_d = d.pow(2).mean()
        loss = h.lambda_c * loss_c + h.lambda_x * loss_x + h.lambda_d * loss_d
        return {"loss": loss, "loss_c": loss_c, "loss_x": loss_x, "loss_d": loss_d}

    def forward(self, x: Tensor, snr_db: Tensor | float) -> tuple[Tensor, Tensor]:
        return self.inn(x, snr_db)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        pairs = make_pairs(self.codec, batch, self.config.train_snr_range)
        losses = self.losses(*pairs)
        for key, value in losses.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=batch.shape[0])
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.inn.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )

    # --- evaluation: c vs coarse(x̂) per SNR, seeded channel noise -----------------------------
    def _eval_step(self, batch: Tensor, batch_idx: int) -> None:
        for k, snr in enumerate(self.val_snrs()):
            generator = torch.Generator(device=batch.device)
            generator.manual_seed(1_000_003 * batch_idx + k)
            x, x_hat, snr_t = make_pairs(self.codec, batch, snr, generator)
            c, d = self.inn(x, snr_t)
            c_y = self.inn.coarse(x_hat)
            x_rec = self.inn.inverse(c_y, d, snr_t)
            stats = {
                "mse_c": (c - c_y).pow(2).mean(dim=(1, 2, 3)),
                "mse_x": (x_rec - x).pow(2).mean(dim=(1, 2, 3)),
                "mse_jscc": (x_hat - x).pow(2).mean(dim=(1, 2, 3)),
                "loss_d": d.pow(2).mean(dim=(1, 2, 3)),
            }
            slot = self._val.setdefault(snr, {})
            for key, value in stats.items():
                slot.setdefault(key, []).append(value.detach().cpu())

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        summary: dict[str, float] = {}
        psnr_c = []
        for snr, slot in sorted(self._val.items()):
            values = {key: torch.cat(parts) for key, parts in slot.items()}
            tag = f"snr{snr:g}"
            summary[f"mse_c_{tag}"] = float(values["mse_c"].mean())
            for name in ("c", "x", "jscc"):
                psnr = psnr_from_mse(values[f"mse_{name}"])
                summary[f"psnr_{name}_{tag}"] = float(psnr.mean())
            summary[f"loss_d_{tag}"] = float(values["loss_d"].mean())
            psnr_c.append(summary[f"psnr_c_{tag}"])
        if psnr_c:
            summary["psnr"] = sum(psnr_c) / len(psnr_c)
        for key, value in summary.items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "psnr")
        self._val = {}
        return summary

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    @torch.no_grad()
    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_summary = self._eval_epoch_end("val")
        else:
            self._val = {}

    def on_test_epoch_start(self) -> None:
        self._val = {}

    @torch.no_grad()
    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.val_summary = self._eval_epoch_end("test")


# ---- checkpoints, export, identity checks --------------------------------------------------


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


def json_ready(value: Any) -> Any:
    """A JSON-ready copy of a config value: mappings with string keys, lists, scalars."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


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

    The DeepJSCC is not loaded (only needed to train or validate; see ``INNModule.codec``).
    """
    path = Path(path)
    hparams = read_inn_hparams(path)
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
