"""DPS-JSCC: diffusion posterior sampling through the real DeepJSCC chain (a baseline).

Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse Problems" (ICLR 2023),
Algorithm 1, with the non-linear forward model of the communication chain (paper: system model)

    A(x) = D(channel(√k · E(x) / ‖E(x)‖); snr)          encoder → power norm → channel → decoder

at the test SNR, and the measurement y = x̂ (what the receiver decoded). Per step of the one
sampling loop (:mod:`~singexp.samplers.loop`; x0|t is not changed, the guidance acts on x_t')

    r      = y − A(x0|t(x_t))
    x_t'   = x_t' − ζ_t/‖r‖ · ∇_{x_t} ‖r‖²                (DPS, Alg. 1, ζ_i = ζ'/‖y − A(x̂0)‖)

with the gradient through the UNet and the codec (both frozen). This needs no linear
approximation of the chain (SING-Zero's A) and no paired data (SING-INN's INN): only the codec
itself, at the receiver.

Channel noise inside A (``forward_noise``; the chain is stochastic, x̂ = D(z̃ + w), and DPS needs a
deterministic, differentiable A):

- ``none`` (default): the noiseless chain D(z̃). DPS's Gaussian likelihood p(y | x0) ≈
  N(A(x0), σ²I) takes y = A(x0) + noise; the decoder output at w = 0 is the first-order (delta
  method) approximation of the chain's conditional mean E_w[D(z̃ + w)], one codec pass per step,
  and the noise left over is what ζ/‖r‖ absorbs (Chung et al. fold the measurement noise into ζ
  the same way).
- ``mean``: the Monte-Carlo conditional mean (1/K) Σ_j D(channel_j(z̃)) over K channel draws,
  fixed for the whole run (common random numbers: A stays one smooth function of x; the draws
  come from the sampler's generator, so a seed fixes them). Closer to E[x̂ | x] at low SNR, where
  the decoder is far from linear in w; K codec passes per step.

By default x̂0|t is clipped to [−1, 1] at every step and A sees the clipped x0|t (``clip_x0``),
as in DPS's released sampler (``clip_denoised``); the embedded prior needs it (its unclipped
samples leave [−1, 1] by far). The UNet is the loop's; nothing here is a second sampling loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Unpack

import torch
from torch import Tensor

from singexp.channel import to_complex, to_real
from singexp.errors import ConfigError
from singexp.samplers.base import ZETA_SCHEDULES, Guidance, StepInfo
from singexp.samplers.loop import (
    Generator,
    LoopOptions,
    TimeTravel,
    loop_options,
    sample_restoration,
    settings_of,
)
from singexp.samplers.sing_zero import Keys, SingZeroConfig

FORWARD_NOISE: tuple[str, ...] = ("none", "mean")


def as_chain(codec: Any) -> Any:
    """The :class:`~singexp.nn.jscc.DeepJSCC` network of a DeepJSCCModule (``.codec``) or the
    network itself (anything with ``encoder``, ``decoder`` and ``channel``)."""
    net = getattr(codec, "codec", codec)
    if not all(hasattr(net, part) for part in ("encoder", "decoder", "channel")):
        raise TypeError(f"expected a DeepJSCC codec, got {type(codec).__name__}")
    return net


def _seed_from(generator: Generator) -> int:
    """One integer drawn from the sampler's generator (the first, for one per image)."""
    g = generator[0] if isinstance(generator, list) else generator
    device = g.device if g is not None else torch.device("cpu")
    return int(torch.randint(0, 2**62, (1,), generator=g, device=device))


