"""SING-INN (Algorithm 2, paper: SING-INN): INN guidance as a correction of the one loop.

The measurement is c_y = coarse(x̂) = A x̂ (s×s average pooling, s = the INN's scale: the
same definition the INN was trained with, :meth:`ConditionalINN.coarse`; by default the same A
as SING-Zero's at the point, ``measurement=operator``). At every step (``variant=algorithm2``)

    (c_t, d_t) = f(x0|t; snr)
    x_inv      = f⁻¹(c_y, d_t; snr)             x0|t's details on the measurement's coarse part
    L          = ‖x0|t − x_inv‖²
    x̂0|t       = x0|t − ζ_t ∇_{x0|t} L          (gradient=autograd | constant)
    or x_t'    = x_t' − ζ_t/√L · ∇_{x_t} L      (gradient=dps, through the UNet)

then the usual update to t' (:mod:`~singexp.samplers.loop`). ``gradient``:

- ``dps`` (default): diffusion posterior sampling (Chung et al., ICLR 2023, Algorithm 1 with
  ζ_i = ζ/‖r‖): the gradient of L with respect to x_t through the UNet, applied to x_t'.
- ``autograd``: the exact x0-space gradient, through x_inv's dependence on x0|t via d_t (one
  INN forward + inverse + their backward per step).
- ``constant``: x_inv treated as a constant, ∇ = 2(x0|t − x_inv), so
  x̂0|t = x0|t − 2ζ (x0|t − x_inv); no backward pass (ζ = ½ replaces x0|t by x_inv).

ζ_t = ζ (``zeta_schedule=constant``) or ζ √ᾱ_t (``sqrt_alpha_bar``, the default: weak while
x0|t is mostly noise; the paper leaves the schedule open). ``guidance_every`` / ``guidance_last``
(ours, for few-step sampling; default every step as Algorithm 2): guidance only at every k-th
step or the last m steps (:class:`~singexp.samplers.base.GuidanceSteps`); an unguided step
costs the UNet forward alone. The INN's forward of the received image is not repeated per step:
c_y = coarse(x̂) is computed once per image; what runs per step is f(x0|t) and f⁻¹(c_y, d_t).
``variant=two_phase`` (ours, not the paper's) keeps DDNM null-space consistency with the INN's
linear coarse part for timesteps ≥ ``switch_t`` and guides below.

Why ``dps`` is the default (measured, docs/guide/methods.md): the embedded INN's inverse
f⁻¹(c_y, d) is exact for d of a clean image but, for d of a blurry or noisy x0|t (every step
but the last few), it returns colour-shifted images with a period-2 checkerboard (its finest
Haar level). The x0-space forms write that x_inv into x̂0|t at every step, so the artifacts
accumulate (the grid pattern of the earlier default, ``two_phase`` + ``constant``, whose output
is the last x_inv); through the UNet's Jacobian (``dps``) they are filtered out.

With identity couplings (a fresh INN: the pure Haar split) the x0-space forms give
x0|t − 2ζ A†(A x0|t − c_y): at ζ = ½ exactly DDNM's null-space correction (SING-Zero).
The INN sees x0|t clipped to [−1, 1] (the image range it was trained on; at early steps x0|t
reaches hundreds and its exponential couplings would overflow): results record this.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Unpack

import torch
from torch import Tensor

from singexp.errors import ConfigError
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool, LinearOperator
from singexp.samplers.base import (
    ZETA_SCHEDULES,
    Correction,
    Guidance,
    GuidanceSteps,
    StepInfo,
)
from singexp.samplers.corrections import NullSpace
from singexp.samplers.loop import (
    Generator,
    LoopOptions,
    TimeTravel,
    loop_options,
    sample_restoration,
    settings_of,
)
from singexp.samplers.sing_zero import Keys, SingZeroConfig

VARIANTS: tuple[str, ...] = ("algorithm2", "two_phase")
GRADIENTS: tuple[str, ...] = ("autograd", "constant", "dps")
MEASUREMENTS: tuple[str, ...] = ("operator", "inn")


def as_inn(inn: Any) -> ConditionalINN:
    """The ConditionalINN of an INNModule (``.inn``) or the network itself."""
    net = inn.inn if hasattr(inn, "inn") and isinstance(inn.inn, ConditionalINN) else inn
    if not isinstance(net, ConditionalINN):
        raise TypeError(f"expected a ConditionalINN or an INNModule, got {type(inn).__name__}")
    return net


@contextmanager
def prepared(module: torch.nn.Module) -> Iterator[None]:
    """``module`` set up for guidance while sampling, then restored as it was.

    - No parameter requires gradients: the guidance differentiates only with respect to images,
      and with trainable parameters (an INN loaded for evaluation keeps them) autograd would
      record every weight's edges.
    - 4-d weights (the convolutions) in channels-last layout: the INN's forward + inverse took
      ×0.90 (and with their backward ×0.91) of the CPU time at the main job's batch (median of
      9 paired rounds, 1 thread); the values are the same, the results equal up to float
      rounding (≈ 1e-6).
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    layouts = [(p, p.data) for p in module.parameters() if p.ndim == 4]
    for p in trainable:
        p.requires_grad_(False)
    for p, data in layouts:
        p.data = data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, data in layouts:
            p.data = data
        for p in trainable:
            p.requires_grad_(True)


