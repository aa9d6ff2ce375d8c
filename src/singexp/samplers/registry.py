"""The restorers by ``sampler.name``: one table, one entry point for every method."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from singexp.errors import ConfigError
from singexp.samplers.sing_inn import restore_sing_inn
from singexp.samplers.sing_zero import restore_sing_zero


def restore_none(cfg: Mapping[str, Any], x_hat: Tensor, **_: Any) -> Tensor:
    """No restoration: evaluate DeepJSCC alone."""
    return x_hat


#: ``sampler.name`` -> restorer(cfg, x_hat, *, unet, scheduler, operator, inn, generator, snr_db)
SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "none": restore_none,
    "sing_zero": restore_sing_zero,
    "sing_inn": restore_sing_inn,
}


def restore(cfg: Mapping[str, Any], x_hat: Tensor, **components: Any) -> Tensor:
    """Run the restorer named by ``cfg['name']`` on the DeepJSCC outputs ``x_hat``.

    ``components``: what the restorers need (``unet``, ``scheduler``, ``operator``, ``inn``,
    ``generator``, ``snr_db``); each takes what it uses; ``none`` needs nothing.
    """
    name = str(cfg.get("name", "none"))
    restorer = SAMPLERS.get(name)
    if restorer is None:
        raise ConfigError("sampler.name", f"unknown {name!r}; choose one of {list(SAMPLERS)}")
    return restorer(cfg, x_hat, **components)
