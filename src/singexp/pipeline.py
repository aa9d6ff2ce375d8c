"""Restore your own images: :class:`SingPipeline` (a diffusers-style Python API) and the
``singexp restore`` command (:mod:`singexp.restore_cli`), a thin wrapper over it.

    from singexp.pipeline import SingPipeline

    pipe = SingPipeline.from_config(overrides=["+experiment=sing_inn"])
    out = pipe(["photo.png"], snr_db=-5.0)   # SingPipelineOutput
    out.images["sing_inn"].shape             # (1, 3, 32, 32) in [-1, 1]; out["sing_inn"] too
    out.ran["sing_inn"]                      # what ran (metrics.json's ``samplers`` record)
    pipe.save_pretrained("my_pipeline")      # every component, offline-loadable
    pipe = SingPipeline.from_pretrained("my_pipeline")
    pipe.restore_files(["photo.png"], "restored/")   # one PNG per method per image + grid.png

The constructor takes the objects themselves, as a diffusers pipeline does: the DeepJSCC codec
(:class:`~singexp.modules.jscc.DeepJSCCModule`), the prior UNet, a diffusers scheduler (its noise
schedule; each method gets its own copy of its kind and spacing), the INN, the operator A and
the methods (name → :class:`~singexp.samplers.registry.Method` or a sampler config node).
:meth:`SingPipeline.from_config` composes the command line's Hydra config (``overrides`` are the
same strings), builds those objects as the evaluation task does
(:func:`singexp.assembly.build_restoration`: the same checks, ``auto`` models, σ_y) and calls the
constructor. Restoration is the evaluation's own pass (:func:`singexp.evaluation.evaluate_batch`):
images go in batches of ``batch_size`` through the codec at the SNR, with channel and sampler
noise seeded by ``(seed, batch index, stream)``, so the test set fed through the pipeline gives
the evaluation's images.

Threads: importing this module sets the OpenMP wait policy the command line sets
(:func:`singexp.threads.set_wait_policy`) when torch is not imported yet, and the constructor
applies the thread count (:func:`singexp.threads.apply_thread_policy`); torch imported first is
said in one logged line (the policy cannot take effect then).

Images are read with :func:`singexp.data.folder.load_image` (16-bit and alpha handled as for
image-folder data sets), the shorter side resized to the models' image size and centre-cropped
(32 px for the shipped embedded models). Image files of another data set than the models were
trained on get a one-line out-of-distribution notice, and a second when DeepJSCC's own output is
below the trivial baseline (the mean training image) on an image
(:attr:`SingPipelineOutput.notices`).

One concern, one module (over 600 lines): the pipeline class with its constructors
(``from_config``, ``from_run``, ``from_pretrained``), its persistence (``save_pretrained``) and
its output, as a diffusers pipeline keeps them together.
"""

from __future__ import annotations

import sys

from singexp import threads as _threads

# before torch loads (libgomp reads the wait policy once, when it loads): as the command line
WAIT_POLICY_IN_EFFECT: bool = "torch" not in sys.modules and _threads.set_wait_policy()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from singexp.bcr import format_ratio, parse_ratio  # noqa: E402
from singexp.config import RunConfig, validate  # noqa: E402
from singexp.errors import SingexpError  # noqa: E402
from singexp.evaluation import evaluate_batch  # noqa: E402
from singexp.metrics import psnr  # noqa: E402
from singexp.points import BASELINE, ORIGINAL, json_ready  # noqa: E402
from singexp.samplers.registry import Method, check_method  # noqa: E402
from singexp.state import RunState  # noqa: E402

log = logging.getLogger("singexp")

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