class INNGuidance(Guidance):
    """INN guidance of Algorithm 2 (module docstring), per image.

    ``c_y``: the measurement (B, C, H/s, W/s); ``snr_db``: (B,) or a number; ``zeta``: a number
    or one value per image (B,). The INN's weights are not changed (no parameter gradients).
    """

    def __init__(
        self,
        inn: Any,
        c_y: Tensor,
        snr_db: Tensor | float,
        zeta: float | Tensor,
        gradient: str,
        zeta_schedule: str,
        guided_steps: GuidanceSteps | None = None,
    ) -> None:
        if gradient not in GRADIENTS:
            raise ConfigError(
                "sampler.gradient", f"unknown {gradient!r}; choose one of {GRADIENTS}"
            )
        super().__init__(zeta, zeta_schedule, like=c_y, guided_steps=guided_steps)
        self.per_image = ("c_y", "snr_db")
        self.inn = as_inn(inn)
        self.c_y = c_y
        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=c_y.device)
        self.snr_db = snr.expand(c_y.shape[0]) if snr.ndim == 0 else snr
        self.gradient = gradient
        self.guides_x_t = gradient == "dps"

    def inverse_estimate(self, x0: Tensor) -> Tensor:
        """x_inv = f⁻¹(c_y, d(clip(x0)); snr) (module docstring)."""
        _, d = self.inn(x0.clamp(-1, 1), self.snr_db)
        return self.inn.inverse(self.c_y, d, self.snr_db)

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        if self.gradient == "dps":  # guidance acts on x_t' (x_t_guidance)
            return x0
        if not (
            self.guided_steps.all or self.active(step)
        ):  # an unguided step (guidance_every/_last)
            return x0
        zeta = self.zeta_at(step)
        if self.gradient == "constant":
            with torch.no_grad():
                x_inv = self.inverse_estimate(x0)
            return x0 - 2 * zeta * (x0 - x_inv)
        with torch.enable_grad():  # the loop runs under no_grad; only x0's gradient is taken
            x = x0.detach().requires_grad_(True)
            loss = (x - self.inverse_estimate(x)).pow(2).sum()  # a sum over images: per-image ∇
            (grad,) = torch.autograd.grad(loss, x)
        return x0 - zeta * grad

    def x_t_guidance(self, x_t: Tensor, x0: Tensor, step: StepInfo) -> Tensor:
        """ζ_t/‖r‖ ∇_{x_t} ‖r‖², r = x0|t(x_t) − x_inv (DPS, Chung et al. 2023, Alg. 1)."""
        return self.dps_step(x0 - self.inverse_estimate(x0), x_t, step)

    def __repr__(self) -> str:
        return (
            f"INNGuidance(scale={self.inn.scale}, gradient={self.gradient!r}, "
            f"zeta_schedule={self.zeta_schedule!r})"
        )


