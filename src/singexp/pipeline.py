"""Restore your own images: :class:`SingPipeline` (a diffusers-style Python API) and the
``singexp restore`` command (:mod:`singexp.restore_cli`), a thin wrapper over it.

    from singexp.pipeline import SingPipeline

    pipe = SingPipeline.from_config(overrides=["+experiment=sing_inn"])
    out = pipe(["photo.png"], snr_db=-5.0)     # {"original", "deepjscc", "sing_zero", "sing_inn"}
    out["sing_inn"].shape                      # (1, 3, 32, 32), values in [-1, 1]
    pipe.restore_files(["photo.png"], "restored/")   # one PNG per method per image + grid.png

The pipeline composes the same Hydra config as the command line (``overrides`` are the same
strings), validates it into a :class:`~singexp.config.RunConfig`, builds the codec, the
operator, the INN and the diffusion prior once (:func:`singexp.assembly.build_restoration`, as
the evaluation task does) and restores exactly as the evaluation does
(:class:`~singexp.modules.restoration.RestorationModule`): images go in batches of
``dataset.batch_size`` through the codec at the SNR, with channel and sampler noise from
:func:`~singexp.modules.restoration.batch_generator` ``(seed, batch index, stream)``, so the test
set fed through the pipeline gives the evaluation's images.

Images are read with :func:`singexp.data.folder.load_image` (16-bit and alpha handled as for
image-folder data sets), the shorter side resized to ``dataset.image_size`` and centre-cropped
(32 px for the shipped embedded models).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from singexp.assembly import Restoration, build_restoration
from singexp.bcr import format_ratio, parse_ratio
from singexp.cli import compose_config
from singexp.config import RunConfig, validate
from singexp.data.base import indexed_data
from singexp.errors import SingexpError
from singexp.modules.restoration import batch_generator
from singexp.points import BASELINE, ORIGINAL
from singexp.preflight import preflight
from singexp.quick import apply_quick
from singexp.state import RunState

ImageInput = Tensor | str | Path | Sequence[str | Path]

#: the tensors ``restore_files`` saves beside the PNGs (exact values, for comparisons)
TENSORS_FILE = "restored.pt"
GRID_FILE = "grid.png"


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


class SingPipeline:
    """DeepJSCC → channel → each configured restorer (SING-Zero, SING-INN, ...), on images.

    Build it with :meth:`from_config` (Hydra overrides, as on the command line) or from a
    validated :class:`~singexp.config.RunConfig`; call it on images.
    """

    def __init__(self, run: RunConfig, device: str | torch.device = "cpu") -> None:
        self.run = run
        self.device = torch.device(device)
        self.methods = run.methods  # checked by validate, before anything loads
        #: what the run learns on the way (``run`` is frozen): warnings, the indexed data
        self.state = RunState()
        self._stages: dict[tuple[str, float | None], Restoration] = {}
        base = self._build_stage(run, self.state)
        self._stages[self._key(run.bcr, float(run.channel.snr_db))] = base
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
        cfg = compose_config(list(overrides), config_dir)
        # outside a Hydra run there is no run folder: auto-trained models resolve without one
        OmegaConf.update(cfg, "paths.output_dir", str(Path(str(cfg.paths.root)).resolve()))
        apply_quick(cfg, overrides=list(overrides))  # as singexp.tasks.run does
        return cls(validate(cfg), device=device)

    @property
    def image_size(self) -> int:
        return int(self.run.latent.image_size)

    @property
    def snr_db(self) -> float:
        return float(self.run.channel.snr_db)

    @property
    def bcr(self) -> str:
        return format_ratio(self.run.bcr)

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def batch_size(self) -> int:
        return self.run.data.batch_size

    def _needs_snr(self) -> bool:
        """Whether restorers depend on the SNR beyond their input (σ_y measured at it)."""
        from singexp.samplers.build import needs_sigma_y

        return needs_sigma_y(self.methods)

    def _key(self, bcr: Any, snr_db: float) -> tuple[str, float | None]:
        return format_ratio(parse_ratio(bcr)), (snr_db if self._needs_snr() else None)

    def _datamodule(self) -> Any:
        """The data module, built once if an operator or σ_y needs it (every stage shares it)."""
        return indexed_data(self.run, self.state)

    def _build_stage(self, run: RunConfig, state: RunState) -> Restoration:
        """Codec, operator, INN, prior and restorers for ``run``, as the evaluation task builds
        them (:func:`~singexp.preflight.preflight`, then
        :func:`~singexp.assembly.build_restoration`: the same checks and errors)."""
        preflight(run, state)
        stage = build_restoration(run, self._datamodule)
        stage.codec.eval().requires_grad_(False).to(self.device)
        for network in stage.networks.values():
            network.to(self.device)
        return stage

    def _stage(self, bcr: Any, snr_db: float) -> Restoration:
        """The stage for (``bcr``, ``snr_db``), built once: another BCR needs another codec
        (and INN); the SNR matters only to ``sigma_y=auto``."""
        key = self._key(bcr if bcr is not None else self.run.bcr, snr_db)
        if key not in self._stages:
            ratio = parse_ratio(key[0], "bcr")
            run = self.run.with_settings(
                {
                    "bcr.ratio": format_ratio(ratio),
                    "bcr.name": f"{ratio.numerator}_{ratio.denominator}",
                    "channel.snr_db": float(snr_db),
                },
                reresolve=True,  # keys that follow the BCR (inn.scale, ...) follow it here too
            )
            self._stages[key] = self._build_stage(run, RunState())
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
        colour = self.run.data.spec.get("alpha_background")
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
            grid_images = int(self.run.evaluate.get("grid_images", 8))
        title = f"{self.run.channel.name} SNR {snr:g} dB · BCR {ratio} · seed {seed}"
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
        from singexp.faults import atomic_path

        with atomic_path(out / TENSORS_FILE) as tmp:
            torch.save(record, tmp)
        return {
            "images": written,
            "grid": str(grid),
            "tensors": str(out / TENSORS_FILE),
            "outputs": outputs,
            "files": files,
        }
