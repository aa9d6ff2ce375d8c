"""The run's config print (``print_config``): short (the keys that say what runs), full or
nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from singexp.errors import ConfigError

if TYPE_CHECKING:
    from singexp.quick import Quick


def print_config_mode(value: Any) -> str:
    """``print_config``: ``short`` (also ``true``), ``full`` or ``false`` (also null)."""
    if value is None or value is False:
        return "false"
    if value is True:
        return "short"
    if str(value) in ("short", "full", "false"):
        return str(value)
    raise ConfigError("print_config", f"must be short, full or false, got {value!r}")


def config_summary(cfg: DictConfig, overrides: list[str], quick: Quick | None = None) -> str:
    """The short config print: the command-line overrides and the resolved keys that say what
    runs (experiment, data, channel, BCR, methods and their steps); with ``quick``, what
    ``quick=true`` set."""

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    lines = [
        "config (short; print_config=full prints all of it, print_config=false nothing):",
        f"  overrides: {' '.join(overrides) if overrides else '(none)'}",
        f"  experiment_name: {get('experiment_name')}",
        f"  task: {get('task')}",
        f"  dataset: {get('dataset.name')}, {get('dataset.image_size')} px, "
        f"test_size {get('dataset.test_size')}, batch_size {get('dataset.batch_size')}",
        f"  channel: {get('channel.name')}, snr_db {get('channel.snr_db')}",
        f"  bcr: {get('bcr.ratio')}",
    ]
    methods = get("methods") or {}
    sampler = get("sampler")
    if not methods and sampler is not None and sampler.get("name", "none") != "none":
        methods = {sampler.name: sampler}
    if methods:
        described = [
            f"{name} ({node.steps} steps)" if "steps" in node else str(name)
            for name, node in methods.items()
        ]
        lines.append(f"  methods: {', '.join(described)}")
    if get("task") != "restore":
        lines.append(f"  trainer.max_epochs: {get('trainer.max_epochs')}")
    if get("quick"):
        lines.append(f"  quick: true ({quick.describe()})" if quick else "  quick: true")
    return "\n".join(lines)


def show_config(cfg: DictConfig, overrides: list[str], quick: Quick | None = None) -> None:
    """Print the config as ``print_config`` says: short (default), full or nothing."""
    mode = print_config_mode(cfg.get("print_config", "short"))
    if mode == "full":
        print(OmegaConf.to_yaml(cfg, resolve=True))
    elif mode == "short":
        print(config_summary(cfg, overrides, quick))
