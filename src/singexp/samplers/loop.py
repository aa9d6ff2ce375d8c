"""One sampling loop for any diffusers ε-prediction UNet and DDPM/DDIM scheduler or multistep
solver (DPM-Solver++, UniPC) (docs/guide/methods.md).

Per step of the respaced schedule (``scheduler.set_timesteps(N)`` over T = 1000):

    ε = unet(x_t, t).sample
    x0|t = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t            (Ho et al. 2020)
    x̂0|t = correction(x0|t, step)               (null space, DDNM+, guidance, ...)
    x̂0|t = clip(x̂0|t, −1, 1)                    (only with ``clip_x0=True``; off by default)
    x_t' = update(x_t, ε, x̂0|t)                 (a named update form, :data:`UPDATES`)
    x_t' = x_t' − correction.x_t_guidance(...)   (only for corrections that guide x_t: DPS;
                                                 not at the last step, below)

Both update forms are x_t' = √ᾱ_t' x̂0 + σ_t (η_t z + √(1−η_t²) e) with σ_t = √(1−ᾱ_t')
(:class:`~singexp.samplers.base.StepInfo`); which one a result used must be reported:

- ``posterior``: e = the equivalent noise ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t), handed to
  ``scheduler.step(ε', t, x_t, eta=η)``: DDIM with η (DDIM eq. 12), so η_t = σ_DDIM(η)/σ_t; with
  a DDPM scheduler (or DDIM at η = 1) it is Algorithm 1's posterior step q(x_t' | x_t, x̂0).
  With a multistep solver (``sampler.scheduler=dpmsolver++ | unipc``, η = 0) the same ε' goes
  to its ``step``, which turns it back into x̂0 (data prediction) and extrapolates from the
  corrected x̂0 of this and the previous step.
- ``ddnm``: e = the model's ε_θ and η_t = η (DDNM code ``ddnm_diffusion``).

A correction that replaces the noise term (DDNM+) gets z and e and returns the whole term; the
scheduler's step is then written out by the formula above (equal to it; tested).

Nothing is clipped unless ``clip_x0`` is set (DDNM does not clip; the schedulers are built with
``clip_sample=False``). The output is the last x̂0|t (DDNM returns ``x0_preds[-1]``), for every
correction: the last step's x_t' is not used. So the last step of a DPS-form correction (one that
guides x_t) runs the UNet forward only: its push would move only that unused x_t' (one UNet
backward saved; a method's NFE is :func:`~singexp.samplers.nfe.loop_nfe`). Time travel needs a
scheduler stateless in t (DDPM, DDIM): it revisits timesteps; the multistep schedulers
(DPM-Solver++, UniPC) keep the previous steps' x̂0 and run without it. Non-finite values stop
the loop with a :class:`SamplingError` naming the step.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from singexp.errors import ConfigError, SingexpError
from singexp.samplers.base import Correction, StepInfo

Generator = torch.Generator | list[torch.Generator] | None
#: ``hook(desc, total)``: a context manager yielding the function called after each step
#: (:func:`singexp.progress.sampling` renders it; the loop itself draws nothing)
ProgressHook = Callable[[str, int], AbstractContextManager[Callable[[], None]]]


class SamplingError(SingexpError):
    """Sampling produced NaN or infinite values (a diverging correction or a bad setting)."""


def _noise(like: Tensor, generator: Generator) -> Tensor:
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def is_multistep(scheduler: Any) -> bool:
    """A multistep solver (DPM-Solver++, UniPC: ``sampler.scheduler=dpmsolver++ | unipc``): it
    keeps the previous steps' x̂0 (``model_outputs``) and is deterministic (η = 0)."""
    return hasattr(scheduler, "model_outputs")


