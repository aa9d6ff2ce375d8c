"""SING-Zero (Algorithm 1, paper: SING-Zero) and the ``sampler`` config group's shared keys.

:func:`sing_zero` restores a batch of DeepJSCC outputs x̂: y = A x̂, then DDNM (σ_y = 0) or
DDNM+ (σ_y > 0) through the one loop of :mod:`singexp.samplers.loop`.
:func:`restore_sing_zero` is its restorer in :mod:`singexp.samplers.registry`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

import torch
from torch import Tensor

from singexp.errors import ConfigError
from singexp.operators import LinearOperator
from singexp.samplers.base import Correction
from singexp.samplers.corrections import NullSpace, NullSpacePlus
from singexp.samplers.loop import (
    UPDATES,
    Generator,
    LoopOptions,
    TimeTravel,
    loop_options,
    sample_restoration,
)
from singexp.samplers.schedulers import MULTISTEP_KINDS
from singexp.schema import config_number

#: ``sigma_y`` value that asks for σ_y measured from the codec at the test SNR
#: (docs/guide/methods.md)
SIGMA_Y_AUTO = "auto"


def sing_zero(
    unet: Any,
    scheduler: Any,
    operator: LinearOperator,
    y_image: Tensor,
    *,
    sigma_y: float | Tensor = 0.0,
    **options: Unpack[LoopOptions],
) -> Tensor:
    """SING-Zero on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    The measurement is y = A x̂ (paper: SING-Zero), one per image. ``sigma_y``: 0 → noise-free DDNM
    (:class:`NullSpace`), a number or one value per image → DDNM+ (:class:`NullSpacePlus`).
    ``clip_x0`` clips x̂0|t at every step (off: DDNM does not clip); ``clamp`` clips the result
    to [-1, 1] (which may break A x̃ = y where x̂0 leaves that range). ``options``: the loop's
    keywords (:class:`~singexp.samplers.loop.LoopOptions`, defaults
    :data:`~singexp.samplers.loop.RESTORER_DEFAULTS`), as in :func:`~singexp.samplers.loop.sample`.
    """
    y = operator.A(y_image)
    noisy = bool((torch.as_tensor(sigma_y) > 0).any())
    correction: Correction = (
        NullSpacePlus(operator, y, sigma_y) if noisy else NullSpace(operator, y)
    )
    return sample_restoration(unet, scheduler, y_image.shape, correction, "SING-Zero", options)


# ---- config -------------------------------------------------------------------------------
#: sampler keys read elsewhere: the restorer's name and the scheduler's kind/spacing
#: (samplers/schedulers.py)
SHARED_KEYS: frozenset[str] = frozenset({"name", "scheduler", "timestep_spacing"})


class Keys:
    """Reads one sampler config node; errors name the key as the user wrote it
    (``sampler.eta`` or ``methods.sing_inn.eta``)."""

    def __init__(self, cfg: Mapping[str, Any], prefix: str, known: set[str]) -> None:
        self.cfg, self.prefix = cfg, prefix
        for key in cfg:
            if key not in known:
                raise ConfigError(self.key(key), f"unknown key; known: {sorted(known)}")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def number(self, name: str, default: Any, kind: type, node: Mapping[str, Any] | None = None):
        source = self.cfg if node is None else node
        return config_number(self.key(name), source.get(name.split(".")[-1], default), kind)

    def flag(self, name: str, default: bool) -> bool:
        value = self.cfg.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"{value!r} is not true or false")
        return value

    def flags(self, **defaults: bool) -> dict[str, bool]:
        """:meth:`flag` of each ``name=default``, in that order."""
        return {name: self.flag(name, default) for name, default in defaults.items()}

    def choice(self, name: str, default: str, options: Any) -> str:
        value = str(self.cfg.get(name, default))
        if value not in options:
            raise ConfigError(self.key(name), f"unknown {value!r}; choose one of {list(options)}")
        return value

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.key(name), message)


@dataclass(frozen=True)
class SingZeroConfig:
    """``conf/sampler/sing_zero.yaml``, checked: errors name the key under ``prefix``."""

    steps: int = 100
    eta: float = 0.85
    update: str = "posterior"
    sigma_y: float | str = 0.0
    time_travel: TimeTravel = field(default_factory=TimeTravel)
    clip_x0: bool = False
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], prefix: str = "sampler", extra: frozenset[str] = frozenset()
    ) -> SingZeroConfig:
        """Check the keys SING-Zero and SING-INN share; ``extra``: the caller's own keys."""
        known = {f.name for f in dataclasses.fields(cls)} | SHARED_KEYS | extra
        k = Keys(cfg, prefix, known)
        steps = k.number("steps", 100, int)
        if not 1 <= steps <= 1000:
            raise k.fail("steps", f"must lie in 1..1000 (T = 1000), got {steps}")
        eta = k.number("eta", 0.85, float)
        if not 0 <= eta <= 1:
            raise k.fail("eta", f"must lie in [0, 1] (0: DDIM, 1: DDPM posterior), got {eta}")
        update = k.choice("update", "posterior", UPDATES)
        sigma_y: float | str = SIGMA_Y_AUTO
        if str(cfg.get("sigma_y", 0.0)).strip().lower() != SIGMA_Y_AUTO:
            sigma_y = number = k.number("sigma_y", 0.0, float)
            if number < 0:
                raise k.fail("sigma_y", f"must be ≥ 0 or auto, got {number}")
        tt = cfg.get("time_travel") or {}
        for key in tt:
            if key not in {"length", "repeat", "every"}:
                raise k.fail(f"time_travel.{key}", "unknown key; known: length, repeat, every")
        every = tt.get("every")
        travel = TimeTravel(
            length=k.number("time_travel.length", 0, int, tt),
            repeat=k.number("time_travel.repeat", 1, int, tt),
            every=None if every is None else k.number("time_travel.every", 1, int, tt),
        )
        if str(cfg.get("scheduler", "ddim")) in MULTISTEP_KINDS:
            check_multistep_config(k, eta, update, sigma_y, travel)
        if (
            travel.length < 0
            or travel.repeat < 1
            or (travel.every is not None and travel.every < 1)
        ):
            raise k.fail("time_travel", f"needs length ≥ 0, repeat ≥ 1, every ≥ 1: {travel}")
        return cls(
            steps=steps,
            eta=eta,
            update=update,
            sigma_y=sigma_y,
            time_travel=travel,
            **k.flags(clip_x0=False, clamp=True, progress=True),
        )

    def sigma_y_value(self, measured: float | None) -> float:
        """σ_y as a number: ``measured`` (the codec's, at the test SNR) when ``auto``."""
        if self.sigma_y != SIGMA_Y_AUTO:
            return float(self.sigma_y)
        if measured is None or not math.isfinite(measured):
            raise ConfigError("sampler.sigma_y", "auto needs σ_y measured from the codec")
        return float(measured)


