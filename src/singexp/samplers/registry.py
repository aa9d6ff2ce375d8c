"""The restorers by ``sampler.name``: one table, one entry point for every method."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from singexp.errors import ConfigError
from singexp.samplers.compute import ComputeConfig
from singexp.samplers.deepinv_methods import (
    DDRMConfig,
    DiffPIRConfig,
    restore_ddrm,
    restore_diffpir,
)
from singexp.samplers.dps_jscc import DPSJSCCConfig, restore_dps_jscc
from singexp.samplers.inverse_jscc import InverseJSCCConfig, restore_inverse_jscc
from singexp.samplers.sing_inn import SingINNConfig, restore_sing_inn
from singexp.samplers.sing_zero import SingZeroConfig, restore_sing_zero


def restore_none(c: Any, x_hat: Tensor, **_: Any) -> Tensor:
    """No restoration: evaluate DeepJSCC alone."""
    return x_hat


def _no_keys(cfg: Mapping[str, Any], prefix: str) -> None:
    for key in cfg:
        if key != "name":
            raise ConfigError(f"{prefix}.{key}", "unknown key; sampler=none has no settings")


#: ``sampler.name`` -> (config check, restorer(config, x_hat, *, unet, scheduler, operator, inn,
#: codec, generator, snr_db, sigma_y)); ``dps_jscc`` and ``inverse_jscc`` are the baselines that
#: run the DeepJSCC chain itself as their forward model (``codec``); ``diffpir`` and ``ddrm``
#: run deepinv's samplers (samplers/deepinv_methods.py), ``diffpir`` with the chain if asked
SAMPLERS: dict[str, tuple[Callable[..., Any], Callable[..., Tensor]]] = {
    "none": (_no_keys, restore_none),
    "sing_zero": (SingZeroConfig.from_config, restore_sing_zero),
    "sing_inn": (SingINNConfig.from_config, restore_sing_inn),
    "dps_jscc": (DPSJSCCConfig.from_config, restore_dps_jscc),
    "inverse_jscc": (InverseJSCCConfig.from_config, restore_inverse_jscc),
    "diffpir": (DiffPIRConfig.from_config, restore_diffpir),
    "ddrm": (DDRMConfig.from_config, restore_ddrm),
}
#: the methods that take the run's codec (``codec`` component): the DeepJSCC chain as A
CODEC_METHODS: tuple[str, ...] = ("dps_jscc", "inverse_jscc", "diffpir")


@dataclass(frozen=True)
class Method:
    """A checked sampler config: ``name`` in :data:`SAMPLERS`, ``config`` its dataclass,
    ``prefix`` the key it came from, ``raw`` the node as written (scheduler keys included)."""

    name: str
    config: Any
    prefix: str = "sampler"
    raw: Mapping[str, Any] = field(default_factory=dict)


def check_method(cfg: Mapping[str, Any], prefix: str = "sampler") -> Method:
    """Check one sampler config node before anything runs; errors name ``prefix.key``."""
    name = str(cfg.get("name", "none"))
    entry = SAMPLERS.get(name)
    if entry is None:
        raise ConfigError(f"{prefix}.name", f"unknown {name!r}; choose one of {list(SAMPLERS)}")
    return Method(name, entry[0](cfg, prefix), prefix, dict(cfg))


def restore(
    method: Method | Mapping[str, Any],
    x_hat: Tensor,
    *,
    compute: ComputeConfig | None = None,
    **components: Any,
) -> Tensor:
    """Run the restorer of ``method`` (a :class:`Method` or a sampler config node) on x̂.

    ``components``: what the restorers need (``unet``, ``scheduler``, ``operator``, ``inn``,
    ``codec``, ``generator``, ``snr_db``, ``sigma_y``); each takes what it uses; ``none`` needs
    nothing. ``compute``: precision and guidance micro-batch of the call (:mod:`.compute`);
    the result is in x̂'s dtype.
    """
    if not isinstance(method, Method):
        method = check_method(method)
    with (compute or ComputeConfig()).running(x_hat.device):
        out = SAMPLERS[method.name][1](method.config, x_hat, **components)
    return out.to(x_hat.dtype)


def restorer(method: Method, components: Mapping[str, Any]) -> Callable[..., Tensor]:
    """``method`` bound to its ``components`` (:func:`restore`'s): the restorer an evaluation
    calls as ``restorer(x_hat, snr_db, generator)`` (each call's test SNR and noise)."""

    def run(x_hat: Tensor, snr_db: Tensor, generator: Any) -> Tensor:
        return restore(method, x_hat, generator=generator, snr_db=snr_db, **components)

    return run


def methods_from_config(
    methods: Mapping[str, Any] | None, sampler: Mapping[str, Any] | None
) -> dict[str, Method]:
    """The restorers a run evaluates, checked before anything runs: ``methods`` (name → sampler
    config; errors name ``methods.<name>.<key>``) or the one ``sampler`` (none: no restorer)."""
    if methods:
        if sampler and (sampler.get("name", "none") != "none" or len(sampler) > 1):
            first = next(iter(methods))
            raise ConfigError(
                "sampler",
                f"is ignored by this experiment, which evaluates methods {', '.join(methods)}; "
                f"set their keys instead, e.g. methods.{first}.steps=10",
            )
        return {
            str(name): check_method(dict(node), f"methods.{name}") for name, node in methods.items()
        }
    if not sampler or sampler.get("name", "none") == "none":
        return {}
    return {str(sampler["name"]): check_method(dict(sampler))}
