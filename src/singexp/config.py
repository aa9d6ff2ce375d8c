"""Schemas for singexp's own config groups and early validation with named, one-line errors.

Hydra composes the config; :func:`validate` then checks singexp's groups against the dataclass
schemas below (types, unknown keys, ranges) before anything is built, raising
:class:`~singexp.errors.ConfigError` that names the key and the fix. Third-party groups
(trainer, logger, callbacks) stay plain ``_target_`` YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from singexp.bcr import LatentShape, latent_shape, parse_ratio
from singexp.channel import CHANNELS
from singexp.errors import ConfigError, SingexpError, missing_file
from singexp.locations import ASSETS_DIR as ASSETS_DIR  # re-exported: the config's home
from singexp.locations import CONF_DIR as CONF_DIR
from singexp.locations import EMBEDDED_JSCC_DIR as EMBEDDED_JSCC_DIR
from singexp.schema import _coerce
from singexp.schema import check_schema as check_schema  # re-exported for the modules' schemas

#: |SNR| in dB beyond which noise is numerically zero or swamps the signal (metrics become NaN)
MAX_SNR_DB = 100.0
#: seeds numpy and Lightning accept
MAX_SEED = 2**32 - 1

if TYPE_CHECKING:
    from singexp.metrics import MetricsConfig
    from singexp.models.inn import INNConfig
    from singexp.models.prior import PriorConfig
    from singexp.operators import OperatorConfig
    from singexp.samplers.compute import ComputeConfig


def embedded_codec(ratio: Fraction, image_size: int) -> Path:
    """The shipped DeepJSCC codec for ``ratio`` on 32×32 shapes, or a one-line error."""
    path = EMBEDDED_JSCC_DIR / f"jscc_{ratio.numerator}_{ratio.denominator}.safetensors"
    if image_size != 32 or not path.is_file():
        shipped = sorted(
            (p.stem.removeprefix("jscc_").replace("_", "/") for p in EMBEDDED_JSCC_DIR.glob("*")),
            key=lambda r: Fraction(r),
        )
        raise ConfigError(
            "jscc.checkpoint",
            f"no embedded DeepJSCC for bcr {ratio.numerator}/{ratio.denominator} at "
            f"{image_size} px (embedded codecs: 32 px, bcr {', '.join(shipped)}); train one with "
            "`python -m singexp +experiment=jscc` and set jscc.checkpoint=PATH",
        )
    return path


@dataclass(frozen=True)
class ChannelConfig:
    name: str = "awgn"
    snr_db: float = 0.0
    train_snr_db: float | None = None
    train_snr_range: list[float] | None = None
    auto_train_snr_range: list[float] | None = field(default_factory=lambda: [-5.0, 5.0])

    def train_range(self) -> tuple[float, float]:
        """(low, high) of the training SNR in dB; low == high for a fixed SNR."""
        if self.train_snr_range is not None:
            return float(self.train_snr_range[0]), float(self.train_snr_range[1])
        fixed = self.snr_db if self.train_snr_db is None else self.train_snr_db
        return fixed, fixed

    def shared_train_range(self) -> tuple[float, float]:
        """The training SNR of a shared codec (``jscc.checkpoint=auto``): :meth:`train_range`
        when the training SNR is set, else ``auto_train_snr_range`` (not the test SNR, so every
        point of an SNR sweep shares one codec and one INN; set to null, the test SNR)."""
        unset = self.train_snr_range is None and self.train_snr_db is None
        if unset and self.auto_train_snr_range is not None:
            return float(self.auto_train_snr_range[0]), float(self.auto_train_snr_range[1])
        return self.train_range()


@dataclass(frozen=True)
class JSCCConfig:
    downsample: int = 16
    width: int = 64
    snr_adaptive: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0
    checkpoint: str | None = None
    resume: bool = True
    export: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """The run's config, validated once (:func:`validate`): what every layer below the task
    layer receives, never the raw Hydra config.

    singexp's own groups are typed, each checked once here: ``channel``, ``bcr``, ``latent``,
    ``jscc``, ``methods`` (name → :class:`~singexp.samplers.registry.Method`), ``inn``
    (:class:`~singexp.models.inn.INNConfig`), ``prior``
    (:class:`~singexp.models.prior.PriorConfig`),
    ``operator`` (:class:`~singexp.operators.OperatorConfig`), ``dataset``
    (:class:`DatasetConfig`, whose ``spec`` builds the data module), ``metrics``
    (:class:`~singexp.metrics.MetricsConfig`) and ``evaluate`` (``compute``, ``evaluate_split``);
    ``trainer``, ``callbacks`` and ``logger`` are third-party ``_target_`` specs.
    ``plain`` is the whole config, resolved (what a run folder's config.yaml holds).

    Frozen, with its typed groups: nothing after :func:`validate` writes into it. What a run
    resolves on the way is returned by the functions that resolve it (the ``auto`` models:
    :func:`singexp.models.jscc.require_codec`, ...) or kept in its
    :class:`~singexp.state.RunState` (warnings, the indexed data module); another run's config
    is derived with :meth:`with_settings`.
    """

    channel: ChannelConfig
    bcr: Fraction
    latent: LatentShape
    jscc: JSCCConfig
    task: str = "jscc"
    seed: int = 0
    methods: dict[str, Any] = field(default_factory=dict)
    #: the ``dataset`` group, checked (:func:`dataset_settings`); its ``spec`` builds the data
    dataset: DatasetConfig | None = None
    #: the ``inn`` group, checked (:func:`~singexp.models.inn.inn_config`); None: no group
    inn: INNConfig | None = None
    #: the ``prior`` group, checked (:func:`~singexp.models.prior.prior_settings`); None: no group
    prior: PriorConfig | None = None
    #: the ``operator`` group, checked (:func:`~singexp.operators.operator_settings`)
    operator: OperatorConfig | None = None
    #: the ``metrics`` group, checked (``_target_`` left out)
    metrics: MetricsConfig = field(default_factory=lambda: _metrics_default())
    #: the ``evaluate`` group's own keys, checked (:func:`evaluate_settings`)
    evaluate: EvaluateConfig | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    min_train_steps: int = 0
    quick: bool = False
    #: ``evaluate``'s compute keys (precision, guidance micro-batch, ...), checked once
    compute: ComputeConfig = field(default_factory=lambda: _compute_default())
    plain: dict[str, Any] = field(default_factory=dict)
    #: the config as composed, interpolations unresolved (``inn.scale`` follows ``bcr.ratio``):
    #: what :meth:`with_settings` derives a run at another grid point from
    unresolved: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        """The run folder (``paths.output_dir``)."""
        return Path(str(self.paths["output_dir"]))

    @property
    def evaluate_split(self) -> str:
        """``evaluate.split``: the images a restoration is scored on (test, or val to tune)."""
        return self.evaluate.split if self.evaluate is not None else "test"

    @property
    def data(self) -> DatasetConfig:
        """The ``dataset`` group (every validated run has one)."""
        if self.dataset is None:
            raise ConfigError("dataset", "missing; choose e.g. dataset=shapes")
        return self.dataset

    @property
    def dataset_name(self) -> str:
        return self.data.name

    @property
    def data_content(self) -> str:
        """What the tested (and trained-on) images are: ``dataset.content`` when set, else
        ``dataset.name``; the data set models' ``trained_on`` is compared with."""
        return self.data.content or self.data.name

    def select(self, key: str, default: Any = None) -> Any:
        """The value of the dotted ``key`` in the resolved config (``default`` when absent)."""
        node: Any = self.plain
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def with_settings(self, settings: Mapping[str, Any], reresolve: bool = False) -> RunConfig:
        """Another run's config: this one with the dotted keys of ``settings`` set (added where
        new), validated again (how an ``auto`` artifact's training run is derived). With
        ``reresolve``, the keys that interpolate others are resolved again from the new values
        (another BCR: ``inn.scale`` and the operator's scale follow it), the ones that need
        Hydra's runtime (run folders) keep this run's values."""
        sub = OmegaConf.create(self.unresolved if reresolve and self.unresolved else self.plain)
        for key, value in settings.items():
            OmegaConf.update(sub, key, value, merge=False, force_add=True)
        if reresolve and self.unresolved:
            _pin_unresolvable(sub, self.plain)
        return validate(sub)


def _pin_unresolvable(node: DictConfig, plain: Mapping[str, Any], prefix: str = "") -> None:
    """Replace each value of ``node`` that cannot resolve here (a Hydra runtime interpolation
    outside a Hydra job) by the resolved value at the same key of ``plain``."""
    for key in [str(k) for k in node]:
        name = f"{prefix}.{key}" if prefix else key
        try:
            value = node[key]
        except Exception:
            resolved: Any = plain
            for part in name.split("."):
                resolved = resolved.get(part) if isinstance(resolved, Mapping) else None
            node[key] = resolved
            continue
        if isinstance(value, DictConfig):
            _pin_unresolvable(value, plain, name)


def _metrics_default() -> MetricsConfig:
    from singexp.metrics import MetricsConfig

    return MetricsConfig()


def validate_metrics(node: Mapping[str, Any] | None) -> MetricsConfig:
    """The ``metrics`` group (its ``_target_`` left out) as a checked
    :class:`~singexp.metrics.MetricsConfig`: unknown keys, types and ranges, one line each."""
    from singexp.metrics import MetricsConfig

    keys = {str(k): v for k, v in (node or {}).items() if k != "_target_"}
    metrics = check_schema("metrics", keys, MetricsConfig)
    metrics.check()
    return metrics


def _compute_default() -> ComputeConfig:
    from singexp.samplers.compute import ComputeConfig

    return ComputeConfig()


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` group's own keys, checked once (:func:`evaluate_settings`; its compute
    keys are :class:`~singexp.samplers.compute.ComputeConfig`, ``RunConfig.compute``)."""

    #: the images a restoration is scored on: test, or val (tuning a method)
    split: str
    #: score only the first N images of that split (None: all of them)
    images: int | None
    #: a method the sweep's report pairs every other method with (report only)
    paired_reference: str | None
    #: test images shown in grid.png
    grid_images: int


def evaluate_settings(evaluate: Mapping[str, Any]) -> EvaluateConfig:
    """The ``evaluate`` group as an :class:`EvaluateConfig`: one-line errors naming the key."""
    for key in ("images", "paired_reference", "grid_images"):
        if key not in evaluate:
            raise ConfigError(f"evaluate.{key}", "missing; config.yaml sets it")
    images = _coerce("evaluate.images", evaluate["images"], int | None)
    if images is not None and images < 1:
        raise ConfigError("evaluate.images", f"must be ≥ 1 or null, got {images}")
    grid = _coerce("evaluate.grid_images", evaluate["grid_images"], int)
    if grid < 0:
        raise ConfigError("evaluate.grid_images", f"must be ≥ 0, got {grid}")
    reference = evaluate["paired_reference"]
    return EvaluateConfig(
        split=validate_evaluation_split(evaluate),
        images=images,
        paired_reference=None if reference is None else str(reference),
        grid_images=grid,
    )


def validate_evaluation_split(evaluate: Mapping[str, Any]) -> str:
    """``evaluate.split`` names images a restoration may be scored on (test, or val to tune)."""
    from singexp.data.base import EVALUATION_SPLITS

    split = evaluate.get("split", "test")
    if split not in EVALUATION_SPLITS:
        raise ConfigError(
            "evaluate.split",
            f"must be one of {list(EVALUATION_SPLITS)} (val: tuning a method), got {split!r}",
        )
    return str(split)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as resolved plain containers. Outside a Hydra job, a key whose interpolation
    needs Hydra's runtime (``paths.output_dir`` unless set) stays as written; any other
    interpolation that fails (a resolver's error, a missing key) is a one-line ConfigError
    naming the key, before anything is written."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:
        return _resolved(cfg, "")


#: the message of an interpolation that only Hydra's runtime resolves (``${hydra:...}``)
NEEDS_HYDRA = "HydraConfig was not set"


def _interpolation_error(key: str, raw: Any, error: Exception) -> SingexpError:
    """The one-line error of ``key``'s interpolation: the resolver's own ConfigError where it
    raised one, else a ConfigError naming ``key`` with OmegaConf's reason."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, SingexpError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return cause
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    reason = reason.split(" raised while resolving interpolation: ")[-1]
    return ConfigError(key, f"cannot resolve {raw!r}: {reason}")


def _resolved(node: Any, prefix: str) -> Any:
    if isinstance(node, DictConfig):
        out: dict[str, Any] = {}
        for key in node:
            try:
                value = node[key]
            except Exception as error:  # an interpolation that cannot resolve
                raw = OmegaConf.to_container(node, resolve=False)[key]  # type: ignore[index]
                if NEEDS_HYDRA not in str(error):
                    raise _interpolation_error(f"{prefix}{key!s}", raw, error) from None
                value = raw  # resolved by Hydra's runtime, in a Hydra job
            out[str(key)] = _resolved(value, f"{prefix}{key!s}.")
        return out
    if isinstance(node, ListConfig):
        items = []
        for i in range(len(node)):
            try:
                value = node[i]
            except Exception as error:
                raw = OmegaConf.to_container(node, resolve=False)[i]  # type: ignore[index]
                if NEEDS_HYDRA not in str(error):
                    raise _interpolation_error(f"{prefix[:-1]}[{i}]", raw, error) from None
                value = raw
            items.append(_resolved(value, f"{prefix[:-1]}[{i}]."))
        return items
    return node


def validate_channel(node: DictConfig) -> ChannelConfig:
    ch = check_schema("channel", node, ChannelConfig)
    if ch.name not in CHANNELS:
        raise ConfigError(
            "channel.name", f"unknown channel {ch.name!r}; choose one of {sorted(CHANNELS)}"
        )
    for key in ("train_snr_range", "auto_train_snr_range"):
        snr_range = getattr(ch, key)
        if snr_range is not None and (len(snr_range) != 2 or snr_range[0] > snr_range[1]):
            raise ConfigError(f"channel.{key}", "must be [low, high] with low ≤ high, e.g. [-5,5]")
    values = {"snr_db": ch.snr_db, "train_snr_db": ch.train_snr_db}
    for key in ("train_snr_range", "auto_train_snr_range"):
        values.update({f"{key}[{i}]": x for i, x in enumerate(getattr(ch, key) or [])})
    for key, snr in values.items():
        if snr is not None and abs(snr) > MAX_SNR_DB:
            raise ConfigError(
                f"channel.{key}",
                f"{snr:g} dB is out of range; SNRs must lie in [-{MAX_SNR_DB:g}, "
                f"{MAX_SNR_DB:g}] dB (beyond, noise is nil or swamps the signal: NaN metrics)",
            )
    return ch


#: the options every data module takes: (key, least value, whether null is allowed: all images)
DATASET_OPTIONS = (
    ("batch_size", 1, False),
    ("num_workers", 0, False),
    ("min_train_images", 0, False),
    ("train_size", 1, True),
    ("val_size", 1, True),
    ("test_size", 1, True),
)


@dataclass(frozen=True)
class DatasetConfig:
    """The ``dataset`` group, checked once (:func:`dataset_settings`): the options every data
    module takes, typed (:data:`DATASET_OPTIONS`, name and image size), and ``spec``, the whole
    node that builds the data module (a ``_target_`` spec: its class's signature checks the
    data set's own keys, such as ``root`` or ``backgrounds``)."""

    name: str
    #: what the images are (``dataset.content``: ``celebahq`` for a folder of CelebA-HQ faces),
    #: compared with the data set models were trained on; None: ``name`` says it
    content: str | None
    image_size: int
    batch_size: int
    num_workers: int
    min_train_images: int
    train_size: int | None
    val_size: int | None
    test_size: int | None
    spec: dict[str, Any]


def dataset_settings(dataset: Mapping[str, Any]) -> DatasetConfig:
    """The data options that every data module takes (:data:`DATASET_OPTIONS`), whole numbers in
    range, checked before the data module is built, as a :class:`DatasetConfig`."""
    values: dict[str, Any] = {}
    for key, least, nullable in DATASET_OPTIONS:
        if key not in dataset:
            raise ConfigError(f"dataset.{key}", "missing; every data set preset sets it")
        value = _coerce(f"dataset.{key}", dataset[key], int | None if nullable else int)
        if value is not None and value < least:
            raise ConfigError(f"dataset.{key}", f"must be ≥ {least}, got {value}")
        values[key] = value
    return DatasetConfig(
        name=str(dataset.get("name")),
        content=_coerce("dataset.content", dataset.get("content"), str | None),
        image_size=_coerce("dataset.image_size", dataset.get("image_size"), int),
        spec=dict(dataset),
        **values,
    )


def validate_seed(value: Any) -> int:
    """``seed`` as a whole number in numpy's and Lightning's range ``[0, 2**32 - 1]``."""
    seed = _coerce("seed", value, int)
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            "seed", f"{seed} is out of range; write a whole number in [0, {MAX_SEED}]"
        )
    return seed


def check_accelerator(trainer: Any) -> None:
    """A GPU trainer needs a visible CUDA GPU: say so in one line instead of Lightning's
    MisconfigurationException deep in instantiation."""
    import torch

    accelerator = str((trainer or {}).get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            f"is {accelerator!r} but no CUDA GPU is visible; use trainer=default (picks what "
            "there is) or trainer=cpu",
        )


#: the image size of every shipped (``embedded``) model: codecs, INNs and the prior
SHIPPED_SIZE = 32


def shipped_models_in_use(cfg: DictConfig) -> list[str]:
    """The keys set to ``embedded`` whose model this task uses: ``jscc.checkpoint`` (every
    task but ``prior``), ``inn.checkpoint`` and ``prior.source`` (restoration, the prior only
    when a method restores)."""
    task = str(cfg.get("task", ""))
    used = []
    if task != "prior" and str(cfg.jscc.get("checkpoint")) == "embedded":
        used.append("jscc.checkpoint")
    if task == "restore":
        inn = cfg.get("inn")
        if isinstance(inn, DictConfig) and str(inn.get("checkpoint")) == "embedded":
            used.append("inn.checkpoint")
        sampler = cfg.get("sampler")
        restores = bool(cfg.get("methods")) or (
            isinstance(sampler, DictConfig) and sampler.get("name", "none") != "none"
        )
        prior = cfg.get("prior")
        if restores and isinstance(prior, DictConfig) and str(prior.get("source")) == "embedded":
            used.append("prior.source")
    return used


def check_shipped_sizes(cfg: DictConfig, size: int) -> None:
    """The shipped models are :data:`SHIPPED_SIZE` px: at another ``dataset.image_size`` one line
    naming both sizes, every ``embedded`` key in use and the two fixes."""
    used = shipped_models_in_use(cfg)
    if size == SHIPPED_SIZE or not used:
        return
    # a jscc run trains its codec itself with jscc.checkpoint=null; auto is for the others
    train = " ".join(
        f"{key}={'null' if cfg.get('task') == 'jscc' and key == 'jscc.checkpoint' else 'auto'}"
        for key in used
    )
    raise ConfigError(
        "dataset.image_size",
        f"is {size} but the shipped {'models' if len(used) > 1 else 'model'} "
        f"({', '.join(f'{k}=embedded' for k in used)}) {'are' if len(used) > 1 else 'is'} "
        f"{SHIPPED_SIZE} px; set dataset.image_size={SHIPPED_SIZE} to use "
        f"{'them' if len(used) > 1 else 'it'}, or {train} to train "
        f"{'them' if len(used) > 1 else 'one'} at {size} px on this data",
    )


def validate(cfg: DictConfig) -> RunConfig:
    """Check the composed config once, early, into the typed :class:`RunConfig` that the layers
    below the tasks receive; raise a one-line ConfigError naming the key."""
    plain = _plain(cfg)  # first: an interpolation that fails is named before any other check
    validate_seed(cfg.get("seed"))
    channel = validate_channel(cfg.channel)
    bcr_node = cfg.get("bcr")
    if not isinstance(bcr_node, DictConfig) or "ratio" not in bcr_node:
        raise ConfigError(
            "bcr", "missing; choose bcr=1_768, bcr=1_384, bcr=1_192 or set bcr.ratio=VALUE"
        )
    ratio = parse_ratio(bcr_node.ratio)
    jscc = check_schema("jscc", cfg.jscc, JSCCConfig)
    if jscc.width < 1:
        raise ConfigError("jscc.width", "must be ≥ 1")
    dataset = cfg.get("dataset")
    if not isinstance(dataset, DictConfig) or "image_size" not in dataset:
        raise ConfigError("dataset", "missing; choose e.g. dataset=shapes")
    size = _coerce("dataset.image_size", dataset.image_size, int)
    if size < 1:
        raise ConfigError("dataset.image_size", f"must be positive, got {size}")
    if jscc.downsample < 2 or jscc.downsample & (jscc.downsample - 1):
        raise ConfigError("jscc.downsample", f"must be a power of two ≥ 2, got {jscc.downsample}")
    latent = latent_shape(ratio, size, jscc.downsample)
    check_shipped_sizes(cfg, size)
    if jscc.checkpoint == "embedded":  # the shipped file, before the frozen RunConfig is made
        jscc = replace(jscc, checkpoint=str(embedded_codec(ratio, size)))
    if jscc.checkpoint not in (None, "auto"):
        check_model_file("jscc.checkpoint", jscc.checkpoint)
    inn = cfg.get("inn")
    inn_checkpoint = inn.get("checkpoint") if isinstance(inn, DictConfig) else None
    if inn_checkpoint is not None and str(inn_checkpoint) not in ("embedded", "auto"):
        check_model_file("inn.checkpoint", inn_checkpoint)
    check_accelerator(cfg.get("trainer"))
    from singexp.models.inn import inn_config
    from singexp.models.prior import prior_settings
    from singexp.operators import operator_settings
    from singexp.samplers.compute import ComputeConfig
    from singexp.samplers.registry import methods_from_config

    evaluate = dict(plain.get("evaluate") or {})
    task = str(cfg.get("task", "jscc"))

    return RunConfig(
        channel=channel,
        bcr=ratio,
        latent=latent,
        jscc=jscc,
        task=task,
        seed=validate_seed(cfg.get("seed")),
        methods=methods_from_config(plain.get("methods"), plain.get("sampler")),
        dataset=dataset_settings(plain["dataset"]),
        inn=inn_config(plain["inn"]) if plain.get("inn") else None,
        prior=prior_settings(plain["prior"], trains=task == "prior")
        if plain.get("prior")
        else None,
        operator=operator_settings(plain["operator"]) if plain.get("operator") else None,
        metrics=validate_metrics(plain.get("metrics")),
        evaluate=evaluate_settings(evaluate),
        compute=ComputeConfig.from_config(evaluate),
        trainer=dict(plain.get("trainer") or {}),
        callbacks=dict(plain.get("callbacks") or {}),
        logger=dict(plain.get("logger") or {}),
        paths=dict(plain.get("paths") or {}),
        min_train_steps=int(plain.get("min_train_steps") or 0),
        quick=bool(plain.get("quick", False)),
        plain=plain,
        unresolved=_unresolved(cfg),
    )


def _unresolved(cfg: DictConfig) -> dict[str, Any]:
    """The composed config with its interpolations as written."""
    container = OmegaConf.to_container(cfg, resolve=False)
    return {str(k): v for k, v in container.items()} if isinstance(container, dict) else {}


def check_model_file(key: str, path: str | Path) -> None:
    """A one-line ConfigError naming ``key`` unless ``path`` is a whole model file: a
    ``.safetensors`` whose header parses and covers the file, or a torch/Lightning checkpoint
    (a ``.ckpt``) that loads and holds a ``state_dict``. Truncated or foreign files fail here, up
    front, instead of in a traceback deep in loading."""
    path = Path(path)
    if not path.is_file():
        raise missing_file(key, path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:  # checks the header covers the file
                f.metadata()
            return
        import torch

        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # any unreadable file is the same user error
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            key, f"{path} is not a readable checkpoint (truncated or another format): {why}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(key, f"{path} is not a Lightning checkpoint (no state_dict in it)")
