"""SING-INN (Algorithm 2, SING.md §4): INN guidance as an x0 correction of the one loop.

The measurement is c_y = coarse(x̂) = A x̂ (s×s average pooling, s = the INN's scale: the
same definition the INN was trained with, :meth:`ConditionalINN.coarse`). At every step

    (c_t, d_t) = f(x0|t; snr)
    x_inv      = f⁻¹(c_y, d_t; snr)             x0|t's details on the measurement's coarse part
    x̂0|t       = x0|t − ζ ∇_{x0|t} ‖x0|t − x_inv‖²

then the usual update to t' (:mod:`~singexp.samplers.loop`). ``gradient``:

- ``autograd`` (default): the exact gradient, through x_inv's dependence on x0|t via d_t
  (one INN forward + inverse + their backward per step).
- ``constant``: x_inv treated as a constant, ∇ = 2(x0|t − x_inv), so
  x̂0|t = x0|t − 2ζ (x0|t − x_inv); no backward pass (ζ = ½ replaces x0|t by x_inv).

With identity couplings (a fresh INN: the pure Haar split) both give
x0|t − 2ζ A†(A x0|t − c_y): at ζ = ½ exactly DDNM's null-space correction (SING-Zero).
The DPS-style gradient w.r.t. x_t through the UNet needs the loop to keep the UNet's graph and
is not offered here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from singexp.errors import ConfigError
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool
from singexp.samplers.base import Correction, StepInfo
from singexp.samplers.corrections import NullSpace
from singexp.samplers.loop import Generator, TimeTravel, sample
from singexp.samplers.sing_zero import SHARED_KEYS, SingZeroConfig

GRADIENTS: tuple[str, ...] = ("autograd", "constant")


def as_inn(inn: Any) -> ConditionalINN:
    """The ConditionalINN of an INNModule (``.inn``) or the network itself."""
    net = inn.inn if hasattr(inn, "inn") and isinstance(inn.inn, ConditionalINN) else inn
    if not isinstance(net, ConditionalINN):
        raise TypeError(f"expected a ConditionalINN or an INNModule, got {type(inn).__name__}")
    return net


class INNGuidance(Correction):
    """x̂0 = x0 − ζ ∇_{x0} ‖x0 − f⁻¹(c_y, d(x0); snr)‖² per image (module docstring).

    ``c_y``: the measurement (B, C, H/s, W/s); ``snr_db``: (B,) or a number; ``zeta``: a number
    or one value per image (B,). The INN's weights are not changed (no parameter gradients).
    """

    def __init__(
        self,
        inn: Any,
        c_y: Tensor,
        snr_db: Tensor | float,
        zeta: float | Tensor = 0.5,
        gradient: str = "autograd",
    ) -> None:
        if gradient not in GRADIENTS:
            raise ConfigError(
                "sampler.gradient", f"unknown {gradient!r}; choose one of {GRADIENTS}"
            )
        self.inn = as_inn(inn)
        self.c_y = c_y
        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=c_y.device)
        self.snr_db = snr.expand(c_y.shape[0]) if snr.ndim == 0 else snr
        zeta_t = torch.as_tensor(zeta, dtype=c_y.dtype, device=c_y.device)
        self.zeta = zeta_t.reshape(-1, 1, 1, 1) if zeta_t.ndim == 1 else zeta_t
        self.gradient = gradient

    def inverse_estimate(self, x0: Tensor) -> Tensor:
        """x_inv = f⁻¹(c_y, d(x0); snr).

        x0 is clipped to the image range [-1, 1] first, as the scheduler clips x0|t
        (``clip_sample``): at early steps x0|t = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t reaches hundreds, far
        outside what the INN was trained on, and its exponential couplings overflow.
        """
        _, d = self.inn(x0.clamp(-1, 1), self.snr_db)
        return self.inn.inverse(self.c_y, d, self.snr_db)

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        if self.gradient == "constant":
            with torch.no_grad():
                x_inv = self.inverse_estimate(x0)
            return x0 - 2 * self.zeta * (x0 - x_inv)
        with torch.enable_grad():  # the loop runs under no_grad; only x0's gradient is taken
            x = x0.detach().requires_grad_(True)
            loss = (x - self.inverse_estimate(x)).pow(2).sum()  # a sum over images: per-image ∇
            (grad,) = torch.autograd.grad(loss, x)
        return x0 - self.zeta * grad

    def __repr__(self) -> str:
        return f"INNGuidance(scale={self.inn.scale}, gradient={self.gradient!r})"


class TwoPhase(Correction):
    """``early`` while the step's timestep is ≥ ``switch_t``, ``late`` below it.

    SING-INN's default (our choice where SING.md §4 is open): the INN was trained on images, and
    at high noise x0|t is far from one, so its inverse there is unreliable (measured: guidance at
    every step lowers PSNR by 3 dB on the embedded default). Early steps therefore keep
    consistency with the INN's *linear* coarse part (DDNM null-space filling with
    A = average pooling by ``inn.scale``, exactly the INN's c for identity couplings); once
    t < ``switch_t`` the INN guidance takes over.
    """

    def __init__(self, early: Correction, late: Correction, switch_t: int) -> None:
        self.early, self.late, self.switch_t = early, late, int(switch_t)

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        phase = self.early if int(step.timestep) >= self.switch_t else self.late
        return phase(x0, step)

    def __repr__(self) -> str:
        return f"TwoPhase({self.early!r} until t<{self.switch_t}, then {self.late!r})"


def sing_inn(
    unet: Any,
    scheduler: Any,
    inn: Any,
    y_image: Tensor,
    snr_db: Tensor | float,
    *,
    zeta: float | Tensor = 0.5,
    gradient: str = "autograd",
    switch_t: int = 0,
    steps: int = 100,
    eta: float = 0.85,
    update: str = "posterior",
    generator: Generator = None,
    time_travel: TimeTravel | None = None,
    clamp: bool = True,
    progress: bool = True,
) -> Tensor:
    """SING-INN on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    c_y = coarse(x̂) (the INN's A); ``snr_db``: the channel SNR per image (B,) or a number (the
    INN's conditioning). ``switch_t`` > 0: null-space consistency with the INN's linear coarse
    operator for timesteps ≥ ``switch_t``, INN guidance below (:class:`TwoPhase`); 0: INN guidance
    at every step. Other arguments as in :func:`~singexp.samplers.sing_zero.sing_zero`.
    The same ``generator`` seed gives identical outputs.
    """
    net = as_inn(inn)
    param = next(unet.parameters())
    net.to(param.device)
    x_hat = y_image.to(param.device, param.dtype)
    with torch.no_grad():
        c_y = net.coarse(x_hat)
    correction: Correction = INNGuidance(net, c_y, snr_db, zeta, gradient)
    if switch_t > 0:
        correction = TwoPhase(NullSpace(AveragePool(net.scale), c_y), correction, switch_t)
    out = sample(
        unet,
        scheduler,
        x_hat.shape,
        correction,
        steps=steps,
        eta=eta,
        update=update,
        generator=generator,
        time_travel=time_travel,
        progress=progress,
        desc="SING-INN",
    )
    return out.clamp(-1, 1) if clamp else out


# ---- config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SingINNConfig:
    """``conf/sampler/sing_inn.yaml``, checked: errors name the ``sampler.*`` key."""

    steps: int = 100
    eta: float = 0.85
    update: str = "posterior"
    zeta: float = 0.5
    gradient: str = "autograd"
    switch_t: int = 0
    time_travel: TimeTravel = dataclasses.field(default_factory=TimeTravel)
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SingINNConfig:
        known = {f.name for f in dataclasses.fields(cls)} | SHARED_KEYS
        for key in cfg:
            if key not in known:
                raise ConfigError(f"sampler.{key}", f"unknown key; known: {sorted(known)}")
        # the keys shared with SING-Zero are checked by its schema (same names, same messages)
        shared = SingZeroConfig.from_config(
            {k: v for k, v in cfg.items() if k not in ("zeta", "gradient", "switch_t")}
        )
        zeta = cfg.get("zeta", 0.5)
        try:
            if isinstance(zeta, bool):
                raise ValueError
            zeta = float(zeta)
        except (TypeError, ValueError):
            raise ConfigError("sampler.zeta", f"{zeta!r} is not a number") from None
        if not math.isfinite(zeta) or zeta < 0:
            raise ConfigError("sampler.zeta", f"must be a finite number ≥ 0, got {zeta}")
        gradient = str(cfg.get("gradient", "autograd"))
        if gradient not in GRADIENTS:
            raise ConfigError(
                "sampler.gradient", f"unknown {gradient!r}; choose one of {list(GRADIENTS)}"
            )
        switch_t = cfg.get("switch_t", 0)
        if isinstance(switch_t, bool) or not isinstance(switch_t, int) or switch_t < 0:
            raise ConfigError("sampler.switch_t", f"must be a whole number ≥ 0, got {switch_t!r}")
        return cls(
            switch_t=switch_t,
            steps=shared.steps,
            eta=shared.eta,
            update=shared.update,
            zeta=zeta,
            gradient=gradient,
            time_travel=shared.time_travel,
            clamp=shared.clamp,
            progress=shared.progress,
        )


def restore_sing_inn(
    cfg: Mapping[str, Any],
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    inn: Any = None,
    generator: Generator = None,
    snr_db: Tensor | float = 0.0,
    **_: Any,
) -> Tensor:
    """The ``sing_inn`` restorer for :data:`~singexp.samplers.registry.SAMPLERS`.

    ``inn``: a ConditionalINN or INNModule (:func:`~singexp.modules.inn.load_inn`);
    ``snr_db``: the channel SNR per image (B,) (the INN's conditioning).
    """
    if inn is None:
        raise ConfigError(
            "inn.checkpoint", "sampler=sing_inn needs a trained INN; set inn.checkpoint=PATH"
        )
    c = SingINNConfig.from_config(cfg)
    return sing_inn(
        unet,
        scheduler,
        inn,
        x_hat,
        snr_db,
        zeta=c.zeta,
        gradient=c.gradient,
        switch_t=c.switch_t,
        steps=c.steps,
        eta=c.eta,
        update=c.update,
        generator=generator,
        time_travel=c.time_travel,
        clamp=c.clamp,
        progress=c.progress,
    )
