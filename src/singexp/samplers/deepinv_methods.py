"""DiffPIR and DDRM as singexp methods, run by deepinv's samplers (``deepinv.sampling``).

Both restore the received image x̂ as a measurement of singexp's prior: its ε-prediction UNet and
its scheduler's ᾱ_t wrapped as deepinv's denoiser, the operator A and the DeepJSCC chain wrapped
as deepinv's physics (:mod:`~singexp.samplers.deepinv_bridge`). deepinv runs the algorithm;
nothing of it is re-implemented here.

- **DDRM** (Kawar et al., "Denoising Diffusion Restoration Models", NeurIPS 2022;
  ``deepinv.sampling.DDRM``): y = A x̂ with A = average pooling (any tile operator), its SVD known
  in closed form, measurement noise σ_y. The noise levels of its steps are the prior's
  σ_t = √((1 − ᾱ_t)/ᾱ_t) at the method's respaced timesteps (one UNet call each: NFE = steps).
  η and η_b are the paper's (its experiments: η = 0.85, η_b = 1).
- **DiffPIR** (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration",
  CVPRW 2023; ``deepinv.sampling.DiffPIR``): per step a denoising step x0, the data step
  x̂0 = argmin_x γ_t/2 ‖y − A(x)‖² + ½ ‖x − x0‖² with γ_t = 1/(2ρ_t), ρ_t = λσ_n²/σ̄_t², and a
  re-noising step with ζ (paper Alg. 1, as deepinv writes it). ``forward: linear`` takes
  y = A x̂ with A's SVD prox; ``forward: jscc`` takes y = x̂ with the noiseless DeepJSCC chain
  as the (non-linear) A, its prox by gradient steps (DiffPIR's form needs only a prox of the
  data term, so it allows the chain; DDRM's needs an SVD, so it does not). DiffPIR runs
  deepinv's own schedule (the DDPM linear β 1e-4..0.02, T = 1000, quadratic timestep spacing
  as DiffPIR's code) and asks the denoiser for the noise level of each step, which the wrapper
  maps to the prior's nearest timestep.

σ_y is in the images' [−1, 1] units, as SING-Zero's (``auto``: measured, samplers/sing_zero.py);
deepinv gets σ_y/2 (its [0, 1] units).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from torch import Tensor

from singexp.errors import ConfigError
from singexp.samplers.dps_jscc import JSCCForward, _seed_from, as_chain, require_codec
from singexp.samplers.loop import Generator, progress_context
from singexp.samplers.sing_zero import SHARED_KEYS, SIGMA_Y_AUTO, Keys

#: DiffPIR's forward models: the linear A (operator group) | the DeepJSCC chain
FORWARDS: tuple[str, ...] = ("linear", "jscc")
#: the least noise level DiffPIR is given, in [0, 1] units: its ρ_t = λσ_n²/σ̄_t² is 0 at
#: σ_n = 0 and its prox then divides by 0; DiffPIR's code floors σ_n the same way
#: (main_ddpir_sisr.py: sigma = max(0.001, noise_level_img))
DIFFPIR_NOISE_FLOOR = 0.001


def _sigma_y(k: Keys, cfg: Mapping[str, Any], default: float | str) -> float | str:
    """``sigma_y``: ``auto`` or a number ≥ 0 (image units, [−1, 1])."""
    value = cfg.get("sigma_y", default)
    if str(value).strip().lower() == SIGMA_Y_AUTO:
        return SIGMA_Y_AUTO
    number = k.number("sigma_y", default, float)
    if number < 0:
        raise k.fail("sigma_y", f"must be ≥ 0 or auto, got {number}")
    return float(number)


def _sigma_y_value(sigma_y: float | str, measured: float | None, name: str) -> float:
    """σ_y as a number: ``measured`` (the codec's, at the test SNR) when ``auto``."""
    if sigma_y != SIGMA_Y_AUTO:
        return float(sigma_y)
    if measured is None or not math.isfinite(measured):
        raise ConfigError(f"methods.{name}.sigma_y", "auto needs σ_y measured from the codec")
    return float(measured)


def _in_unit(k: Keys, name: str, default: float) -> float:
    value = k.number(name, default, float)
    if not 0 <= value <= 1:
        raise k.fail(name, f"must lie in [0, 1], got {value}")
    return float(value)


def _steps(k: Keys, default: int, least: int) -> int:
    steps = k.number("steps", default, int)
    if not least <= steps <= 1000:
        raise k.fail("steps", f"must lie in {least}..1000 (T = 1000), got {steps}")
    return int(steps)


def _measured(record: dict[str, Any], sigma_y: float | str, measured: float | None) -> None:
    if sigma_y == SIGMA_Y_AUTO:
        record["sigma_y_measured"] = measured


# ---- DiffPIR ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffPIRConfig:
    """``conf/sampler/diffpir.yaml``, checked: errors name the key under ``prefix``."""

    steps: int = 100
    lambda_: float = 1.0
    zeta: float = 0.1
    sigma_y: float | str = SIGMA_Y_AUTO
    forward: str = "linear"
    prox_steps: int = 5
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], prefix: str = "sampler") -> DiffPIRConfig:
        k = Keys(cfg, prefix, {f.name for f in dataclasses.fields(cls)} | {"name"})
        lam = k.number("lambda_", cls.lambda_, float)
        if not (math.isfinite(lam) and lam > 0):
            raise k.fail("lambda_", f"must be a finite number > 0, got {lam}")
        forward = k.choice("forward", cls.forward, FORWARDS)
        sigma_y = _sigma_y(k, cfg, cls.sigma_y)
        if forward == "jscc" and sigma_y == SIGMA_Y_AUTO:
            raise k.fail(
                "sigma_y",
                "auto measures A x̂ − A x of the linear A; with forward=jscc give a number "
                "(the std of x̂ − D(E(x)) in image units, e.g. 0.1)",
            )
        prox_steps = k.number("prox_steps", cls.prox_steps, int)
        if not 1 <= prox_steps <= 100:
            raise k.fail("prox_steps", f"must lie in 1..100, got {prox_steps}")
        return cls(
            steps=_steps(k, cls.steps, 2),
            lambda_=float(lam),
            zeta=_in_unit(k, "zeta", cls.zeta),
            sigma_y=sigma_y,
            forward=forward,
            prox_steps=int(prox_steps),
            **k.flags(clamp=cls.clamp, progress=cls.progress),
        )

    def noise_level(self, measured: float | None) -> float:
        """The noise level deepinv's DiffPIR gets, in [0, 1] units (σ_y/2, floored)."""
        sigma = _sigma_y_value(self.sigma_y, measured, "diffpir")
        return max(DIFFPIR_NOISE_FLOOR, sigma / 2)

    def record(self, operator: Any, measured: float | None) -> dict[str, Any]:
        """What ran, for metrics.json ``samplers`` (besides every config key)."""
        if self.forward == "linear":
            physics = f"linear: y = A x̂, A = {operator!r} with its SVD (closed-form prox)"
            measurement = repr(operator)
        else:
            physics = (
                "jscc: y = x̂, A = the noiseless DeepJSCC chain at the test SNR "
                f"(prox: {self.prox_steps} gradient steps)"
            )
            measurement = "the DeepJSCC chain at the test SNR (noiseless)"
        record: dict[str, Any] = {
            "algorithm": "DiffPIR (Zhu et al. 2023) by deepinv.sampling.DiffPIR",
            "deepinv": version("deepinv"),
            "physics": physics,
            "measurement_operator": measurement,
            "noise_level": self.noise_level(measured),
            "schedule": "DiffPIR's own: linear β 1e-4..0.02, T = 1000, quadratic spacing "
            "(deepinv); each noise level → the prior's nearest timestep",
            "clip_x0": "always (DiffPIR clips the denoised image to [-1, 1])",
        }
        _measured(record, self.sigma_y, measured)
        return record


