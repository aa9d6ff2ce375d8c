"""Restore your own images: :class:`SingPipeline` (a diffusers-style Python API) and the
``singexp restore`` command, a thin wrapper over it.

    from singexp.pipeline import SingPipeline

    pipe = SingPipeline.from_config(overrides=["+experiment=sing_inn"])
    out = pipe(["photo.png"], snr_db=-5.0)     # {"original", "deepjscc", "sing_zero", "sing_inn"}
    out["sing_inn"].shape                      # (1, 3, 32, 32), values in [-1, 1]
    pipe.restore_files(["photo.png"], "restored/")   # one PNG per method per image + grid.png

The pipeline composes the same Hydra config as the command line (``overrides`` are the same
strings), loads the codec, the operator, the INN and the diffusion prior once, and restores
exactly as the evaluation does (:class:`~singexp.modules.restoration.RestorationModule`): images
go in batches of ``dataset.batch_size`` through the codec at the SNR, with channel and sampler
noise from :func:`~singexp.modules.restoration.batch_generator` ``(seed, batch index, stream)``,
so the test set fed through the pipeline gives the evaluation's images.

Images are read with :func:`singexp.data.folder.load_image` (16-bit and alpha handled as for
image-folder data sets), the shorter side resized to ``dataset.image_size`` and centre-cropped
(32 px for the shipped embedded models).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from singexp.bcr import format_ratio, parse_ratio
from singexp.config import CONF_DIR, Validated, apply_quick, build, quote_group_overrides, validate
from singexp.errors import ConfigError, SingexpError
from singexp.modules.restoration import Restorer, batch_generator
from singexp.results import BASELINE, ORIGINAL

ImageInput = Tensor | str | Path | Sequence[str | Path]

#: where ``singexp restore`` writes without ``out=``: a run folder of its own per experiment
RESTORE_RUN_DIR = (
    "${paths.root}/${experiment_name}/restore/${now:%Y-%m-%d_%H-%M-%S}_${singexp.pid:}"
)
#: the tensors ``restore_files`` saves beside the PNGs (exact values, for comparisons)
TENSORS_FILE = "restored.pt"
GRID_FILE = "grid.png"


def compose_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> Any:
    """The config the command line composes for ``overrides`` (same groups, same quoting)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        return compose("config", overrides=quote_group_overrides(list(overrides)))