class JSCCForward:
    """A(x) = D(channel(√k E(x)/‖E(x)‖)) at ``snr_db`` (module docstring).

    ``noise``: ``none`` (w = 0, computed in real arithmetic so any dtype passes through:
    √k z/‖z‖ over the 2k reals is the complex power normalisation of :mod:`singexp.channel`) or
    ``mean`` (the average over ``samples`` fixed channel draws, seeded by ``seed``).
    """

    def __init__(
        self,
        codec: Any,
        snr_db: Tensor | float,
        noise: str = "none",
        samples: int = 1,
        seed: int = 0,
    ) -> None:
        if noise not in FORWARD_NOISE:
            raise ConfigError(
                "sampler.forward_noise", f"unknown {noise!r}; choose one of {FORWARD_NOISE}"
            )
        self.chain = as_chain(codec)
        self.snr_db = torch.as_tensor(snr_db, dtype=torch.float32)
        self.noise, self.samples, self.seed = noise, int(samples), int(seed)

    def _snr(self, x: Tensor) -> Tensor:
        snr = self.snr_db.to(x.device)
        return snr.expand(x.shape[0]) if snr.ndim == 0 else snr

    def __call__(self, x: Tensor) -> Tensor:
        snr = self._snr(x)
        z = self.chain.encoder(x, snr)
        if self.noise == "none":
            flat = z.flatten(1)
            k = flat.shape[1] / 2  # complex symbols per image
            # z̃ = √k z/‖z‖ (paper: system model; channel.power_normalize on the same values)
            norm = torch.linalg.vector_norm(flat, dim=1).clamp_min(1e-12)
            z_tilde = (math.sqrt(k) * flat / norm[:, None]).reshape(z.shape)
            return self.chain.decoder(z_tilde, snr)
        s = to_complex(z)
        s = math.sqrt(s.shape[1]) * s / torch.linalg.vector_norm(s, dim=1, keepdim=True)
        out = torch.zeros_like(x)
        for j in range(self.samples):
            g = torch.Generator(device=x.device).manual_seed(self.seed + j)
            received = self.chain.channel(s, snr, g)  # the same draws at every call
            out = out + self.chain.decoder(to_real(received, z.shape).to(z.dtype), snr)
        return out / self.samples

    def __repr__(self) -> str:
        extra = f", samples={self.samples}" if self.noise == "mean" else ""
        return f"decoder(channel(encoder(x))) at the test SNR, noise={self.noise!r}{extra}"


class JSCCMeasurement(Guidance):
    """DPS guidance through the DeepJSCC chain (module docstring): x0|t unchanged, x_t' pushed.

    ``y``: the received images x̂ (B, C, H, W); ``zeta``: a number or one per image (B,);
    ``clip_input``: A sees x0|t clipped to [−1, 1] (with ``clip_x0``: the x̂0 that DPS's released
    sampler conditions on is guided-diffusion's clipped ``pred_xstart``).
    """

    guides_x_t = True

    def __init__(
        self,
        forward: JSCCForward,
        y: Tensor,
        zeta: float | Tensor,
        zeta_schedule: str,
        clip_input: bool = False,
    ) -> None:
        super().__init__(zeta, zeta_schedule, like=y)
        self.forward, self.y, self.clip_input = forward, y, clip_input
        self.per_image = ("y",)

    def rows(self, rows: slice) -> JSCCMeasurement:
        if self.forward.noise != "none":  # its channel draws have the batch's shape
            raise ConfigError(
                "evaluate.guidance_batch",
                "DPS-JSCC with forward_noise=mean draws its channel noise for the whole batch; "
                "micro-batches would draw other noise: set evaluate.guidance_batch=null or "
                "forward_noise=none",
            )
        part = super().rows(rows)
        if self.forward.snr_db.ndim == 1:  # one SNR per image
            part.forward = copy.copy(self.forward)
            part.forward.snr_db = self.forward.snr_db[rows]
        return part

    def x_t_guidance(self, x_t: Tensor, x0: Tensor, step: StepInfo) -> Tensor:
        """ζ_t/‖r‖ ∇_{x_t} ‖r‖², r = y − A(x0|t(x_t)) per image (DPS, Chung et al., Alg. 1)."""
        residual = self.y - self.forward(x0.clamp(-1, 1) if self.clip_input else x0)
        return self.dps_step(residual, x_t, step)

    def __repr__(self) -> str:
        return f"JSCCMeasurement(A = {self.forward!r}, zeta_schedule={self.zeta_schedule!r})"


def dps_jscc(
    unet: Any,
    scheduler: Any,
    codec: Any,
    y_image: Tensor,
    snr_db: Tensor | float,
    *,
    zeta: float | Tensor,
    zeta_schedule: str = "constant",
    forward_noise: str = "none",
    noise_samples: int = 1,
    **options: Unpack[LoopOptions],
) -> Tensor:
    """DPS-JSCC on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    ``codec``: the DeepJSCC the images went through (its weights are not changed); ``snr_db``:
    the test SNR, per image (B,) or a number. ``options``: the loop's keywords
    (:class:`~singexp.samplers.loop.LoopOptions`). The same ``generator`` seed gives identical
    outputs.
    """
    param = next(unet.parameters())
    chain = as_chain(codec).to(param.device)
    y = y_image.to(param.device, param.dtype)
    seed = _seed_from(options.get("generator")) if forward_noise == "mean" else 0
    forward = JSCCForward(chain, snr_db, forward_noise, noise_samples, seed)
    clip = bool(options.get("clip_x0", False))
    correction = JSCCMeasurement(forward, y, zeta, zeta_schedule, clip_input=clip)
    return sample_restoration(unet, scheduler, y.shape, correction, "DPS-JSCC", options)