def restore_diffpir(
    c: DiffPIRConfig,
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    operator: Any,
    snr_db: Tensor | float,
    generator: Generator = None,
    sigma_y: float | None = None,
    codec: Any = None,
    **_: Any,
) -> Tensor:
    """The ``diffpir`` restorer for :data:`~singexp.samplers.registry.SAMPLERS` on x̂ (B, C, H, W)
    in [−1, 1]; ``sigma_y``: what ``sigma_y=auto`` measured; the same generator seed gives
    the same output."""
    from deepinv.optim.data_fidelity import L2
    from deepinv.sampling import DiffPIR

    from singexp.samplers import deepinv_bridge as bridge

    device = next(unet.parameters()).device
    x = x_hat.to(device)
    noise = c.noise_level(sigma_y)
    physics: Any
    if c.forward == "linear":
        physics = bridge.TileSVDPhysics(operator, tuple(x.shape), noise).to(device)
        y = physics.A(bridge.to_unit(x))
        x_init = physics.A_dagger(y)
    else:
        chain = as_chain(require_codec(codec, "diffpir")).to(device)
        physics = bridge.ChainPhysics(JSCCForward(chain, snr_db), noise, c.prox_steps)
        physics = physics.to(device)
        y = x_init = bridge.to_unit(x)
    seed = _seed_from(generator)  # one draw, as DPS-JSCC seeds its channel draws
    with progress_context(c.progress, "DiffPIR", c.steps) as advance:
        denoiser = bridge.PriorDenoiser(unet, scheduler.alphas_cumprod, True, advance)
        sampler = DiffPIR(
            denoiser,
            L2(),
            sigma=noise,
            max_iter=c.steps,
            zeta=c.zeta,
            lambda_=c.lambda_,
            device=device,
        )
        out = bridge.run_seeded(seed, device, lambda: sampler(y, physics, x_init=x_init))
    out = bridge.from_unit(out)
    return out.clamp(-1, 1) if c.clamp else out