@dataclass
class SingPipelineOutput(Mapping[str, Tensor]):
    """What :class:`SingPipeline` returns: ``images`` (method → (N, 3, S, S) in [-1, 1] on the
    CPU, in input order: ``original``, ``deepjscc``, then each method), ``ran`` (what each method
    ran, as metrics.json's ``samplers`` records it), the point restored at and the notices said
    (out-of-distribution, below the trivial baseline). Reads as the ``images`` mapping too:
    ``out["sing_inn"]``, ``list(out)``, ``out.items()``."""

    images: dict[str, Tensor]
    ran: dict[str, dict[str, Any]] = field(default_factory=dict)
    snr_db: float = 0.0
    bcr: str = ""
    seed: int = 0
    notices: list[str] = field(default_factory=list)
    #: wall seconds per image of each method (``deepjscc``: the codec; a method: its restorer)
    seconds: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.images[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class _Stage:
    """The restorers of one (BCR, SNR): the codec, the restorers, what they share."""

    codec: Any
    operator: Any
    restorers: dict[str, Any]
    networks: dict[str, torch.nn.Module]
    sigma_y: float | None
    ran: dict[str, dict[str, Any]]


#: save_pretrained's files (``folder/...``)
PIPELINE_FILE = "pipeline.json"
CODEC_FILE = "codec.safetensors"
INN_FILE = "inn.safetensors"
MEAN_IMAGE_FILE = "mean_image.safetensors"
PRIOR_DIR = "prior"
SCHEDULER_DIR = "scheduler"

_TOO_LATE_SAID = False


def _say_wait_policy() -> None:
    """One logged line, once per process, when torch loaded before the wait policy was set."""
    global _TOO_LATE_SAID
    if WAIT_POLICY_IN_EFFECT or _threads.wait_variables(os.environ) or _TOO_LATE_SAID:
        return
    _TOO_LATE_SAID = True
    log.warning(
        "threads: torch was imported before singexp.pipeline, too late to set the OpenMP wait "
        "policy (OMP_WAIT_POLICY=PASSIVE, what the command line sets): beside other work on "
        "the cores restoration can be several times slower; import singexp.pipeline first or "
        "export OMP_WAIT_POLICY=PASSIVE before starting Python"
    )


def operator_config(operator: Any) -> dict[str, Any]:
    """The operator A as JSON (``name``, ``scale``, its options; :func:`operator_from_json`)."""
    from singexp.operators import AveragePool, ColorToGray, Identity, StridedBlur

    found: dict[str, Any]
    if isinstance(operator, AveragePool):
        found = {"name": "avgpool", "scale": operator.scale}
    elif isinstance(operator, StridedBlur):
        found = {"name": "strided_blur", "scale": operator.scale, "sigma": operator.sigma}
    elif isinstance(operator, ColorToGray) and operator.channels == 3:
        found = {"name": "gray"}
    elif isinstance(operator, Identity):
        found = {"name": "identity"}
    else:
        raise SingexpError(
            f"save_pretrained: the operator {operator!r} cannot be written as JSON (avgpool, "
            "strided_blur, gray and identity can; a fitted A is refitted from its config)"
        )
    return {**found, "repr": repr(operator)}


def operator_from_json(node: Mapping[str, Any], image_size: int) -> Any:
    """The operator of :func:`operator_config`'s JSON."""
    from singexp.operators import build_operator

    options = {k: v for k, v in node.items() if k not in ("name", "scale", "repr")}
    return build_operator(
        str(node["name"]), node.get("scale", "auto"), image_size=image_size, **options
    )


def _methods(methods: Mapping[str, Any] | None) -> dict[str, Method]:
    """Methods by name: :class:`Method` objects, or sampler config nodes (checked here)."""
    found: dict[str, Method] = {}
    for name, method in (methods or {}).items():
        found[str(name)] = (
            method if isinstance(method, Method) else check_method(method, f"methods.{name}")
        )
    return found


class SingPipeline:
    """DeepJSCC → channel → each restorer (SING-Zero, SING-INN, ...), on images.

    Built from the objects (as a diffusers pipeline), from the command line's config
    (:meth:`from_config`) or from a folder :meth:`save_pretrained` wrote
    (:meth:`from_pretrained`); call it on images.
    """

    def __init__(
        self,
        codec: Any,
        prior: torch.nn.Module | None = None,
        scheduler: Any = None,
        operator: Any = None,
        methods: Mapping[str, Any] | None = None,
        inn: torch.nn.Module | None = None,
        *,
        snr_db: float | None = None,
        seed: int = 0,
        batch_size: int = 32,
        sigma_y: float | None = None,
        compute: Any = None,
        mean_image: Tensor | None = None,
        trained_on: Mapping[str, str | None] | None = None,
        inn_config: Mapping[str, Any] | None = None,
        threads: Any = "auto",
        device: str | torch.device = "cpu",
        run: RunConfig | None = None,
        state: RunState | None = None,
    ) -> None:
        """``codec``: a :class:`~singexp.modules.jscc.DeepJSCCModule`; ``prior``: the ε-prediction
        UNet; ``scheduler``: a diffusers scheduler (its noise schedule); ``operator``: A
        (:mod:`singexp.operators`); ``methods``: name → :class:`~singexp.samplers.registry.Method`
        (:func:`~singexp.samplers.registry.check_method` of a sampler node) or the node itself;
        ``inn``: an :class:`~singexp.modules.inn.INNModule` (or its network, with
        ``inn_config`` its hyper-parameters to save it). ``snr_db``: the default SNR (the codec's
        ``test_snr_db``); ``sigma_y``: σ_y for methods with ``sigma_y=auto`` (measured by
        :meth:`from_config`); ``mean_image`` (3, S, S): the mean training image, for the
        trivial-baseline notice; ``trained_on``: model → data set it was trained on (default:
        what the codec and INN record); ``threads``: the ``threads`` setting applied
        (:func:`~singexp.threads.apply_thread_policy`; None leaves torch's as they are).
        ``run``/``state``: the config and state :meth:`from_config` built it from (another BCR,
        or σ_y at another SNR, is then built from the config)."""
        from singexp.assembly import needs_sigma_y
        from singexp.samplers.compute import ComputeConfig

        _say_wait_policy()
        if threads is not None:
            _threads.apply_thread_policy(threads)
        self.run = run
        #: log each notice (out of distribution, below the trivial baseline) as a warning;
        #: ``singexp restore`` prints them itself
        self.log_notices = True
        self.state = state if state is not None else RunState()
        self.device = torch.device(device)
        self.methods = _methods(methods)
        if self.methods and (prior is None or scheduler is None or operator is None):
            raise SingexpError(
                "SingPipeline: methods need the prior UNet, a scheduler and the operator A"
            )
        if hasattr(inn, "inn") and hasattr(inn, "hparams"):  # an INNModule: its network
            module: Any = inn
            inn_config = dict(module.hparams) if inn_config is None else inn_config
            inn = module.inn
        if inn is not None:
            inn.eval().requires_grad_(False)
        if needs_sigma_y(self.methods) and sigma_y is None:
            raise SingexpError(
                "SingPipeline: a method has sigma_y=auto; pass sigma_y= (the measured σ_y; "
                "SingPipeline.from_config measures it on the data set's validation images)"
            )
        self.codec = codec
        self.prior = prior
        self.scheduler = scheduler
        self.operator = operator
        self.inn = inn
        self.inn_config = None if inn_config is None else dict(inn_config)
        self.sigma_y = sigma_y
        self.compute = compute if compute is not None else ComputeConfig()
        hparams = dict(getattr(codec, "hparams", {}) or {})
        default_snr = hparams.get("test_snr_db", 0.0) if run is None else run.channel.snr_db
        self._snr_db = float(default_snr if snr_db is None else snr_db)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.image_size = int(hparams.get("image_size", 32))
        self.bcr = format_ratio(parse_ratio(hparams.get("bcr", "1/48") if run is None else run.bcr))
        self._mean_image: Tensor | None = mean_image
        self._mean_why: str | None = None
        self._mean_ready = mean_image is not None or run is None
        if trained_on is None:
            trained_on = {"jscc": hparams.get("dataset")}
            if self.inn_config is not None:
                trained_on["inn"] = self.inn_config.get("dataset")
        self.trained_on = {k: None if v is None else str(v) for k, v in trained_on.items()}
        base = self._make_stage(codec, prior, scheduler, operator, inn, sigma_y)
        self._stages: dict[tuple[str, float | None], _Stage] = {
            self._key(self.bcr, self._snr_db): base
        }

    # ---- construction ---------------------------------------------------------------------
    def _make_stage(
        self,
        codec: Any,
        prior: Any,
        scheduler: Any,
        operator: Any,
        inn: Any,
        sigma_y: float | None,
    ) -> _Stage:
        from singexp.assembly import method_records, restorers_from_parts
        from singexp.samplers.registry import CODEC_METHODS
        from singexp.samplers.schedulers import scheduler_for

        codec.eval().requires_grad_(False).to(self.device)
        networks: dict[str, torch.nn.Module] = {}
        if self.methods:
            networks["prior"] = prior.to(self.device)
            if inn is not None:
                networks["inn"] = inn.to(self.device)
            if any(m.name in CODEC_METHODS for m in self.methods.values()):
                networks["codec"] = codec.codec  # the baselines' forward model
        restorers = restorers_from_parts(
            self.methods,
            unet=networks.get("prior"),  # type: ignore[arg-type]  # None only without methods
            schedulers={n: scheduler_for(scheduler, m) for n, m in self.methods.items()},
            operator=operator,
            inn=networks.get("inn"),
            codec=networks.get("codec"),
            sigma_y=sigma_y,
            compute=self.compute,
        )
        ran = method_records(self.methods, operator, inn, sigma_y)
        return _Stage(codec, operator, restorers, networks, sigma_y, ran)

    @staticmethod
    def _objects(run: RunConfig, state: RunState) -> dict[str, Any]:
        """The constructor's objects for ``run``, built as the evaluation task builds them
        (:func:`~singexp.preflight.preflight`, then :func:`~singexp.assembly.build_restoration`:
        the same checks, errors and ``auto`` models)."""
        from singexp.assembly import build_restoration
        from singexp.data.base import indexed_data
        from singexp.models.inn import read_inn_metadata
        from singexp.models.provenance import trained_on
        from singexp.preflight import preflight
        from singexp.samplers.schedulers import build_scheduler

        preflight(run, state)
        parts = build_restoration(run, lambda: indexed_data(run, state))
        scheduler = None
        if run.methods and run.prior is not None:
            p = run.prior
            scheduler = build_scheduler(
                num_train_timesteps=p.num_train_timesteps,
                beta_start=p.beta_start,
                beta_end=p.beta_end,
                schedule=p.schedule,
                kind="ddim",
            )
        inn_config = None
        if parts.inn_path is not None:
            inn_config = read_inn_metadata(parts.inn_path)["hparams"]
        return {
            "codec": parts.codec,
            "prior": parts.networks.get("prior"),
            "scheduler": scheduler,
            "operator": parts.operator,
            "methods": run.methods,
            "inn": parts.networks.get("inn"),
            "inn_config": inn_config,
            "sigma_y": parts.sigma_y,
            "trained_on": trained_on(
                parts.codec,
                parts.inn_path,
                parts.prior_source,
                run.prior.trained_on if run.prior else None,
            ),
        }

    @classmethod
    def from_run(
        cls, run: RunConfig, *, device: str | torch.device = "cpu", threads: Any = "auto"
    ) -> SingPipeline:
        """The pipeline of a validated :class:`~singexp.config.RunConfig`."""
        state = RunState()
        objects = cls._objects(run, state)
        return cls(
            **objects,
            snr_db=float(run.channel.snr_db),
            seed=run.seed,
            batch_size=run.data.batch_size,
            compute=run.compute,
            threads=threads,
            device=device,
            run=run,
            state=state,
        )

    @classmethod
    def from_config(
        cls,
        overrides: Sequence[str] = (),
        *,
        config_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> SingPipeline:
        """Compose the command line's config with ``overrides`` (e.g.
        ``["+experiment=sing_inn", "channel.snr_db=-5"]``; ``quick=true`` applies), build every
        object once and call the constructor."""
        from omegaconf import OmegaConf

        from singexp.cli import compose_config
        from singexp.quick import apply_quick

        cfg = compose_config(list(overrides), config_dir)
        # outside a Hydra run there is no run folder: auto-trained models resolve without one
        OmegaConf.update(cfg, "paths.output_dir", str(Path(str(cfg.paths.root)).resolve()))
        apply_quick(cfg, overrides=list(overrides))  # as singexp.tasks.run does
        return cls.from_run(validate(cfg), device=device, threads=cfg.get("threads", "auto"))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write every component with its config into ``folder``: ``codec.safetensors``
        (weights, hyper-parameters in its metadata), ``inn.safetensors`` (the same),
        ``prior/`` (the UNet, diffusers' ``save_pretrained``, with the data it was trained on),
        ``scheduler/``, ``mean_image.safetensors`` (when known) and ``pipeline.json`` (the
        operator, the methods' configs, σ_y, compute, seed, SNR, batch size, trained_on)."""
        from types import SimpleNamespace

        from safetensors.torch import save_file

        from singexp.models.inn import export_inn
        from singexp.models.jscc import export_codec
        from singexp.models.prior import write_training_record

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        export_codec(self.codec, out / CODEC_FILE, dtype=torch.float32)
        if self.inn is not None:
            if self.inn_config is None:
                raise SingexpError(
                    "save_pretrained: the INN network was given without its hyper-parameters; "
                    "pass the INNModule (or inn_config=)"
                )
            export_inn(SimpleNamespace(inn=self.inn, hparams=self.inn_config), out / INN_FILE)  # type: ignore[arg-type]
        if self.prior is not None:
            self.prior.save_pretrained(out / PRIOR_DIR)  # type: ignore[operator]
            if self.trained_on.get("prior"):
                write_training_record(out / PRIOR_DIR, str(self.trained_on["prior"]))
        if self.scheduler is not None:
            self.scheduler.save_pretrained(out / SCHEDULER_DIR)
        mean = self.mean_image()
        if mean is not None:
            save_file({"mean_image": mean.contiguous()}, str(out / MEAN_IMAGE_FILE))
        spec = {
            "_class_name": type(self).__name__,
            "snr_db": self._snr_db,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "sigma_y": self.sigma_y,
            "compute": json_ready(vars(self.compute)),
            "operator": None if self.operator is None else operator_config(self.operator),
            "methods": {
                name: {"prefix": m.prefix, "config": json_ready(m.raw)}
                for name, m in self.methods.items()
            },
            "trained_on": self.trained_on,
            "ran": json_ready(self._stage(None, self._snr_db).ran),
        }
        (out / PIPELINE_FILE).write_text(json.dumps(spec, indent=2, default=str) + "\n")
        return out

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, device: str | torch.device = "cpu", threads: Any = "auto"
    ) -> SingPipeline:
        """The pipeline :meth:`save_pretrained` wrote into ``folder``, loaded offline."""
        import diffusers
        from safetensors.torch import load_file

        from singexp.models.inn import load_inn
        from singexp.models.jscc import load_codec
        from singexp.models.prior import load_prior
        from singexp.samplers.compute import ComputeConfig

        root = Path(folder)
        if not (root / PIPELINE_FILE).is_file():
            raise SingexpError(f"{root}: no {PIPELINE_FILE}; not a saved SingPipeline folder")
        spec = json.loads((root / PIPELINE_FILE).read_text())
        codec = load_codec(root / CODEC_FILE, test_snr_db=float(spec["snr_db"]))
        size = int(codec.hparams["image_size"])
        prior = None
        if (root / PRIOR_DIR).is_dir():
            prior = load_prior(str(root / PRIOR_DIR), expected_size=size)
        scheduler = None
        if (root / SCHEDULER_DIR).is_dir():
            config = json.loads((root / SCHEDULER_DIR / "scheduler_config.json").read_text())
            kind = getattr(diffusers, str(config["_class_name"]))
            scheduler = kind.from_pretrained(root / SCHEDULER_DIR)
        inn = load_inn(root / INN_FILE) if (root / INN_FILE).is_file() else None
        mean = None
        if (root / MEAN_IMAGE_FILE).is_file():
            mean = load_file(str(root / MEAN_IMAGE_FILE))["mean_image"]
        operator = spec.get("operator")
        methods = {
            name: check_method(entry["config"], entry.get("prefix", f"methods.{name}"))
            for name, entry in spec.get("methods", {}).items()
        }
        return cls(
            codec,
            prior,
            scheduler,
            None if operator is None else operator_from_json(operator, size),
            methods,
            inn,
            snr_db=float(spec["snr_db"]),
            seed=int(spec.get("seed", 0)),
            batch_size=int(spec.get("batch_size", 32)),
            sigma_y=spec.get("sigma_y"),
            compute=ComputeConfig(**spec.get("compute", {})),
            mean_image=mean,
            trained_on=spec.get("trained_on"),
            threads=threads,
            device=device,
        )

    # ---- settings -------------------------------------------------------------------------
    @property
    def snr_db(self) -> float:
        return self._snr_db

    def _needs_snr(self) -> bool:
        """Whether another SNR needs other restorers: σ_y measured at it (from a config only;
        a pipeline of objects uses its ``sigma_y`` at every SNR)."""
        from singexp.assembly import needs_sigma_y

        return self.run is not None and needs_sigma_y(self.methods)

    def _key(self, bcr: Any, snr_db: float) -> tuple[str, float | None]:
        return format_ratio(parse_ratio(bcr, "bcr")), (snr_db if self._needs_snr() else None)

    def _stage(self, bcr: Any, snr_db: float) -> _Stage:
        """The stage for (``bcr``, ``snr_db``), built once: another BCR needs another codec
        (and INN); the SNR matters only to ``sigma_y=auto``. Built from the config; a pipeline
        of objects restores at its codec's BCR."""
        key = self._key(bcr if bcr is not None else self.bcr, snr_db)
        if key in self._stages:
            return self._stages[key]
        if self.run is None:
            raise SingexpError(
                f"this pipeline was built from objects: it restores at its codec's BCR "
                f"{self.bcr}, not {key[0]}; build another pipeline (or use from_config)"
            )
        ratio = parse_ratio(key[0], "bcr")
        run = self.run.with_settings(
            {
                "bcr.ratio": format_ratio(ratio),
                "bcr.name": f"{ratio.numerator}_{ratio.denominator}",
                "channel.snr_db": float(snr_db),
            },
            reresolve=True,  # keys that follow the BCR (inn.scale, ...) follow it here too
        )
        o = self._objects(run, RunState())
        inn = o["inn"]
        stage = self._make_stage(
            o["codec"], o["prior"], o["scheduler"], o["operator"], inn, o["sigma_y"]
        )
        self._stages[key] = stage
        return stage

    def to(self, device: str | torch.device) -> SingPipeline:
        """Move every loaded model to ``device``; later calls run there."""
        self.device = torch.device(device)
        for stage in self._stages.values():
            stage.codec.to(self.device)
            for network in stage.networks.values():
                network.to(self.device)
        return self

    def mean_image(self) -> Tensor | None:
        """The mean training image (3, S, S), or None with the reason in ``mean_image_skipped``:
        given, or from the config's data set (the shipped training set for the shipped models;
        a test-only data set has none)."""
        if not self._mean_ready:
            from singexp.data.base import indexed_data
            from singexp.modules.restoration import mean_image_or_skip

            assert self.run is not None
            self._mean_ready = True
            try:
                self._mean_image, self._mean_why = mean_image_or_skip(
                    indexed_data(self.run, self.state)
                )
            except SingexpError as error:
                self._mean_why = f"mean-image baseline skipped: {error}"
        elif self._mean_image is None and self._mean_why is None:
            self._mean_why = "mean-image baseline skipped: the pipeline was given no mean_image"
        return self._mean_image

    @property
    def mean_image_skipped(self) -> str | None:
        return self._mean_why

    # ---- restoration ----------------------------------------------------------------------
    def images(self, images: ImageInput) -> Tensor:
        """``images`` as an (N, 3, S, S) batch in [-1, 1] at S = the models' image size:
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
        colour = None if self.run is None else self.run.data.spec.get("alpha_background")
        return None if colour is None else list(colour)

    def __call__(
        self,
        images: ImageInput,
        snr_db: float | None = None,
        bcr: Any = None,
        seed: int | None = None,
    ) -> SingPipelineOutput:
        """Send ``images`` through DeepJSCC at ``snr_db`` (default the pipeline's) and the
        ``bcr`` (default the codec's; a ratio such as ``"1/192"``), then restore with every
        method, seeded by ``seed`` (default the pipeline's) as the evaluation is.

        Returns a :class:`SingPipelineOutput`: ``images`` method → (N, 3, S, S) in [-1, 1] on
        the CPU, in input order (``original``: the input at the models' size, ``deepjscc``: x̂,
        then each method), ``ran`` (what ran) and ``notices``."""
        names = None
        if not isinstance(images, Tensor):
            paths = [images] if isinstance(images, str | Path) else list(images)
            files = image_files(paths)
            names = output_names(files)
            images = load_images(files, self.image_size, self._background())
        return self._restore(self.images(images), snr_db, bcr, seed, names)

    def _restore(
        self,
        x: Tensor,
        snr_db: float | None,
        bcr: Any,
        seed: int | None,
        names: list[str] | None,
    ) -> SingPipelineOutput:
        snr = self.snr_db if snr_db is None else float(snr_db)
        seed = self.seed if seed is None else int(seed)
        stage = self._stage(bcr, snr)
        x = x.to(self.device)
        parts: dict[str, list[Tensor]] = {ORIGINAL: [], BASELINE: []}
        parts.update({name: [] for name in stage.restorers})
        seconds: dict[str, float] = {}
        for batch_idx, start in enumerate(range(0, x.shape[0], self.batch_size)):
            batch = x[start : start + self.batch_size]
            outputs = evaluate_batch(
                stage.codec, stage.restorers, batch, snr, seed, batch_idx, seconds
            )
            parts[ORIGINAL].append(batch.cpu())
            for name, images in outputs.items():
                parts[name].append(images.cpu())
        restored = {name: torch.cat(p) for name, p in parts.items()}
        ratio = format_ratio(parse_ratio(bcr if bcr is not None else self.bcr, "bcr"))
        notices = self._notices(restored, names)
        for line in notices if self.log_notices else ():
            log.warning(line)
        per_image = {name: value / max(1, x.shape[0]) for name, value in seconds.items()}
        return SingPipelineOutput(restored, dict(stage.ran), snr, ratio, seed, notices, per_image)

    def _notices(self, images: dict[str, Tensor], names: list[str] | None) -> list[str]:
        """Out of distribution (image files; the models record their training data) and,
        measured, DeepJSCC below the trivial baseline (the mean training image) on an image."""
        notices = []
        data = sorted({v for v in self.trained_on.values() if v})
        if names is not None and data:
            what = ", ".join(DATA_DESCRIPTIONS.get(d, d) for d in data)
            notices.append(
                f"out of distribution: the models were trained on {what} at {self.image_size} px "
                "and these images are other data: expect restorations that look like the "
                "training data, not like these images"
            )
        mean = self.mean_image()
        original = images[ORIGINAL]
        if mean is None:
            if names is not None and self.mean_image_skipped:
                log.info("trivial-baseline check: %s", self.mean_image_skipped)
            return notices
        trivial = psnr(mean.to(original.dtype).expand_as(original), original)
        ours = psnr(images[BASELINE], original)
        below = [i for i in range(original.shape[0]) if float(ours[i]) < float(trivial[i])]
        if below:
            labels = names or [f"image {i}" for i in range(original.shape[0])]
            shown = ", ".join(
                f"{labels[i]} {float(ours[i]):.2f} < {float(trivial[i]):.2f} dB" for i in below[:4]
            )
            more = f" (+{len(below) - 4} more)" if len(below) > 4 else ""
            notices.append(
                f"DeepJSCC's own output is below the trivial baseline (the mean training image) "
                f"on {len(below)} of {original.shape[0]} images: {shown}{more}"
            )
        return notices

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
        SNR, BCR and seed). Returns what was written, the restored tensors and the notices."""
        from PIL import Image

        from singexp.visualize import save_comparison_grid, to_uint8

        files = image_files(paths)
        snr = self.snr_db if snr_db is None else float(snr_db)
        seed = self.seed if seed is None else int(seed)
        ratio = format_ratio(parse_ratio(bcr if bcr is not None else self.bcr, "bcr"))
        names = output_names(files)
        x = load_images(files, self.image_size, self._background())
        result = self._restore(x, snr, ratio, seed, names)
        outputs = result.images
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {}
        for name, images in outputs.items():
            for stem, array in zip(names, to_uint8(images), strict=True):
                path = out / f"{stem}_{name}.png"
                Image.fromarray(array).save(path)
                written.setdefault(name, []).append(str(path))
        if grid_images is None:
            grid_images = (
                8
                if self.run is None or self.run.evaluate is None
                else self.run.evaluate.grid_images
            )
        channel = self.run.channel.name if self.run is not None else self.codec.hparams["channel"]
        title = f"{channel} SNR {snr:g} dB · BCR {ratio} · seed {seed}"
        grid = save_comparison_grid(
            {name: images[:grid_images] for name, images in outputs.items()}, out / GRID_FILE, title
        )
        record = {
            "files": [str(f) for f in files],
            "snr_db": snr,
            "bcr": ratio,
            "seed": seed,
            "images": outputs,
            "ran": result.ran,
            "notices": result.notices,
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
            "ran": result.ran,
            "notices": result.notices,
        }


#: how a recorded training data set is named in the out-of-distribution notice
DATA_DESCRIPTIONS = {"shapes": "generated shapes (data set shapes)"}
