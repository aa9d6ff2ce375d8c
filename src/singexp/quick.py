"""``quick=true``: the small form of any experiment (``conf/quick.yaml``), applied to the
composed config before it is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from singexp.config import CONF_DIR
from singexp.errors import ConfigError


def _quick_node(node: DictConfig, values: Any) -> None:
    """Set ``values`` (a mapping) into ``node``: keys the node has, and new keys only in a
    ``_target_`` node (a third-party signature such as lightning.Trainer), never in singexp's
    schema-checked groups, where an unknown key is an error."""
    for key, value in values.items():
        current = node.get(key) if key in node else None
        if isinstance(value, DictConfig) and isinstance(current, DictConfig):
            _quick_node(current, value)
        elif key in node or "_target_" in node:
            node[key] = value


def apply_quick(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> bool:
    """``quick=true``: overwrite the composed config, the experiment's own settings included,
    with ``conf/quick.yaml`` (few images, epochs and batches; ``sampler_steps`` steps for the
    ``sampler`` and every ``methods.<name>``, at most ``sampler_iterations`` iterations).
    Returns whether it applied; ``quick`` other than a boolean is a one-line error."""
    from omegaconf import open_dict

    quick = cfg.get("quick", False)
    if not isinstance(quick, bool):
        raise ConfigError("quick", f"must be true or false, got {quick!r}")
    if not quick:
        return False
    settings = OmegaConf.load(conf_dir / "quick.yaml")
    with open_dict(cfg):
        _quick_node(cfg, settings.set)
        samplers = [cfg.get("sampler"), *(cfg.get("methods") or {}).values()]
        for node in samplers:
            if isinstance(node, DictConfig) and "steps" in node:
                node.steps = int(settings.sampler_steps)
            if isinstance(node, DictConfig) and "iterations" in node:  # InverseJSCC's Adam
                node.iterations = min(int(node.iterations), int(settings.sampler_iterations))
    return True
