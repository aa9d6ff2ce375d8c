"""Reading one config group against a dataclass schema: types, unknown keys, one-line errors
that name the key (:func:`check_schema`), and single numbers (:func:`config_number`). The bottom
of the config layer: :mod:`singexp.config` and every module with a group of its own use it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from singexp.errors import ConfigError

S = TypeVar("S")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def config_number(key: str, value: Any, kind: type) -> Any:
    """``value`` as a finite float or a whole int (``kind``); else a ConfigError naming ``key``."""
    if kind is int:
        return _coerce(key, value, int)
    return _coerce(key, value, float)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert one config value to the schema's type or raise a ConfigError naming ``key``."""
    union = get_origin(hint) in (Union, UnionType)
    members = get_args(hint) if union else (hint,)
    if value is None:
        if type(None) in members:
            return None
        raise ConfigError(key, "must be set (it is null)")
    base = next((a for a in members if a is not type(None)), hint)
    origin = get_origin(base) or base
    if origin is float:
        if not _is_number(value):
            raise ConfigError(key, f"{value!r} is not a number; write e.g. {key}=0 or {key}=-3.5")
        return float(value)
    if origin is int:
        if isinstance(value, bool) or not _is_number(value) or float(value) != int(float(value)):
            raise ConfigError(key, f"{value!r} is not a whole number; write e.g. {key}=16")
        return int(float(value))
    if origin is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"{value!r} is not true/false")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple | ListConfig):
            raise ConfigError(key, f"{value!r} is not a list; write e.g. {key}=[-5,5]")
        items = get_args(base)
        if origin is list or items[1:] == (Ellipsis,):  # list[T], tuple[T, ...]: any length
            items = items[:1] * len(value)
        elif len(value) != len(items):
            raise ConfigError(key, f"{value!r} must have {len(items)} values")
        pairs = enumerate(zip(value, items, strict=True))
        coerced = [_coerce(f"{key}[{i}]", v, item) for i, (v, item) in pairs]
        return coerced if origin is list else tuple(coerced)
    return str(value)


def check_schema(group: str, node: Any, schema: type[S]) -> S:
    """Build the dataclass ``schema`` from the config node ``group`` (a DictConfig or a
    mapping): unknown keys and wrong types are ConfigErrors naming ``group.key``; keys left out
    take the schema's defaults. The one way singexp's config groups are read."""
    if not isinstance(node, Mapping):
        raise ConfigError(group, f"expected a config group, got {node!r}")
    hints = get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    for key in node:
        if key not in names:
            raise ConfigError(
                f"{group}.{key}", f"unknown key; known keys: {', '.join(sorted(names))}"
            )
    values = {
        name: _coerce(
            f"{group}.{name}",
            OmegaConf.to_object(node[name])
            if isinstance(node[name], DictConfig | ListConfig)
            else node[name],
            hints[name],
        )
        for name in names
        if name in node
    }
    return schema(**values)
