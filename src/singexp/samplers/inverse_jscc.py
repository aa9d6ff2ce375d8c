"""InverseJSCC: latent optimisation of a generator through the DeepJSCC chain (a baseline).

Erdemir, Tung, Dragotti, Gündüz, "Generative Joint Source-Channel Coding for Semantic Image
Transmission" (IEEE JSAC 2023): a pretrained generator G's latent is optimised so that the
generated image, sent through the known DeepJSCC chain, matches what was received,

    z* = argmin_z  L(z),   L(z) = MSE(x̂, A(G(z))) + λ_z (‖z‖²/n − 1)²,    x̃ = G(z*)

with A the chain of :class:`~singexp.samplers.dps_jscc.JSCCForward` (the same forward model and
``forward_noise`` choice as DPS-JSCC) and Adam on z. The paper's loss is a weighted sum of MSE
and LPIPS with a StyleGAN generator; here (stated in ``conf/sampler/inverse_jscc.yaml``):

- **the generator** is the diffusion prior's deterministic DDIM map from x_T (η = 0, DDIM eq. 12
  with σ_t = 0, ``generator_steps`` respaced steps, x0|t clipped as diffusers' DDIM does,
  differentiable end to end; :class:`DDIMGenerator`): no new training, the same prior as every
  other method; ``z`` = x_T (n = C·H·W values per image).
- **the loss** is the MSE term only (``loss: mse``): LPIPS has no local weights in the embedded
  default and would dominate the CPU cost; ``latent_weight`` λ_z keeps x_T on the shell of its
  Gaussian (‖z‖² ≈ n), where the DDIM map was trained to be meaningful.
- **the start** z₀: the DDIM inversion of x̂ (``init: invert``, the default: x_t → x_t'' by the
  same map run backwards, ε(x_t, t'') standing in for ε(x_t'', t''), the usual approximation of
  DDIM inversion, Song et al. 2021 §4.3; no randomness) or fresh Gaussian noise from the
  sampler's generator (``init: noise``, as a GAN inversion starts from a random latent; measured
  worse, ``conf/sampler/inverse_jscc.yaml``).

Each image's loss is summed over the batch, so Adam (element-wise) treats images independently.
:func:`inverse_jscc` returns the final G(z) and the loss after each iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from singexp.errors import ConfigError
from singexp.samplers.base import Correction, StepInfo
from singexp.samplers.dps_jscc import (
    ChainComponents,
    JSCCForward,
    _seed_from,
    as_chain,
    check_codec_keys,
)
from singexp.samplers.loop import (
    Generator,
    PosteriorUpdate,
    progress_context,
    settings_of,
    step_infos,
)
from singexp.samplers.sing_zero import SHARED_KEYS, Keys

LOSSES: tuple[str, ...] = ("mse",)
INITS: tuple[str, ...] = ("noise", "invert")


class DDIMGenerator:
    """G(z): the prior's DDIM sampler over ``steps`` respaced steps as a differentiable map.

    Per step (DDIM eq. 12 with σ_t = η σ_DDIM, eq. 16; the loop's ``posterior`` form with
    ``clip_x0``, :mod:`~singexp.samplers.loop`):

        x0|t = clip((x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t)          (Ho et al. 2020; clip to [−1, 1])
        e    = (x_t − √ᾱ_t x0|t) / √(1−ᾱ_t)                       (the equivalent noise ε')
        x_t' = √ᾱ_t' x0|t + √(1−ᾱ_t'−σ_t²) e + σ_t z_k

    and G returns the last x0|t. ``eta`` 0: the deterministic map from z = x_T alone; η > 0:
    z = (x_T, z_1 … z_N), the injected noises too (the analogue of StyleGAN's noise inputs that
    InverseJSCC optimises beside its latent). ``clip_x0``: what diffusers' DDIM does by default
    (``clip_sample``); the embedded prior's unclipped samples leave [−1, 1] by far
    (docs/results/baselines.md).
    Call it under ``torch.enable_grad()`` to optimise z.
    """

    def __init__(
        self, unet: Any, scheduler: Any, steps: int, eta: float = 0.0, clip_x0: bool = True
    ) -> None:
        form = PosteriorUpdate()
        form.bind(scheduler, eta, Correction())
        scheduler.set_timesteps(int(steps))
        self.unet, self.scheduler, self.eta, self.clip_x0 = unet, scheduler, float(eta), clip_x0
        self.infos: list[StepInfo] = step_infos(scheduler, form)

    def latent_shapes(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The shapes of z: x_T, then one noise per step where η > 0."""
        return [shape] * (1 + (len(self.infos) if self.eta > 0 else 0))

    def _eps(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(self.scheduler.scale_model_input(x, t), t).sample[:, : x.shape[1]]

    def _x0(self, x: Tensor, eps: Tensor, step: StepInfo) -> Tensor:
        x0 = (x - step.sqrt_one_minus_alpha_bar * eps) / step.sqrt_alpha_bar
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def __call__(self, z: Sequence[Tensor]) -> Tensor:
        x, x0 = z[0], z[0]
        for k, step in enumerate(self.infos):
            x0 = self._x0(x, self._eps(x, step.timestep), step)
            e = (x - step.sqrt_alpha_bar * x0) / step.sqrt_one_minus_alpha_bar
            c_z, c_e = step.noise_coefficients
            x = step.sqrt_alpha_bar_prev * x0 + c_e * e
            if self.eta > 0:
                x = x + c_z * z[1 + k]
        return x0

    def invert(self, image: Tensor) -> Tensor:
        """x_T with G(x_T) ≈ ``image`` at η = 0: the map run from t = 0 upwards (module
        docstring)."""
        x, alpha_bar = image, 1.0
        for step in reversed(self.infos):
            eps = self._eps(x, step.timestep)
            x0 = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
            alpha_bar = float(step.alpha_bar)
            x = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * eps
        return x


def objective(
    x_hat: Tensor,
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    z: Sequence[Tensor],
    latent_weight: float,
) -> Tensor:
    """L(z) per image (B,): MSE(x̂, A(G(z))) + λ_z Σ_j (‖z_j‖²/n − 1)² (module docstring)."""
    mse = (x_hat - forward(image)).pow(2).flatten(1).mean(1)
    if latent_weight == 0:
        return mse
    shell = sum((part.pow(2).flatten(1).mean(1) - 1).pow(2) for part in z)
    return mse + latent_weight * shell


def inverse_jscc(
    unet: Any,
    scheduler: Any,
    codec: Any,
    y_image: Tensor,
    snr_db: Tensor | float,
    *,
    generator_steps: int = 5,
    generator_eta: float = 0.0,
    clip_x0: bool = True,
    iterations: int = 20,
    lr: float = 0.01,
    latent_weight: float = 0.0,
    init: str = "invert",
    forward_noise: str = "none",
    noise_samples: int = 1,
    generator: Generator = None,
    progress: bool = True,
) -> tuple[Tensor, list[Tensor]]:
    """InverseJSCC on a batch of DeepJSCC outputs ``y_image`` = x̂ (B, C, H, W) in [-1, 1].

    Returns (G(z) after ``iterations`` Adam steps, the per-image loss (B,) at each iterate
    z₀ … z_{iterations}). The network weights are not changed; the same ``generator`` seed gives
    identical outputs. ``generator_eta``/``clip_x0``: :class:`DDIMGenerator`.
    """
    if init not in INITS:
        raise ConfigError("sampler.init", f"unknown {init!r}; choose one of {INITS}")
    if init == "invert" and generator_eta > 0:
        raise ConfigError("sampler.init", "invert inverts the deterministic map: needs eta 0")
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    chain = as_chain(codec).to(device)
    x_hat = y_image.to(device, dtype)
    G = DDIMGenerator(unet, scheduler, generator_steps, generator_eta, clip_x0)
    seed = _seed_from(generator) if forward_noise == "mean" else 0
    forward = JSCCForward(chain, snr_db, forward_noise, noise_samples, seed)
    shape = tuple(x_hat.shape)
    z0 = [
        randn_tensor(s, generator=generator, device=device, dtype=dtype)
        for s in G.latent_shapes(shape)
    ]
    if init == "invert":
        with torch.no_grad():
            z0[0] = G.invert(x_hat)
    z = [part.detach().clone().requires_grad_(True) for part in z0]
    optimizer = torch.optim.Adam(z, lr=lr)
    losses: list[Tensor] = []
    with torch.enable_grad(), progress_context(progress, "InverseJSCC", iterations) as advance:
        for i in range(iterations + 1):
            optimizer.zero_grad(set_to_none=True)
            image = G(z)
            loss = objective(x_hat, forward, image, z, latent_weight)
            losses.append(loss.detach())
            if i == iterations:  # the last iterate's loss, no step after it
                break
            loss.sum().backward()  # a sum over images: per-image gradients
            optimizer.step()
            advance()
    if not torch.isfinite(image).all():
        raise ConfigError("sampler.lr", "InverseJSCC diverged (non-finite images); lower lr")
    return image.detach(), losses


# ---- config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class InverseJSCCConfig:
    """``conf/sampler/inverse_jscc.yaml``, checked: errors name the key under ``prefix``."""

    generator_steps: int = 5
    generator_eta: float = 0.0
    clip_x0: bool = True
    iterations: int = 20
    lr: float = 0.01
    loss: str = "mse"
    latent_weight: float = 0.0
    init: str = "invert"
    forward_noise: str = "none"
    noise_samples: int = 1
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], prefix: str = "sampler") -> InverseJSCCConfig:
        known = set(cls.__dataclass_fields__) | SHARED_KEYS
        k = Keys(cfg, prefix, known)
        steps = k.number("generator_steps", cls.generator_steps, int)
        if not 1 <= steps <= 1000:
            raise k.fail(
                "generator_steps", f"must lie in 1..1000 (DDIM steps of G, T = 1000), got {steps}"
            )
        eta = k.number("generator_eta", cls.generator_eta, float)
        if not 0 <= eta <= 1:
            raise k.fail("generator_eta", f"must lie in [0, 1] (0: the DDIM map of x_T), got {eta}")
        init = k.choice("init", cls.init, INITS)
        if init == "invert" and eta > 0:
            raise k.fail("init", "invert inverts the deterministic map: set generator_eta 0")
        iterations = k.number("iterations", cls.iterations, int)
        if iterations < 0:
            raise k.fail("iterations", f"must be ≥ 0 (Adam steps on the latent), got {iterations}")
        lr = k.number("lr", cls.lr, float)
        if not (math.isfinite(lr) and lr > 0):
            raise k.fail("lr", f"must be a finite number > 0 (Adam's learning rate), got {lr}")
        latent_weight = k.number("latent_weight", cls.latent_weight, float)
        if not (math.isfinite(latent_weight) and latent_weight >= 0):
            raise k.fail("latent_weight", f"must be a finite number ≥ 0, got {latent_weight}")
        noise, samples = check_codec_keys(k, cls)
        return cls(
            generator_steps=steps,
            generator_eta=eta,
            clip_x0=k.flag("clip_x0", True),
            iterations=iterations,
            lr=lr,
            loss=k.choice("loss", cls.loss, LOSSES),
            latent_weight=latent_weight,
            init=init,
            forward_noise=noise,
            noise_samples=samples,
            **k.flags(clamp=True, progress=True),
        )


#: the :class:`InverseJSCCConfig` fields that are :func:`inverse_jscc`'s keywords (all but
#: ``loss``, which has one value, and ``clamp``, applied by the restorer)
_RUN_SETTINGS: tuple[str, ...] = tuple(
    name for name in InverseJSCCConfig.__dataclass_fields__ if name not in ("loss", "clamp")
)


def restore_inverse_jscc(c: InverseJSCCConfig, x_hat: Tensor, **components: Any) -> Tensor:
    """The ``inverse_jscc`` restorer for :data:`~singexp.samplers.registry.SAMPLERS`
    (``components``: :class:`~singexp.samplers.dps_jscc.ChainComponents`)."""
    run = ChainComponents.of("inverse_jscc", **components)
    image, _losses = inverse_jscc(
        run.unet,
        run.scheduler,
        run.codec,
        x_hat,
        run.snr_db,
        generator=run.generator,
        **settings_of(c, _RUN_SETTINGS),
    )
    return image.clamp(-1, 1) if c.clamp else image