class TwoPhase(Correction):
    """``early`` while the step's timestep is ≥ ``switch_t``, ``late`` below it.

    ``variant=two_phase`` (ours; paper: SING-INN's Algorithm 2 guides at every step): the INN was
    trained on images, and at high noise x0|t is far from one, so early steps keep consistency
    with the INN's *linear* coarse part (DDNM null-space filling with A = average pooling by
    ``inn.scale``, exactly the INN's c for identity couplings); once t < ``switch_t`` the INN
    guidance takes over.
    """

    def __init__(self, early: Correction, late: Correction, switch_t: int) -> None:
        self.early, self.late, self.switch_t = early, late, int(switch_t)
        self.guides_x_t = late.guides_x_t

    def _late(self, step: StepInfo) -> bool:
        return int(step.timestep) < self.switch_t

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return (self.late if self._late(step) else self.early)(x0, step)

    def guides_at(self, step: StepInfo) -> bool:
        return self._late(step) and self.late.guides_at(step)

    def x_t_guidance(self, x_t: Tensor, x0: Tensor, step: StepInfo) -> Tensor:
        if self._late(step):
            return self.late.x_t_guidance(x_t, x0, step)
        return torch.zeros_like(x_t)

    def rows(self, rows: slice) -> TwoPhase:
        return TwoPhase(self.early, self.late.rows(rows), self.switch_t)  # guidance: late only

    def __repr__(self) -> str:
        return f"TwoPhase({self.early!r} until t<{self.switch_t}, then {self.late!r})"


def sing_inn(
    unet: Any,
    scheduler: Any,
    inn: Any,
    y_image: Tensor,
    snr_db: Tensor | float,
    *,
    zeta: float | Tensor = 1.0,
    gradient: str = "dps",
    zeta_schedule: str = "sqrt_alpha_bar",
    variant: str = "algorithm2",
    switch_t: int = 300,
    guidance_every: int = 1,
    guidance_last: int | None = None,
    **options: Unpack[LoopOptions],
) -> Tensor:
    """SING-INN on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    c_y = coarse(x̂) (the INN's A); ``snr_db``: the channel SNR per image (B,) or a number (the
    INN's conditioning). ``variant``: ``algorithm2`` (INN guidance at every step, the paper) or
    ``two_phase`` (:class:`TwoPhase` at ``switch_t``); ``guidance_every``/``guidance_last``: the
    steps guided (:class:`~singexp.samplers.base.GuidanceSteps`). Other arguments as in
    :func:`~singexp.samplers.sing_zero.sing_zero`. The same ``generator`` seed gives identical
    outputs.
    """
    if variant not in VARIANTS:
        raise ConfigError("sampler.variant", f"unknown {variant!r}; choose one of {VARIANTS}")
    net = as_inn(inn)
    param = next(unet.parameters())
    net.to(param.device)
    x_hat = y_image.to(param.device, param.dtype)
    with torch.no_grad():
        c_y = net.coarse(x_hat)
    guided = GuidanceSteps(guidance_every, guidance_last)
    correction: Correction = INNGuidance(net, c_y, snr_db, zeta, gradient, zeta_schedule, guided)
    if variant == "two_phase":
        correction = TwoPhase(NullSpace(AveragePool(net.scale), c_y), correction, switch_t)
    with prepared(net):
        return sample_restoration(unet, scheduler, x_hat.shape, correction, "SING-INN", options)


# ---- config --------------------------------------------------------------------------------
_OWN_KEYS = frozenset(
    {
        "zeta",
        "gradient",
        "zeta_schedule",
        "variant",
        "switch_t",
        "measurement",
        "guidance_every",
        "guidance_last",
    }
)