def _decode_error(path: Path, error: Exception) -> SingexpError:
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    return SingexpError(f"{path}: not a readable image ({why})")


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The image files of ``paths`` (files, or folders searched recursively), in order; a
    missing path, an empty folder or a file that does not decode is a one-line error."""
    from singexp.data.folder import decode, find_images

    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise SingexpError(f"{path}: no images in this folder (.png, .jpg, .bmp, .webp)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise SingexpError(f"{path}: no such file or folder")
    if not files:
        raise SingexpError("no images given: singexp restore PATH... (an image or a folder)")
    for path in files:
        try:
            decode(path, 1)
        except Exception as error:  # any file PIL cannot decode is the same user error
            raise _decode_error(path, error) from None
    return files


def load_images(paths: Sequence[str | Path], size: int, background: Any = None) -> Tensor:
    """(N, 3, size, size) in [-1, 1]: each file decoded (16-bit, alpha on ``background``),
    shorter side resized to ``size``, centre-cropped (:func:`singexp.data.folder.load_image`)."""
    from singexp.data.folder import WHITE, load_image

    colour = tuple(background) if background is not None else WHITE
    images = []
    for path in paths:
        try:
            images.append(load_image(Path(path), size, colour))
        except Exception as error:
            raise _decode_error(Path(path), error) from None
    return torch.stack(images)


def output_names(paths: Sequence[Path]) -> list[str]:
    """One file-name stem per input image: its own stem, numbered where two would clash."""
    names: list[str] = []
    for i, path in enumerate(paths):
        name = path.stem
        names.append(name if name not in names else f"{name}_{i}")
    return names


@dataclass
class _Stage:
    """What one (BCR, SNR) needs: the checked config, the codec and the restorers."""

    cfg: DictConfig
    v: Validated
    codec: Any
    restorers: dict[str, Restorer]
    networks: dict[str, torch.nn.Module] = field(default_factory=dict)


class SingPipeline:
    """DeepJSCC → channel → each configured restorer (SING-Zero, SING-INN, ...), on images.

    Build it with :meth:`from_config` (Hydra overrides, as on the command line) or
    :meth:`from_cfg` (an already composed config); call it on images.
    """

    def __init__(self, cfg: DictConfig, device: str | torch.device = "cpu") -> None:
        from singexp.tasks import method_configs

        self.cfg = cfg
        self.device = torch.device(device)
        self.methods = method_configs(cfg)  # checked before anything loads
        self._stages: dict[tuple[str, float | None], _Stage] = {}
        base = self._build_stage(cfg)
        self._stages[self._key(base.v.bcr, float(base.v.channel.snr_db))] = base
        self._base = base

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        overrides: Sequence[str] = (),
        *,
        config_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> SingPipeline:
        """Compose the command line's config with ``overrides`` (e.g.
        ``["+experiment=sing_inn", "channel.snr_db=-5"]``; ``quick=true`` applies) and load
        every model once."""
        cfg = compose_config(overrides, config_dir)
        # outside a Hydra run there is no run folder: auto-trained models resolve without one
        OmegaConf.update(cfg, "paths.output_dir", str(Path(str(cfg.paths.root)).resolve()))
        return cls.from_cfg(cfg, device=device)

    @classmethod
    def from_cfg(cls, cfg: DictConfig, device: str | torch.device = "cpu") -> SingPipeline:
        """From a composed config (``quick=true`` applied here, as :func:`singexp.tasks.run`
        does)."""
        apply_quick(cfg)
        return cls(cfg, device=device)

    @property
    def image_size(self) -> int:
        return int(self._base.v.latent.image_size)

    @property
    def snr_db(self) -> float:
        return float(self._base.v.channel.snr_db)

    @property
    def bcr(self) -> str:
        return format_ratio(self._base.v.bcr)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.dataset.batch_size)

    def _needs_snr(self) -> bool:
        """Whether restorers depend on the SNR beyond their input (σ_y measured at it)."""
        from singexp.samplers.sing_zero import SIGMA_Y_AUTO

        return any(
            getattr(m.config, "sigma_y", None) == SIGMA_Y_AUTO for m in self.methods.values()
        )

    def _key(self, bcr: Any, snr_db: float) -> tuple[str, float | None]:
        return format_ratio(parse_ratio(bcr)), (snr_db if self._needs_snr() else None)

    def _build_stage(self, cfg: DictConfig) -> _Stage:
        """Codec, operator, INN, prior and restorers for ``cfg``, as ``restore_task`` builds
        them (the same checks, the same one-line errors)."""
        from singexp.modules.inn import check_inn_checkpoint, jscc_identity
        from singexp.modules.jscc import check_checkpoint, load_codec
        from singexp.tasks import (
            build_restorers,
            measured_sigma_y,
            require_codec,
            resolve_inn,
            resolve_prior_source,
            task_operator,
        )

        v = validate(cfg)
        methods = self.methods
        require_codec(cfg, v, "restoration")
        identity = {"bcr": format_ratio(v.bcr), "image_size": v.latent.image_size}
        check_checkpoint(v.jscc.checkpoint, identity)
        codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db)
        codec = codec.eval().requires_grad_(False)
        data: list[Any] = []  # the data module, built once if the operator or σ_y needs it

        def datamodule() -> Any:
            if not data:
                data.append(build(cfg.dataset))
                data[0].setup()
            return data[0]

        operator = task_operator(cfg, v, codec, lambda: datamodule().train_dataset)
        needs_inn = bool(methods) or str(cfg.inn.checkpoint) != "auto"
        inn_path = resolve_inn(cfg, v) if needs_inn else None
        prior_source = resolve_prior_source(cfg) if methods else None
        if inn_path is not None:
            expected = {**jscc_identity(v.jscc.checkpoint), "snr_db": v.channel.snr_db}
            check_inn_checkpoint(inn_path, expected)
        sigma_y = None
        if self._needs_snr():
            sigma_y = measured_sigma_y(cfg, v, methods, codec, operator, datamodule())
        restorers, networks = build_restorers(
            cfg, v, methods, operator, inn_path, prior_source, sigma_y, codec
        )
        codec.to(self.device)
        for network in networks.values():
            network.to(self.device)
        return _Stage(cfg, v, codec, restorers, networks)

    def _stage(self, bcr: Any, snr_db: float) -> _Stage:
        """The stage for (``bcr``, ``snr_db``), built once: another BCR needs another codec
        (and INN); the SNR matters only to ``sigma_y=auto``."""
        key = self._key(bcr if bcr is not None else self._base.v.bcr, snr_db)
        if key not in self._stages:
            cfg = copy.deepcopy(self.cfg)
            ratio = parse_ratio(key[0], "bcr")
            OmegaConf.update(cfg, "bcr.ratio", format_ratio(ratio), merge=False)
            OmegaConf.update(cfg, "bcr.name", f"{ratio.numerator}_{ratio.denominator}", merge=False)
            OmegaConf.update(cfg, "channel.snr_db", float(snr_db), merge=False)
            self._stages[key] = self._build_stage(cfg)
        return self._stages[key]

    def to(self, device: str | torch.device) -> SingPipeline:
        """Move every loaded model to ``device``; later calls run there."""
        self.device = torch.device(device)
        for stage in self._stages.values():
            stage.codec.to(self.device)
            for network in stage.networks.values():
                network.to(self.device)
        return self

    # ---- restoration ----------------------------------------------------------------------
    def images(self, images: ImageInput) -> Tensor:
        """``images`` as an (N, 3, S, S) batch in [-1, 1] at S = ``dataset.image_size``:
        a tensor (N, 3, S, S) or (3, S, S) in [-1, 1], or image files (read and resized)."""
        if isinstance(images, Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            size = self.image_size
            if x.dim() != 4 or tuple(x.shape[-2:]) != (size, size):
                raise SingexpError(
                    f"images: expected a (N, C, {size}, {size}) tensor in [-1, 1] "
                    f"(dataset.image_size {size}), got shape {tuple(images.shape)}; pass image "
                    "files to have them resized"
                )
            return x.float()
        paths = [images] if isinstance(images, str | Path) else list(images)
        return load_images(image_files(paths), self.image_size, self._background())

    def _background(self) -> Any:
        colour = self.cfg.dataset.get("alpha_background")
        return None if colour is None else list(colour)

    def __call__(
        self,
        images: ImageInput,
        snr_db: float | None = None,
        bcr: Any = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """Send ``images`` through DeepJSCC at ``snr_db`` (default ``channel.snr_db``) and the
        ``bcr`` (default the config's; a ratio such as ``"1/192"``), then restore with every
        configured method, seeded by ``seed`` (default ``seed``) as the evaluation is.

        Returns method → (N, 3, S, S) tensor in [-1, 1] on the CPU, in input order:
        ``original`` (the input at the model's size), ``deepjscc`` (x̂), then each method.
        """
        snr = self.snr_db if snr_db is None else float(snr_db)
        seed = self.seed if seed is None else int(seed)
        stage = self._stage(bcr, snr)
        x = self.images(images).to(self.device)
        outputs: dict[str, list[Tensor]] = {ORIGINAL: [], BASELINE: []}
        outputs.update({name: [] for name in stage.restorers})
        with torch.no_grad():
            for batch_idx, start in enumerate(range(0, x.shape[0], self.batch_size)):
                batch = x[start : start + self.batch_size]
                device = batch.device
                snrs = torch.full((batch.shape[0],), snr, device=device)
                channel = batch_generator(seed, batch_idx, 0, device)
                x_hat = stage.codec.codec(batch, snrs, channel).clamp(-1, 1)
                outputs[ORIGINAL].append(batch.cpu())
                outputs[BASELINE].append(x_hat.cpu())
                for name, restorer in stage.restorers.items():
                    sampler = batch_generator(seed, batch_idx, 1, device)
                    outputs[name].append(restorer(x_hat, snrs, sampler).clamp(-1, 1).cpu())
        return {name: torch.cat(parts) for name, parts in outputs.items()}

    def restore_files(
        self,
        paths: Sequence[str | Path],
        out_dir: str | Path,
        *,
        snr_db: float | None = None,
        bcr: Any = None,
        seed: int | None = None,
        grid_images: int | None = None,
    ) -> dict[str, Any]:
        """Restore image files (or folders of them) into ``out_dir``: ``<stem>_<method>.png``
        per image and method (``original`` = the input at the model's size), ``grid.png`` (rows
        original | DeepJSCC | each method; the first ``grid_images``, default
        ``evaluate.grid_images``, images) and ``restored.pt`` (the exact tensors, the files,
        SNR, BCR and seed). Returns what was written and the restored tensors."""
        from PIL import Image

        from singexp.visualize import save_comparison_grid, to_uint8

        files = image_files(paths)
        snr = self.snr_db if snr_db is None else float(snr_db)
        seed = self.seed if seed is None else int(seed)
        ratio = format_ratio(parse_ratio(bcr if bcr is not None else self.bcr, "bcr"))
        outputs = self(load_images(files, self.image_size, self._background()), snr, ratio, seed)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {}
        for name, images in outputs.items():
            for stem, array in zip(output_names(files), to_uint8(images), strict=True):
                path = out / f"{stem}_{name}.png"
                Image.fromarray(array).save(path)
                written.setdefault(name, []).append(str(path))
        if grid_images is None:
            grid_images = int(OmegaConf.select(self.cfg, "evaluate.grid_images", default=8))
        title = f"{self.cfg.channel.name} SNR {snr:g} dB · BCR {ratio} · seed {seed}"
        grid = save_comparison_grid(
            {name: images[:grid_images] for name, images in outputs.items()}, out / GRID_FILE, title
        )
        record = {
            "files": [str(f) for f in files],
            "snr_db": snr,
            "bcr": ratio,
            "seed": seed,
            "images": outputs,
        }
        torch.save(record, out / TENSORS_FILE)
        return {
            "images": written,
            "grid": str(grid),
            "tensors": str(out / TENSORS_FILE),
            "outputs": outputs,
            "files": files,
        }


# ---- the command line: singexp restore PATH... [overrides] [out=DIR] ------------------------
#: Hydra's flags that take a value (``--cfg job``): not image paths
_VALUE_FLAGS = frozenset({"--cfg", "-c", "--package", "-p", "--info", "-i"})


def split_restore_args(args: Sequence[str]) -> tuple[list[str], list[str], list[str], str | None]:
    """(image paths, Hydra flags, overrides, ``out=`` folder or None) of ``singexp restore``."""
    paths: list[str] = []
    flags: list[str] = []
    overrides: list[str] = []
    out: str | None = None
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--multirun"):
            raise ConfigError("restore", "restores one set of images; it takes no -m/--multirun")
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _VALUE_FLAGS and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        elif arg.startswith("out="):
            out = arg.partition("=")[2]
            if not out:
                raise ConfigError("out", "must name a folder, e.g. out=restored")
        elif "=" in arg and not Path(arg).exists():
            overrides.append(arg)
        else:
            paths.append(arg)
        i += 1
    return paths, flags, overrides, out


def _fail(error: Exception) -> None:
    print(f"singexp: error: {error}", file=sys.stderr)
    sys.exit(2)


def print_summary(result: dict[str, Any], out: Path) -> None:
    """One line per image: PSNR of DeepJSCC and each method against the resized original."""
    from singexp.metrics import psnr

    outputs = result["outputs"]
    original = outputs[ORIGINAL]
    names = output_names(result["files"])
    for i, name in enumerate(names):
        parts = [
            f"{method} {float(psnr(images[i : i + 1], original[i : i + 1])):.2f} dB"
            for method, images in outputs.items()
            if method != ORIGINAL
        ]
        print(f"{name}: PSNR {', '.join(parts)}")
    print(f"restored images, {GRID_FILE} and {TENSORS_FILE} written to {out}")


def restore_cli(args: Sequence[str]) -> None:
    """``singexp restore PATH... [group=option ...] [key=value ...] [out=DIR]``: restore image
    files (or folders) with the methods of the config (e.g. ``+experiment=sing_inn``) into the
    run folder (``outputs/<experiment_name>/restore/<time>``) or ``out=DIR``."""
    import hydra

    from singexp.config import check_group_overrides, check_override_keys

    try:
        paths, flags, overrides, out = split_restore_args(args)
        help_only = any(
            f in ("-h", "--help", "--hydra-help", "--cfg", "-c", "--info", "-i") for f in flags
        )
        files = [] if help_only else image_files(paths)  # first: the quickest to check
        overrides = quote_group_overrides(overrides)
        check_group_overrides(overrides)
        check_override_keys(overrides)
    except SingexpError as error:
        _fail(error)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={out}" if out else f"hydra.run.dir={RESTORE_RUN_DIR}")
    if not any(o.startswith("hydra.job.name=") for o in overrides):
        overrides.append("hydra.job.name=restore")  # the run folder's log: restore.log

    def job(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            target = Path(out) if out else Path(HydraConfig.get().runtime.output_dir)
            pipe = SingPipeline.from_cfg(cfg)
            size = pipe.image_size
            print(
                f"images are resized (shorter side) and centre-cropped to {size}×{size} px "
                f"(dataset.image_size; the shipped embedded models are 32 px)"
            )
            result = pipe.restore_files(files, target)
            print_summary(result, target)
        except SingexpError as error:
            _fail(error)

    sys.argv[1:] = flags + overrides
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(job)()
