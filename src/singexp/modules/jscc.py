"""DeepJSCC LightningModule: MSE training over the channel, metrics at the test SNR.

Checkpoints carry what the model was trained for (BCR, image size, channel, latent shape);
:func:`check_checkpoint` refuses a checkpoint whose training disagrees with the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from singexp.channel import SNRSampler, build_channel
from singexp.errors import ConfigError
from singexp.faults import atomic_path
from singexp.metrics import ImageMetrics
from singexp.nn.jscc import DeepJSCC
from singexp.weights import check_finite

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


class DeepJSCCModule(L.LightningModule):
    """Trains x → DeepJSCC(x, snr) → x̂ with MSE; validates and tests at ``test_snr_db``."""

    def __init__(
        self,
        *,
        bcr: str,
        image_size: int,
        latent_channels: int,
        channel: str = "awgn",
        downsample: int = 16,
        width: int = 64,
        snr_adaptive: bool = True,
        train_snr: tuple[float, float] = (0.0, 0.0),
        test_snr_db: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        metrics: dict[str, Any] | None = None,
        dataset: str | None = None,
    ) -> None:
        # dataset: the name of the data set it was trained on (recorded, never checked: a
        # restoration run on another data set warns)
        super().__init__()
        self.save_hyperparameters()
        self.codec = DeepJSCC(
            latent_channels, build_channel(channel), downsample, width, snr_adaptive
        )
        self.train_snr = SNRSampler(*train_snr)
        self.test_snr_db = test_snr_db
        self.metrics = ImageMetrics.from_config(metrics or {})
        self._per_image: dict[str, list[Tensor]] = {}
        self._sets: tuple[list[Tensor], list[Tensor]] = ([], [])
        self.test_summary: dict[str, Any] = {}

    def forward(
        self, x: Tensor, snr_db: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        if not isinstance(snr_db, Tensor):
            snr_db = torch.full((x.shape[0],), float(snr_db), device=x.device)
        return self.codec(x, snr_db, generator)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        snr = self.train_snr.sample(batch.shape[0], batch.device)
        loss = F.mse_loss(self.codec(batch, snr), batch)
        self.log("train/mse", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams.lr,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
            weight_decay=self.hparams.weight_decay,  # type: ignore[attr-defined]  # Lightning's hparams is an AttributeDict typed as a MutableMapping
        )

    # --- evaluation: per-image metrics collected over the epoch, set-level metrics at its end ---
    def _eval_step(self, batch: Tensor) -> None:
        recon = self(batch, self.test_snr_db).clamp(-1, 1)
        self.metrics.to(batch.device)
        for key, value in self.metrics.per_image(recon, batch).items():
            self._per_image.setdefault(key, []).append(value.detach().cpu())
        self._sets[0].append(recon.detach().cpu())
        self._sets[1].append(batch.detach().cpu())

    def _eval_epoch_end(self, stage: str) -> dict[str, Any]:
        summary = self.metrics.summarize(self._per_image)
        if self._sets[0]:
            summary.update(
                self.metrics.set_level(torch.cat(self._sets[0]), torch.cat(self._sets[1]))
            )
        for key, value in summary.items():
            if isinstance(value, int | float):
                self.log(f"{stage}/{key}", float(value), prog_bar=key == "psnr")
        self._per_image, self._sets = {}, ([], [])
        return summary

    def on_validation_epoch_start(self) -> None:
        self._per_image, self._sets = {}, ([], [])

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._per_image, self._sets = {}, ([], [])

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self.test_summary = self._eval_epoch_end("test")


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


#: how far (dB) outside its training SNR range a codec may be tested without a warning
SNR_MARGIN_DB = 5.0


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