# ---- update forms -------------------------------------------------------------------------
class UpdateForm:
    """x_t, ε_θ, x̂0 → x_t'. ``bind`` checks the scheduler/η/correction before sampling."""

    name: str = ""

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        self.eta = float(eta)

    def step_eta(self, alpha_bar: float, alpha_bar_prev: float) -> float:
        """η_t: the share of fresh noise in the step's noise budget σ_t = √(1−ᾱ_t')."""
        raise NotImplementedError

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        correction: Correction,
        generator: Generator,
    ) -> Tensor:
        raise NotImplementedError


def _written_out(
    x0_hat: Tensor, direction: Tensor, step: StepInfo, correction: Correction, generator: Generator
) -> Tensor:
    """x_t' = √ᾱ_t' x̂0 + (the correction's noise term for z and e) — module docstring."""
    noise = correction.step_noise(step, _noise(x0_hat, generator), direction)
    if noise is None:
        raise TypeError(f"{correction!r} announced replaces_noise but returned no noise term")
    return step.sqrt_alpha_bar_prev * x0_hat + noise


class PosteriorUpdate(UpdateForm):
    """(a) the scheduler's own step on the equivalent noise ε' (docs/guide/methods.md)."""

    name = "posterior"

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        super().bind(scheduler, eta, correction)
        params = inspect.signature(scheduler.step).parameters
        self.takes_eta = "eta" in params
        self.takes_generator = "generator" in params
        self.multistep = is_multistep(scheduler)
        if self.multistep:
            check_multistep(type(scheduler).__name__, self.eta, correction.replaces_noise)
        elif not self.takes_eta and self.eta != 1.0:
            raise ConfigError(
                "sampler.eta",
                f"{type(scheduler).__name__}.step has no η (its posterior step is η = 1); "
                "set sampler.eta=1.0 or use a DDIM scheduler",
            )

    def step_eta(self, alpha_bar: float, alpha_bar_prev: float) -> float:
        if self.multistep:  # deterministic solvers: no fresh noise
            return 0.0
        eta = self.eta if self.takes_eta else 1.0
        budget2 = 1 - alpha_bar_prev
        if budget2 <= 0:
            return 0.0
        # DDIM eq. 16: σ_DDIM(η)² = η² (1−ᾱ_t')/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_t'); η = 1: DDPM posterior
        var = budget2 / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        return min(eta * math.sqrt(max(var, 0.0) / budget2), 1.0)

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        correction: Correction,
        generator: Generator,
    ) -> Tensor:
        if x0_hat is x0:  # nothing corrected: the model's ε is the equivalent noise, exactly
            eps_step = eps
        else:  # docs/guide/methods.md: ε' = (x_t − √ᾱ_t x̂0) / √(1−ᾱ_t)
            eps_step = (x_t - step.sqrt_alpha_bar * x0_hat) / step.sqrt_one_minus_alpha_bar
        if correction.replaces_noise:
            return _written_out(x0_hat, eps_step, step, correction, generator)
        kwargs: dict[str, Any] = {"eta": self.eta} if self.takes_eta else {}
        if self.takes_generator:
            kwargs["generator"] = generator
        # a multistep solver converts ε' back to x̂0 (its data prediction: x0 = (x_t − σ_t ε')/α_t,
        # Lu et al. 2022 eq. 3 / Zhao et al. 2023), so it extrapolates from the corrected x̂0s
        return scheduler.step(eps_step, step.timestep, x_t, **kwargs).prev_sample


