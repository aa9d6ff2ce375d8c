"""``quick=true``: the small form of any experiment (``conf/quick.yaml``), applied to the
composed config before it is validated.

Quick wins over the experiment's own settings but never over the command line: a key the user
gave (``quick=true dataset.test_size=4``) keeps the user's value, which is then validated like
any other (``dataset.batch_size=abc quick=true`` fails naming the key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from singexp.config import CONF_DIR
from singexp.errors import ConfigError


@dataclass(frozen=True)
class Quick:
    """What :func:`apply_quick` did: whether it applied, the ``key=value`` it set and the keys
    of ``conf/quick.yaml`` it left because the command line gave them. True when applied."""

    applied: bool
    set: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.applied

    def describe(self) -> str:
        """One line for the config print: what quick set and what it left to the user."""
        parts = [f"set {', '.join(self.set)}" if self.set else "set nothing"]
        if self.kept:
            parts.append(f"kept the command line's {', '.join(self.kept)}")
        return "; ".join(parts)


def command_line_keys(overrides: Iterable[str], conf_dir: Path = CONF_DIR) -> set[str]:
    """The dotted config keys that ``overrides`` set (``dataset.test_size=4``,
    ``+prior.x=1``, ``~a.b``); group choices (``dataset=shapes``, ``+experiment=...``) and
    Hydra's own keys are not values the user set."""
    keys = set()
    for override in overrides:
        key, sep, _ = override.partition("=")
        key = key.lstrip("+~")
        if not key or key.startswith("hydra") or "/" in key or "@" in key:
            continue
        if not sep and not override.startswith("~"):
            continue
        if "." not in key and (conf_dir / key).is_dir():
            continue  # a group option
        keys.add(key)
    return keys


def _given(key: str, user: set[str]) -> bool:
    """Whether the user set ``key`` itself or a node above it."""
    return any(key == u or key.startswith(f"{u}.") for u in user)


def _quick_node(
    node: DictConfig, values: Any, prefix: str, user: set[str], done: list[str], kept: list[str]
) -> None:
    """Set ``values`` (a mapping) into ``node``: keys the node has, and new keys only in a
    ``_target_`` node (a third-party signature such as lightning.Trainer), never in singexp's
    schema-checked groups, where an unknown key is an error; never a key the user gave."""
    for key, value in values.items():
        current = node.get(key) if key in node else None
        dotted = f"{prefix}{key}"
        if isinstance(value, DictConfig) and isinstance(current, DictConfig):
            _quick_node(current, value, f"{dotted}.", user, done, kept)
        elif key in node or "_target_" in node:
            if _given(dotted, user):
                kept.append(dotted)
                continue
            node[key] = value
            done.append(f"{dotted}={value}")


def command_line_overrides() -> list[str]:
    """The job's overrides as Hydra received them; none outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def apply_quick(
    cfg: DictConfig, conf_dir: Path = CONF_DIR, overrides: Sequence[str] | None = None
) -> Quick:
    """``quick=true``: set ``conf/quick.yaml`` into the composed config over the experiment's own
    settings (few images, epochs and batches; ``sampler_steps`` steps for the ``sampler`` and
    every ``methods.<name>``, at most ``sampler_iterations`` iterations), except the keys the
    command line gave: ``overrides`` (default: the Hydra job's own, none outside Hydra).
    ``quick`` other than a boolean is a one-line error."""
    quick = cfg.get("quick", False)
    if not isinstance(quick, bool):
        raise ConfigError("quick", f"must be true or false, got {quick!r}")
    if not quick:
        return Quick(False)
    user = command_line_keys(command_line_overrides() if overrides is None else overrides)
    settings = OmegaConf.load(conf_dir / "quick.yaml")
    done: list[str] = []
    kept: list[str] = []
    with open_dict(cfg):
        _quick_node(cfg, settings.set, "", user, done, kept)
        stepped = []
        samplers = {"sampler": cfg.get("sampler")}
        samplers.update({f"methods.{k}": v for k, v in (cfg.get("methods") or {}).items()})
        for prefix, node in samplers.items():
            if not isinstance(node, DictConfig):
                continue
            if "steps" in node:
                if _given(f"{prefix}.steps", user):
                    kept.append(f"{prefix}.steps")
                else:
                    node.steps = int(settings.sampler_steps)
                    stepped.append(prefix)
            if "iterations" in node:  # InverseJSCC's Adam
                if _given(f"{prefix}.iterations", user):
                    kept.append(f"{prefix}.iterations")
                else:
                    node.iterations = min(int(node.iterations), int(settings.sampler_iterations))
                    done.append(f"{prefix}.iterations={node.iterations}")
        if stepped:
            done.append(f"{int(settings.sampler_steps)} steps for {', '.join(stepped)}")
    return Quick(True, tuple(done), tuple(kept))
