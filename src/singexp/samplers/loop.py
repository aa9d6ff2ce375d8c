"""One sampling loop for any diffusers ε-prediction UNet and DDPM/DDIM scheduler (SING.md §7).

Per step of the respaced schedule (``scheduler.set_timesteps(N)`` over T = 1000):

    ε = unet(x_t, t).sample
    x0|t = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t            (SING.md §2)
    x̂0|t = correction(x0|t, step)               (null space, DDNM+, guidance, ...)
    x_t' = update(x_t, ε, x̂0|t)                 (a named update form, :data:`UPDATES`)

Update forms (SING.md §7; which one a result used must be reported):

- ``posterior``: hand the scheduler the equivalent noise ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) and call
  ``scheduler.step(ε', t, x_t, eta=η)``. DDIM with η (DDIM eq. 12); with a DDPM scheduler (or
  DDIM with η = 1) it is Algorithm 1's posterior step q(x_t' | x_t, x̂0). DDNM+'s reduced noise
  is passed as ``variance_noise`` (DDIM); a scheduler whose ``step`` cannot take it (DDPM)
  refuses σ_y > 0 with a named error instead of silently keeping full noise.
- ``ddnm``: DDNM's released form x_t' = √ᾱ_t' x̂0 + √(1−ᾱ_t') (η z + √(1−η²) ε_θ), with the
  model's ε_θ (DDNM code ``ddnm_diffusion``); DDNM+ scales the η z term.

The output is the last x̂0|t (DDNM returns ``x0_preds[-1]``): with ᾱ_t' = 1 at the last step
the final update returns x̂0 exactly anyway, and this keeps A x̃ = y even when the scheduler
clips or uses ᾱ_0 < 1 as its final value. The schedulers must be stateless in t (DDPM, DDIM):
time travel revisits timesteps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from singexp.errors import ConfigError
from singexp.samplers.base import Correction, StepInfo

Generator = torch.Generator | list[torch.Generator] | None


# ---- update forms -------------------------------------------------------------------------
class UpdateForm:
    """x_t, ε_θ, x̂0 → x_t'. ``bind`` checks the scheduler/η/correction before sampling."""

    name: str = ""

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        self.eta = float(eta)

    def coefficients(self, alpha_bar: float, alpha_bar_prev: float) -> tuple[float, float]:
        """(a_t, σ_t): x̂0's coefficient in x_t' and the std of the fresh noise."""
        raise NotImplementedError

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        noise_scale: Tensor | float | None,
        generator: Generator,
    ) -> Tensor:
        raise NotImplementedError