# ---- DDRM ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DDRMConfig:
    """``conf/sampler/ddrm.yaml``, checked: errors name the key under ``prefix``."""

    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    sigma_y: float | str = SIGMA_Y_AUTO
    clip_x0: bool = True
    clamp: bool = True
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], prefix: str = "sampler") -> DDRMConfig:
        k = Keys(cfg, prefix, {f.name for f in dataclasses.fields(cls)} | SHARED_KEYS)
        return cls(
            steps=_steps(k, cls.steps, 1),
            eta=_in_unit(k, "eta", cls.eta),
            eta_b=_in_unit(k, "eta_b", cls.eta_b),
            sigma_y=_sigma_y(k, cfg, cls.sigma_y),
            **k.flags(clip_x0=cls.clip_x0, clamp=cls.clamp, progress=cls.progress),
        )

    def noise_level(self, measured: float | None) -> float:
        """σ_y in deepinv's [0, 1] units (σ_y/2)."""
        return _sigma_y_value(self.sigma_y, measured, "ddrm") / 2

    def record(self, operator: Any, measured: float | None) -> dict[str, Any]:
        """What ran, for metrics.json ``samplers`` (besides every config key)."""
        record: dict[str, Any] = {
            "algorithm": "DDRM (Kawar et al. 2022) by deepinv.sampling.DDRM",
            "deepinv": version("deepinv"),
            "physics": f"linear: y = A x̂, A = {operator!r} with its SVD",
            "measurement_operator": repr(operator),
            "noise_level": self.noise_level(measured),
            "schedule": "the prior's σ_t at the scheduler's respaced timesteps",
        }
        _measured(record, self.sigma_y, measured)
        return record


def restore_ddrm(
    c: DDRMConfig,
    x_hat: Tensor,
    *,
    unet: Any,
    scheduler: Any,
    operator: Any,
    generator: Generator = None,
    sigma_y: float | None = None,
    **_: Any,
) -> Tensor:
    """The ``ddrm`` restorer for :data:`~singexp.samplers.registry.SAMPLERS` on x̂ (B, C, H, W)
    in [−1, 1]; ``sigma_y``: what ``sigma_y=auto`` measured; the same generator seed gives
    the same output."""
    from deepinv.sampling import DDRM

    from singexp.samplers import deepinv_bridge as bridge

    device = next(unet.parameters()).device
    x = x_hat.to(device)
    physics = bridge.TileSVDPhysics(operator, tuple(x.shape), c.noise_level(sigma_y)).to(device)
    y = physics.A(bridge.to_unit(x))
    seed = _seed_from(generator)  # one draw, as DPS-JSCC seeds its channel draws
    with progress_context(c.progress, "DDRM", c.steps) as advance:
        denoiser = bridge.PriorDenoiser(unet, scheduler.alphas_cumprod, c.clip_x0, advance)
        sigmas = bridge.ddrm_sigmas(scheduler, c.steps)
        sampler = DDRM(denoiser, sigmas=sigmas, eta=c.eta, etab=c.eta_b)
        out = bridge.run_seeded(seed, device, lambda: sampler(y, physics))
    out = bridge.from_unit(out)
    return out.clamp(-1, 1) if c.clamp else out