# ---- config --------------------------------------------------------------------------------
_OWN_KEYS = frozenset({"zeta", "zeta_schedule", "forward_noise", "noise_samples"})
#: the shared loop keys' defaults where DPS differs from SING-Zero: DDPM ancestral steps and
#: x̂0 clipped to [−1, 1], as DPS's released sampler (guided-diffusion's ``clip_denoised``)
_LOOP_DEFAULTS: dict[str, Any] = {"eta": 1.0, "clip_x0": True}


def check_codec_keys(k: Keys, cls: Any) -> tuple[str, int]:
    """``forward_noise`` and ``noise_samples`` (shared with InverseJSCC)."""
    noise = k.choice("forward_noise", cls.forward_noise, FORWARD_NOISE)
    samples = k.number("noise_samples", cls.noise_samples, int)
    if not 1 <= samples <= 64:
        raise k.fail("noise_samples", f"must lie in 1..64 (channel draws per step), got {samples}")
    return noise, samples


@dataclass(frozen=True)
class DPSJSCCConfig:
    """``conf/sampler/dps_jscc.yaml``, checked: errors name the key under ``prefix``."""

    steps: int = 100
    eta: float = 1.0
    update: str = "posterior"
    zeta: float = 0.3
    zeta_schedule: str = "constant"
    forward_noise: str = "none"
    noise_samples: int = 1
    time_travel: TimeTravel = field(default_factory=TimeTravel)
    clip_x0: bool = True
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], prefix: str = "sampler") -> DPSJSCCConfig:
        if "sigma_y" in cfg:
            raise ConfigError(
                f"{prefix}.sigma_y",
                "is a SING-Zero key; DPS-JSCC's measurement noise is absorbed by zeta: remove it",
            )
        # the loop keys are checked by SING-Zero's schema (same names, same messages)
        shared = SingZeroConfig.from_config({**_LOOP_DEFAULTS, **cfg}, prefix, extra=_OWN_KEYS)
        k = Keys(cfg, prefix, set(cfg))
        zeta = k.number("zeta", cls.zeta, float)
        if not math.isfinite(zeta) or zeta < 0:
            raise k.fail("zeta", f"must be a finite number ≥ 0 (0: no guidance), got {zeta}")
        noise, samples = check_codec_keys(k, cls)
        return cls(
            zeta=zeta,
            zeta_schedule=k.choice("zeta_schedule", cls.zeta_schedule, ZETA_SCHEDULES),
            forward_noise=noise,
            noise_samples=samples,
            **settings_of(shared),
        )


def require_codec(codec: Any, name: str) -> Any:
    """The codec component, or a ConfigError saying how to give one."""
    if codec is None:
        raise ConfigError(
            "jscc.checkpoint",
            f"sampler={name} runs the DeepJSCC chain as its forward model; set "
            "jscc.checkpoint=embedded, auto or a path (restoration passes the codec)",
        )
    return codec


@dataclass(frozen=True)
class ChainComponents:
    """What a baseline through the DeepJSCC chain (DPS-JSCC, InverseJSCC) takes of a restorer's
    components (:func:`~singexp.samplers.registry.restore`): the prior's ``unet`` and
    ``scheduler``, the ``codec`` (a DeepJSCCModule or its network) at the test ``snr_db``, and
    the sampler's ``generator``."""

    unet: Any
    scheduler: Any
    codec: Any
    snr_db: Tensor | float
    generator: Generator

    @classmethod
    def of(
        cls,
        name: str,
        *,
        unet: Any,
        scheduler: Any,
        codec: Any = None,
        generator: Generator = None,
        snr_db: Tensor | float = 0.0,
        **_: Any,
    ) -> ChainComponents:
        """The components of sampler ``name``'s restore call; the codec must be given."""
        return cls(unet, scheduler, require_codec(codec, name), snr_db, generator)


def restore_dps_jscc(c: DPSJSCCConfig, x_hat: Tensor, **components: Any) -> Tensor:
    """The ``dps_jscc`` restorer for :data:`~singexp.samplers.registry.SAMPLERS`
    (``components``: :class:`ChainComponents`)."""
    run = ChainComponents.of("dps_jscc", **components)
    return dps_jscc(
        run.unet,
        run.scheduler,
        run.codec,
        x_hat,
        run.snr_db,
        zeta=c.zeta,
        zeta_schedule=c.zeta_schedule,
        forward_noise=c.forward_noise,
        noise_samples=c.noise_samples,
        **loop_options(c, run.generator),
    )