@dataclass(frozen=True)
class SingINNConfig:
    """``conf/sampler/sing_inn.yaml``, checked: errors name the key under ``prefix``."""

    steps: int = 100
    eta: float = 0.85
    update: str = "posterior"
    variant: str = "algorithm2"
    zeta: float = 1.0
    gradient: str = "dps"
    zeta_schedule: str = "sqrt_alpha_bar"
    switch_t: int = 300
    measurement: str = "operator"
    guidance_every: int = 1
    guidance_last: int | None = None
    time_travel: TimeTravel = dataclasses.field(default_factory=TimeTravel)
    clip_x0: bool = False
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], prefix: str = "sampler") -> SingINNConfig:
        # the keys shared with SING-Zero are checked by its schema (same names, same messages)
        shared = SingZeroConfig.from_config(
            {k: v for k, v in cfg.items() if k != "sigma_y"}, prefix, extra=_OWN_KEYS
        )
        if "sigma_y" in cfg:
            raise ConfigError(f"{prefix}.sigma_y", "is a SING-Zero key; SING-INN has no σ_y")
        k = Keys(cfg, prefix, set(cfg))
        zeta = k.number("zeta", cls.zeta, float)
        if not math.isfinite(zeta) or zeta < 0:
            raise k.fail("zeta", f"must be a finite number ≥ 0, got {zeta}")
        switch_t = k.number("switch_t", 300, int)
        if not 0 <= switch_t <= 1000:
            raise k.fail("switch_t", f"must lie in 0..1000, got {switch_t}")
        every = k.number("guidance_every", cls.guidance_every, int)
        if every < 1:
            raise k.fail("guidance_every", f"must be ≥ 1 (1: every step), got {every}")
        last = cfg.get("guidance_last")
        if last is not None:
            last = k.number("guidance_last", None, int)
            if last < 0:
                raise k.fail("guidance_last", f"must be ≥ 0 or null (null: all steps), got {last}")
        return cls(
            variant=k.choice("variant", "algorithm2", VARIANTS),
            zeta=zeta,
            gradient=k.choice("gradient", cls.gradient, GRADIENTS),
            zeta_schedule=k.choice("zeta_schedule", cls.zeta_schedule, ZETA_SCHEDULES),
            switch_t=switch_t,
            measurement=k.choice("measurement", "operator", MEASUREMENTS),
            guidance_every=every,
            guidance_last=last,
            **settings_of(shared),
        )


def check_measurement(c: SingINNConfig, inn: Any, operator: LinearOperator, prefix: str) -> None:
    """``measurement=operator``: the INN's coarse part must be SING-Zero's A at this point."""
    if c.measurement != "operator":
        return
    scale = as_inn(inn).scale
    if not isinstance(operator, AveragePool) or operator.scale != scale:
        wanted = getattr(operator, "scale", "?")
        raise ConfigError(
            f"{prefix}.measurement",
            f"the INN measures c = {scale}×{scale} average pooling but SING-Zero's A is "
            f"{operator!r} (operator.*): use an INN trained with inn.scale={wanted} "
            f"(inn.scale follows operator.scale by default), or set {prefix}.measurement=inn "
            "to compare the methods on different measurements",
        )


def restore_sing_inn(
    c: SingINNConfig,
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    inn: Any = None,
    generator: Generator = None,
    snr_db: Tensor | float,
    **_: Any,
) -> Tensor:
    """The ``sing_inn`` restorer for :data:`~singexp.samplers.registry.SAMPLERS`.

    ``inn``: a ConditionalINN or INNModule (:func:`~singexp.models.inn.load_inn`);
    ``snr_db``: the channel SNR per image (B,) (the INN's conditioning).
    """
    if inn is None:
        raise ConfigError(
            "inn.checkpoint", "sampler=sing_inn needs a trained INN; set inn.checkpoint=PATH"
        )
    return sing_inn(
        unet,
        scheduler,
        inn,
        x_hat,
        snr_db,
        zeta=c.zeta,
        gradient=c.gradient,
        zeta_schedule=c.zeta_schedule,
        variant=c.variant,
        switch_t=c.switch_t,
        guidance_every=c.guidance_every,
        guidance_last=c.guidance_last,
        **loop_options(c, generator),
    )