class DDNMUpdate(UpdateForm):
    """(b) x_t' = √ᾱ_t' x̂0 + √(1−ᾱ_t') (η z + √(1−η²) ε_θ) (DDNM code, docs/guide/methods.md)."""

    name = "ddnm"

    def bind(self, scheduler: Any, eta: float, correction: Correction) -> None:
        super().bind(scheduler, eta, correction)
        if is_multistep(scheduler):
            raise ConfigError(
                "sampler.update",
                f"ddnm writes its own step and would ignore {type(scheduler).__name__}'s "
                "multistep solver; set sampler.update=posterior",
            )
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError("sampler.eta", f"must lie in [0, 1] for update=ddnm, got {eta}")

    def step_eta(self, alpha_bar: float, alpha_bar_prev: float) -> float:
        return self.eta

    def __call__(
        self,
        scheduler: Any,
        x_t: Tensor,
        eps: Tensor,
        x0: Tensor,
        x0_hat: Tensor,
        step: StepInfo,
        correction: Correction,
        generator: Generator,
    ) -> Tensor:
        if correction.replaces_noise:
            return _written_out(x0_hat, eps, step, correction, generator)
        c_z, c_e = step.noise_coefficients  # η_t = η for this form
        x = step.sqrt_alpha_bar_prev * x0_hat + c_e * eps
        if self.eta > 0:
            x = x + c_z * _noise(x_t, generator)
        return x


#: update form name -> class (config ``sampler.update``)
UPDATES: dict[str, type[UpdateForm]] = {"posterior": PosteriorUpdate, "ddnm": DDNMUpdate}