def check_multistep_config(
    k: Keys, eta: float, update: str, sigma_y: float | str, travel: TimeTravel
) -> None:
    """A multistep solver (``scheduler: dpmsolver++ | unipc``) is deterministic and keeps the
    previous steps' x̂0: η 0, the posterior form, no DDNM+ and no time travel
    (:mod:`~singexp.samplers.loop`)."""
    kind = k.cfg.get("scheduler")
    if eta != 0.0:
        raise k.fail("eta", f"scheduler {kind} is deterministic (η = 0): set eta=0.0, got {eta}")
    if update != "posterior":
        raise k.fail("update", f"scheduler {kind} takes its step itself: set update=posterior")
    if sigma_y != 0.0:
        raise k.fail("sigma_y", f"DDNM+ shares out fresh noise, which {kind} has none of: set 0.0")
    if travel.enabled:
        raise k.fail("time_travel", f"scheduler {kind} cannot revisit timesteps: set repeat=1")


# ---- the restorer (registered in singexp.samplers.registry) --------------------------------
def restore_sing_zero(
    c: SingZeroConfig,
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    operator: LinearOperator,
    generator: Generator = None,
    sigma_y: float | None = None,
    **_: Any,
) -> Tensor:
    """``sigma_y``: the measured σ_y that ``sigma_y=auto`` stands for (tasks measure it)."""
    return sing_zero(
        unet,
        scheduler,
        operator,
        x_hat,
        sigma_y=c.sigma_y_value(sigma_y),
        **loop_options(c, generator),
    )