class PosteriorUpdate(UpdateForm):
    """(a) the scheduler's own step on the equivalent noise ε' (SING.md §7)."""

    name = "posterior"

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        super().bind(scheduler, eta, correction)
        params = inspect.signature(scheduler.step).parameters
        self.takes_eta = "eta" in params
        kind = type(scheduler).__name__
        if not self.takes_eta and self.eta != 1.0:
            raise ConfigError(
                "sampler.eta",
                f"{kind}.step has no η (its posterior step is η = 1); set sampler.eta=1.0 "
                "or use a DDIM scheduler",
            )
        if correction.scales_noise and "variance_noise" not in params:
            raise ConfigError(
                "sampler.update",
                f"DDNM+ (sigma_y > 0) reduces the step noise, which {kind}.step cannot take; "
                "use sampler.update=ddnm, or a DDIM scheduler (η = 1 is the DDPM posterior step)",
            )

    def coefficients(self, alpha_bar: float, alpha_bar_prev: float) -> tuple[float, float]:
        eta = self.eta if self.takes_eta else 1.0
        # DDIM eq. 16: σ_t(η)² = η² (1−ᾱ_t')/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_t'); η = 1: DDPM posterior
        var = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        sigma = eta * math.sqrt(max(var, 0.0))
        # DDIM eq. 12 with ε' substituted: a = √ᾱ_t' − √(1−ᾱ_t'−σ²) √ᾱ_t/√(1−ᾱ_t);
        # at η = 1 this is √ᾱ_t' β_t / (1−ᾱ_t) (SING.md §3)
        direction = math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0))
        a = math.sqrt(alpha_bar_prev) - direction * math.sqrt(alpha_bar / (1 - alpha_bar))
        return a, sigma

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        noise_scale: Tensor | float | None,
        generator: Generator,
    ) -> Tensor:
        if x0_hat is x0:  # nothing corrected: the model's ε is the equivalent noise, exactly
            eps_step = eps
        else:  # SING.md §7: ε' = (x_t − √ᾱ_t x̂0) / √(1−ᾱ_t)
            eps_step = (x_t - step.sqrt_alpha_bar * x0_hat) / step.sqrt_one_minus_alpha_bar
        kwargs: dict[str, Any] = {"eta": self.eta} if self.takes_eta else {}
        if noise_scale is None:
            kwargs["generator"] = generator
        else:  # the same draw diffusers would make, scaled (DDNM+)
            z = randn_tensor(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            kwargs["variance_noise"] = noise_scale * z
        return scheduler.step(eps_step, step.timestep, x_t, **kwargs).prev_sample


class DDNMUpdate(UpdateForm):
    """(b) x_t' = √ᾱ_t' x̂0 + √(1−ᾱ_t') (η z + √(1−η²) ε_θ) (DDNM code, SING.md §7)."""

    name = "ddnm"

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        super().bind(scheduler, eta, correction)
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError("sampler.eta", f"must lie in [0, 1] for update=ddnm, got {eta}")

    def coefficients(self, alpha_bar: float, alpha_bar_prev: float) -> tuple[float, float]:
        return math.sqrt(alpha_bar_prev), self.eta * math.sqrt(1 - alpha_bar_prev)

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        noise_scale: Tensor | float | None,
        generator: Generator,
    ) -> Tensor:
        ab_prev = float(step.alpha_bar_prev)
        c_eps = math.sqrt(1 - ab_prev) * math.sqrt(1 - self.eta**2)
        x = math.sqrt(ab_prev) * x0_hat + c_eps * eps
        if self.eta > 0:
            z = randn_tensor(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            c_z = step.noise_std if noise_scale is None else step.noise_std * noise_scale
            x = x + c_z * z
        return x


#: update form name -> class (config ``sampler.update``)
UPDATES: dict[str, type[UpdateForm]] = {"posterior": PosteriorUpdate, "ddnm": DDNMUpdate}


def make_update(update: str | UpdateForm) -> UpdateForm:
    if isinstance(update, UpdateForm):
        return update
    cls = UPDATES.get(str(update))
    if cls is None:
        raise ConfigError("sampler.update", f"unknown {update!r}; choose one of {list(UPDATES)}")
    return cls()


# ---- schedule -----------------------------------------------------------------------------
def previous_alpha_bar(scheduler: Any, t: Tensor) -> Tensor:
    """ᾱ_t' exactly as the scheduler's step computes it (DDPM: next listed t; DDIM: t − T/N)."""
    if hasattr(scheduler, "previous_timestep"):
        prev = int(scheduler.previous_timestep(t))
    else:
        prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    if prev >= 0:
        return scheduler.alphas_cumprod[prev]
    final = getattr(scheduler, "final_alpha_cumprod", None)
    return final if final is not None else torch.tensor(1.0)


def step_infos(scheduler: Any, form: UpdateForm) -> list[StepInfo]:
    """Per-step schedule values for the scheduler's current timesteps."""
    timesteps = scheduler.timesteps
    infos = []
    for k, t in enumerate(timesteps):
        ab = scheduler.alphas_cumprod[int(t)]
        ab_prev = previous_alpha_bar(scheduler, t)
        a, sigma = form.coefficients(float(ab), float(ab_prev))
        infos.append(
            StepInfo(
                index=k,
                num_steps=len(timesteps),
                timestep=t,
                alpha_bar=ab,
                alpha_bar_prev=ab_prev,
                sqrt_alpha_bar=ab**0.5,  # as diffusers: alpha_prod_t ** 0.5
                sqrt_one_minus_alpha_bar=(1 - ab) ** 0.5,  # beta_prod_t ** 0.5
                x0_coeff=a,
                noise_std=sigma,
            )
        )
    return infos


@dataclass(frozen=True)
class TimeTravel:
    """DDNM's time travel (DDNM paper Sec. 3.4, after RePaint): after reaching step level k
    (k = N−1, N−1−every, ... ≥ length), jump back ``length`` steps by re-noising with
    q(x_{t_{k−L}} | x_{t_k}) and denoise again; each window is run ``repeat`` times in all.
    Off when ``length`` is 0 or ``repeat`` ≤ 1. ``every`` defaults to ``length``.
    """

    length: int = 0
    repeat: int = 1
    every: int | None = None

    @property
    def enabled(self) -> bool:
        return self.length > 0 and self.repeat > 1

    def plan(self, num_steps: int) -> list[tuple[int, int]]:
        """Moves between levels (k = x at the k-th timestep, N = clean): k→k+1 denoises,
        k→k−L re-noises."""
        jumps: dict[int, int] = {}
        if self.enabled:
            every = self.every or self.length
            jumps = {k: self.repeat - 1 for k in range(num_steps - 1, self.length - 1, -every)}
        moves, k = [], 0
        while k < num_steps:
            moves.append((k, k + 1))
            k += 1
            if jumps.get(k, 0) > 0:
                jumps[k] -= 1
                moves.append((k, k - self.length))
                k -= self.length
        return moves


def _renoise(x: Tensor, alpha_bar_from: float, alpha_bar_to: float, generator: Generator) -> Tensor:
    """x_to ~ q(x_to | x_from) = N(√(ᾱ_to/ᾱ_from) x, (1 − ᾱ_to/ᾱ_from) I) (DDPM paper eq. 4)."""
    ratio = alpha_bar_to / alpha_bar_from
    z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * z


# ---- the loop -----------------------------------------------------------------------------
StepCallback = Callable[[StepInfo, Tensor, Tensor], None]


def _device_dtype(unet: Any) -> tuple[torch.device, torch.dtype]:
    param = next(unet.parameters())
    return param.device, param.dtype


@torch.no_grad()
def sample(
    unet: Any,
    scheduler: Any,
    shape: Sequence[int],
    correction: Correction | None = None,
    *,
    steps: int,
    eta: float = 0.0,
    update: str | UpdateForm = "posterior",
    generator: Generator = None,
    time_travel: TimeTravel | None = None,
    x_T: Tensor | None = None,
    callback: StepCallback | None = None,
    progress: bool = True,
    desc: str = "sampling",
) -> Tensor:
    """Sample (B, C, H, W) images with ``steps`` respaced steps and an x0 correction.

    ``unet``: an ε-prediction diffusers ``UNet2DModel`` (``unet(x, t).sample``; learned-variance
    outputs with 2C channels use the first C). ``scheduler``: DDPMScheduler / DDIMScheduler
    (``set_timesteps(steps)`` is called here). ``update``: a name in :data:`UPDATES` or an
    :class:`UpdateForm`. ``generator``: a torch.Generator, one per image, or None; the same
    seed gives identical outputs. ``callback(step, x_t, x̂0)`` runs after each correction.
    Returns the last x̂0|t (module docstring).
    """
    correction = correction if correction is not None else Correction()
    form = make_update(update)
    form.bind(scheduler, eta, correction)
    scheduler.set_timesteps(int(steps))
    infos = step_infos(scheduler, form)
    moves = (time_travel or TimeTravel()).plan(len(infos))

    device, dtype = _device_dtype(unet)
    if x_T is None:
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
        x = x * scheduler.init_noise_sigma
    else:
        x = x_T.to(device=device, dtype=dtype)
    channels = x.shape[1]
    x0_hat = x
    bar = tqdm(
        total=sum(k_to > k for k, k_to in moves), desc=desc, disable=not progress, leave=False
    )
    for k, k_to in moves:
        if k_to < k:  # time travel: back from level k to level k_to
            alpha_from = float(infos[k - 1].alpha_bar_prev)
            x = _renoise(x, alpha_from, float(infos[k_to].alpha_bar), generator)
            continue
        step = infos[k]
        t = step.timestep
        eps = unet(scheduler.scale_model_input(x, t), t).sample[:, :channels]
        x0 = (x - step.sqrt_one_minus_alpha_bar * eps) / step.sqrt_alpha_bar  # SING.md §2
        x0_hat = correction(x0, step)
        if callback is not None:
            callback(step, x, x0_hat)
        x = form(scheduler, x, eps, x0, x0_hat, step, correction.noise_scale(step), generator)
        bar.update()
    bar.close()
    return x0_hat