def check_multistep(name: str, eta: float, replaces_noise: bool) -> None:
    """A multistep solver runs the posterior form at η = 0 without a noise-sharing correction
    (DDNM+): it has no fresh noise to share out."""
    if eta != 0.0:
        raise ConfigError(
            "sampler.eta", f"{name} is deterministic (η = 0); set sampler.eta=0.0, got {eta}"
        )
    if replaces_noise:
        raise ConfigError(
            "sampler.sigma_y",
            f"DDNM+ (σ_y > 0) shares out fresh noise, which {name} has none of; "
            "set sampler.sigma_y=0.0 or sampler.scheduler=ddim",
        )


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
    """Per-step schedule values for the scheduler's current timesteps (a multistep solver
    steps to the next listed timestep, and from the last to σ = 0, ᾱ = 1)."""
    timesteps = scheduler.timesteps
    multistep = is_multistep(scheduler)
    infos = []
    for k, t in enumerate(timesteps):
        ab = scheduler.alphas_cumprod[int(t)]
        if multistep:
            last = k + 1 == len(timesteps)
            ab_prev = torch.tensor(1.0) if last else scheduler.alphas_cumprod[int(timesteps[k + 1])]
        else:
            ab_prev = previous_alpha_bar(scheduler, t)
        infos.append(
            StepInfo(
                index=k,
                num_steps=len(timesteps),
                timestep=t,
                alpha_bar=ab,
                alpha_bar_prev=ab_prev,
                sqrt_alpha_bar=ab**0.5,  # as diffusers: alpha_prod_t ** 0.5
                sqrt_one_minus_alpha_bar=(1 - ab) ** 0.5,  # beta_prod_t ** 0.5
                eta=form.step_eta(float(ab), float(ab_prev)),
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


def _model_step(
    unet: Any, scheduler: Any, x: Tensor, step: StepInfo, channels: int
) -> tuple[Tensor, Tensor]:
    """ε_θ(x_t, t) and x0|t = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t (Ho et al. 2020)."""
    t = step.timestep
    eps = unet(scheduler.scale_model_input(x, t), t).sample[:, :channels]
    return eps, (x - step.sqrt_one_minus_alpha_bar * eps) / step.sqrt_alpha_bar


#: images per UNet forward + backward of a guided step (DPS); None: the whole batch. Set by
#: :func:`guidance_micro_batch` (``evaluate.guidance_batch``): the same numbers in less memory,
#: each image's gradient being its own (per-image residuals), and no noise is drawn there
GUIDANCE_BATCH: ContextVar[int | None] = ContextVar("guidance_batch", default=None)


@contextmanager
def guidance_micro_batch(size: int | None) -> Iterator[None]:
    """Guided steps of the loops run inside take ``size`` images at a time (None: all)."""
    token = GUIDANCE_BATCH.set(size)
    try:
        yield
    finally:
        GUIDANCE_BATCH.reset(token)


def _guided_model_step(
    unet: Any, scheduler: Any, x: Tensor, step: StepInfo, channels: int, correction: Correction
) -> tuple[Tensor, Tensor, Tensor]:
    """ε, x0|t and the x_t guidance of a DPS step, keeping the UNet's graph from x_t to x0|t,
    in micro-batches of :data:`GUIDANCE_BATCH` images (:meth:`Correction.rows`)."""
    size = x.shape[0]
    chunk = GUIDANCE_BATCH.get() or size
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, size, chunk):
        rows = slice(start, min(start + chunk, size))
        part = correction if chunk >= size else correction.rows(rows)
        with torch.enable_grad():
            x_in = x[rows].detach().requires_grad_(True)
            eps, x0 = _model_step(unet, scheduler, x_in, step, channels)
            push = part.x_t_guidance(x_in, x0, step).detach()
        parts.append((eps.detach(), x0.detach(), push))
    if len(parts) == 1:
        return parts[0]
    eps, x0, push = (torch.cat(p) for p in zip(*parts, strict=True))
    return eps, x0, push


def guided(correction: Correction, step: StepInfo) -> bool:
    """Whether the loop runs ``step`` with the correction's x_t guidance (a UNet backward): where
    :meth:`Correction.guides_at` says so, never at the last step (module docstring)."""
    return correction.guides_x_t and not step.is_last and correction.guides_at(step)


def _check_finite(x: Tensor, step: StepInfo, desc: str) -> None:
    if not torch.isfinite(x).all():
        from singexp.weights import nonfinite_files

        where = f"{desc}: non-finite values at step {step.index + 1}/{step.num_steps} "
        where += f"(t = {int(step.timestep)})"
        broken = nonfinite_files()  # a model's own weights, not the settings
        if broken:
            raise SamplingError(
                f"{where}: the weights of {', '.join(broken)} are not finite (NaN or inf); "
                "re-export or retrain that model"
            )
        raise SamplingError(f"{where}; lower the guidance step (zeta) or check the settings")


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
    clip_x0: bool = False,
    x_T: Tensor | None = None,
    callback: StepCallback | None = None,
    progress: bool | ProgressHook = True,
    desc: str = "sampling",
) -> Tensor:
    """Sample (B, C, H, W) images with ``steps`` respaced steps and an x0 correction.

    ``unet``: an ε-prediction diffusers ``UNet2DModel`` (``unet(x, t).sample``; learned-variance
    outputs with 2C channels use the first C). ``scheduler``: DDPMScheduler / DDIMScheduler
    (``set_timesteps(steps)`` is called here), built with ``clip_sample=False``: clipping is
    ``clip_x0`` (x̂0|t to [−1, 1] after the correction). ``update``: a name in :data:`UPDATES`
    or an :class:`UpdateForm`. ``generator``: a torch.Generator, one per image, or None; the
    same seed gives identical outputs. ``callback(step, x_t, x̂0)`` runs after each correction.
    ``progress``: a :data:`ProgressHook` entered with ``desc`` and the number of steps, True for
    :func:`singexp.progress.sampling` (method, batch, sweep point, ETA), False for none.
    Returns the last x̂0|t; a guiding correction's last step is not guided (module docstring).
    """
    correction = correction if correction is not None else Correction()
    form = make_update(update)
    form.bind(scheduler, eta, correction)
    if getattr(scheduler.config, "clip_sample", False) or getattr(
        scheduler.config, "thresholding", False
    ):
        raise ValueError("build the scheduler with clip_sample=False; clipping is clip_x0")
    travel = time_travel or TimeTravel()
    if travel.enabled and is_multistep(scheduler):
        raise ConfigError(
            "sampler.time_travel",
            f"{type(scheduler).__name__} keeps the previous steps' x̂0 and cannot revisit "
            "timesteps; set sampler.time_travel.repeat=1 or sampler.scheduler=ddim",
        )
    scheduler.set_timesteps(int(steps))
    infos = step_infos(scheduler, form)
    moves = travel.plan(len(infos))

    device, dtype = _device_dtype(unet)
    if x_T is None:
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
        x = x * scheduler.init_noise_sigma
    else:
        x = x_T.to(device=device, dtype=dtype)
    channels = x.shape[1]
    x0_hat = x
    total = sum(k_to > k for k, k_to in moves)
    with progress_context(progress, desc, total) as advance:
        for k, k_to in moves:
            if k_to < k:  # time travel: back from level k to level k_to
                alpha_from = float(infos[k - 1].alpha_bar_prev)
                x = _renoise(x, alpha_from, float(infos[k_to].alpha_bar), generator)
                continue
            step = infos[k]
            push = None
            if guided(correction, step):
                eps, x0, push = _guided_model_step(unet, scheduler, x, step, channels, correction)
            else:
                eps, x0 = _model_step(unet, scheduler, x, step, channels)
            x0_hat = correction(x0, step)
            if clip_x0:
                x0_hat = x0_hat.clamp(-1, 1)
            if callback is not None:
                callback(step, x, x0_hat)
            x = form(scheduler, x, eps, x0, x0_hat, step, correction, generator)
            if push is not None:
                x = x - push
            _check_finite(x, step, desc)
            advance()
    return x0_hat


