"""SING-Zero (Algorithm 1, SING.md §3) and the ``sampler`` config group's restorers.

:func:`sing_zero` restores a batch of DeepJSCC outputs x̂: y = A x̂, then DDNM (σ_y = 0) or
DDNM+ (σ_y > 0) through the one loop of :mod:`singexp.samplers.loop`.
:func:`restore_sing_zero` is its restorer in :mod:`singexp.samplers.registry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from singexp.config import config_number
from singexp.errors import ConfigError
from singexp.operators import LinearOperator
from singexp.samplers.base import Correction
from singexp.samplers.corrections import NullSpace, NullSpacePlus
from singexp.samplers.loop import UPDATES, Generator, TimeTravel, sample


def sing_zero(
    unet: Any,
    scheduler: Any,
    operator: LinearOperator,
    y_image: Tensor,
    *,
    sigma_y: float | Tensor = 0.0,
    steps: int = 100,
    eta: float = 0.85,
    update: str = "posterior",
    generator: Generator = None,
    time_travel: TimeTravel | None = None,
    clamp: bool = True,
    progress: bool = True,
) -> Tensor:
    """SING-Zero on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    The measurement is y = A x̂ (SING.md §3), one per image. ``sigma_y``: 0 → noise-free DDNM
    (:class:`NullSpace`), a number or one value per image → DDNM+ (:class:`NullSpacePlus`).
    ``clamp`` clips the result to [-1, 1] (which may break A x̃ = y where x̂0 leaves that
    range). Other arguments as in :func:`~singexp.samplers.loop.sample`.
    """
    y = operator.A(y_image)
    noisy = bool((torch.as_tensor(sigma_y) > 0).any())
    correction: Correction = (
        NullSpacePlus(operator, y, sigma_y) if noisy else NullSpace(operator, y)
    )
    out = sample(
        unet,
        scheduler,
        y_image.shape,
        correction,
        steps=steps,
        eta=eta,
        update=update,
        generator=generator,
        time_travel=time_travel,
        progress=progress,
        desc="SING-Zero",
    )
    return out.clamp(-1, 1) if clamp else out


# ---- config -------------------------------------------------------------------------------
#: sampler keys read elsewhere: the restorer's name and the scheduler's kind/spacing (prior.py)
SHARED_KEYS: frozenset[str] = frozenset({"name", "scheduler", "timestep_spacing"})


@dataclass(frozen=True)
class SingZeroConfig:
    """``conf/sampler/sing_zero.yaml``, checked: errors name the ``sampler.*`` key."""

    steps: int = 100
    eta: float = 0.85
    update: str = "posterior"
    sigma_y: float = 0.0
    time_travel: TimeTravel = field(default_factory=TimeTravel)
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SingZeroConfig:
        known = {f.name for f in dataclasses.fields(cls)} | SHARED_KEYS
        for key in cfg:
            if key not in known:
                raise ConfigError(f"sampler.{key}", f"unknown key; known: {sorted(known)}")
        steps = _number(cfg, "steps", 100, int)
        if not 1 <= steps <= 1000:
            raise ConfigError("sampler.steps", f"must lie in 1..1000 (T = 1000), got {steps}")
        eta = _number(cfg, "eta", 0.85, float)
        if eta < 0:
            raise ConfigError("sampler.eta", f"must be ≥ 0, got {eta}")
        update = str(cfg.get("update", "posterior"))
        if update not in UPDATES:
            raise ConfigError(
                "sampler.update", f"unknown {update!r}; choose one of {list(UPDATES)}"
            )
        sigma_y = _number(cfg, "sigma_y", 0.0, float)
        if sigma_y < 0:
            raise ConfigError("sampler.sigma_y", f"must be ≥ 0, got {sigma_y}")
        tt = cfg.get("time_travel") or {}
        for key in tt:
            if key not in {"length", "repeat", "every"}:
                raise ConfigError(
                    f"sampler.time_travel.{key}", "unknown key; known: length, repeat, every"
                )
        travel = TimeTravel(
            length=_number(tt, "length", 0, int, "time_travel."),
            repeat=_number(tt, "repeat", 1, int, "time_travel."),
            every=None if tt.get("every") is None else _number(tt, "every", 1, int, "time_travel."),
        )
        if (
            travel.length < 0
            or travel.repeat < 1
            or (travel.every is not None and travel.every < 1)
        ):
            raise ConfigError(
                "sampler.time_travel", f"needs length ≥ 0, repeat ≥ 1, every ≥ 1: {travel}"
            )
        return cls(
            steps=steps,
            eta=eta,
            update=update,
            sigma_y=sigma_y,
            time_travel=travel,
            clamp=bool(cfg.get("clamp", True)),
            progress=bool(cfg.get("progress", True)),
        )


def _number(cfg: Mapping[str, Any], key: str, default: Any, kind: type, prefix: str = "") -> Any:
    return config_number(f"sampler.{prefix}{key}", cfg.get(key, default), kind)


# ---- the restorer (registered in singexp.samplers.registry) --------------------------------
def restore_sing_zero(
    cfg: Mapping[str, Any],
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    operator: LinearOperator,
    generator: Generator = None,
    **_: Any,
) -> Tensor:
    c = SingZeroConfig.from_config(cfg)
    return sing_zero(
        unet,
        scheduler,
        operator,
        x_hat,
        sigma_y=c.sigma_y,
        steps=c.steps,
        eta=c.eta,
        update=c.update,
        generator=generator,
        time_travel=c.time_travel,
        clamp=c.clamp,
        progress=c.progress,
    )
