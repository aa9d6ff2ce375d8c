"""Model weights that are not finite (NaN or inf): refused when a model file is loaded
(:func:`check_finite`, one line naming the config key and the file) and named when sampling
meets non-finite values (:func:`nonfinite_files`: the loaded files whose weights are not finite
now, e.g. after a cast to float16 overflowed them), instead of a hint about the settings."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from singexp.errors import ConfigError

#: the model files loaded in this process: module -> (config key, file)
_LOADED: weakref.WeakKeyDictionary[nn.Module, tuple[str, str]] = weakref.WeakKeyDictionary()


def first_nonfinite(tensors: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, else None."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def _state(module: nn.Module) -> Iterable[tuple[str, Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def check_finite(key: str, path: str | Path, module: nn.Module) -> None:
    """A one-line ConfigError naming ``key`` and ``path`` when ``module`` (just loaded from
    ``path``) has a non-finite weight; else remember it for :func:`nonfinite_files`."""
    name = first_nonfinite(_state(module))
    if name is not None:
        raise ConfigError(
            key,
            f"{path} holds non-finite weights (NaN or inf, first in {name}): the file is "
            "corrupt or its training diverged; re-export or retrain it",
        )
    remember(module, key, path)


def remember(module: nn.Module, key: str, path: str | Path) -> None:
    """Record that ``module`` was loaded from ``path`` (config key ``key``)."""
    _LOADED[module] = (key, str(path))


def nonfinite_files() -> list[str]:
    """``"KEY=FILE"`` of each loaded model whose weights are not finite now."""
    found = []
    for module, (key, path) in list(_LOADED.items()):
        if first_nonfinite(_state(module)) is not None:
            found.append(f"{key}={path}")
    return sorted(set(found))