# ---- what the restorers (SING-Zero, SING-INN) share -----------------------------------------
class LoopOptions(TypedDict, total=False):
    """The loop keywords of :func:`~singexp.samplers.sing_zero.sing_zero` and
    :func:`~singexp.samplers.sing_inn.sing_inn` (defaults: :data:`RESTORER_DEFAULTS`)."""

    steps: int
    eta: float
    update: str
    generator: Generator
    time_travel: TimeTravel | None
    clip_x0: bool
    clamp: bool
    progress: bool


#: a restorer's loop settings where its caller gives none (``clamp``: the result to [-1, 1])
RESTORER_DEFAULTS: LoopOptions = {
    "steps": 100,
    "eta": 0.85,
    "update": "posterior",
    "generator": None,
    "time_travel": None,
    "clip_x0": False,
    "clamp": True,
    "progress": True,
}


#: the :class:`LoopOptions` a restorer's config holds (all but the caller's ``generator``)
LOOP_SETTINGS: tuple[str, ...] = tuple(k for k in LoopOptions.__annotations__ if k != "generator")


def settings_of(config: Any, names: Sequence[str] = LOOP_SETTINGS) -> dict[str, Any]:
    """``{name: config.name}`` for ``names`` (by default the loop settings)."""
    return {name: getattr(config, name) for name in names}


def loop_options(config: Any, generator: Generator = None) -> LoopOptions:
    """The loop keywords of a checked restorer config (``SingZeroConfig``, ``SingINNConfig``,
    ``DPSJSCCConfig``) with the caller's ``generator``."""
    return cast(LoopOptions, {**settings_of(config), "generator": generator})


def sample_restoration(
    unet: Any,
    scheduler: Any,
    shape: Sequence[int],
    correction: Correction,
    desc: str,
    options: LoopOptions,
) -> Tensor:
    """:func:`sample` with ``options`` over :data:`RESTORER_DEFAULTS`; the result clipped to
    [-1, 1] when ``clamp`` (which may break A x̃ = y where x̂0 leaves that range)."""
    kwargs: dict[str, Any] = {**RESTORER_DEFAULTS, **options}
    clamp = kwargs.pop("clamp")
    out = sample(unet, scheduler, shape, correction, desc=desc, **kwargs)
    return out.clamp(-1, 1) if clamp else out


def progress_context(
    progress: bool | ProgressHook, desc: str, total: int
) -> AbstractContextManager[Callable[[], None]]:
    """The progress hook of ``sample`` (and InverseJSCC's iterations): True →
    :func:`singexp.progress.sampling`, False → none, a callable → itself."""
    if progress is True:
        from singexp.progress import sampling

        return sampling(desc, total)
    if not progress:
        return nullcontext(lambda: None)
    return progress(desc, total)
