"""singexp's DPS-JSCC step against deepinv's DPS (``deepinv.sampling.DPS``), on identical inputs.

One guided step t0 → t1 of each, from the same x_t, with the same prior (the shipped UNet: the
same ε), the same noise draw and the same physics — the noiseless DeepJSCC chain at the test SNR
(the shipped codec of the main job's BCR). singexp's step runs through the production loop
(:func:`singexp.samplers.loop.sample` with :class:`~singexp.samplers.dps_jscc.JSCCMeasurement`,
as :func:`~singexp.samplers.dps_jscc.dps_jscc` builds it); deepinv's through ``DPS.forward``
with a one-step DDPM solver. Both must give the same x_{t1}, and the same guidance term, to 1e-5.

Where the two differ by design, the settings are mapped and the rest is checked:

- **ζ's normalisation.** singexp takes Chung et al.'s Alg. 1 literally:
  x_t' −= ζ/‖r‖ · ∇_{x_t}‖r‖² = 2ζ ∇_{x_t}‖r‖. deepinv's ``weight`` w multiplies ∇_{x_t}‖r‖
  inside the score, which its ancestral step scales by s0 s1 (σ0² − σ1²) (s = √ᾱ,
  σ² = (1 − ᾱ)/ᾱ; AncestralSolver.step at η = 1), and its residual is in [0, 1] units, half
  singexp's. So w = 4ζ_t / (s0 s1 (σ0² − σ1²)).
- **ζ's schedule.** deepinv's weight is constant; singexp's ``sqrt_alpha_bar`` (ζ_t = ζ √ᾱ_t)
  is mapped into w at the step.
- **Clipping x0.** deepinv's DPS clips its denoiser's output to [−1, 1] although that output
  is in [0, 1] (a no-op); the clipping that singexp's ``clip_x0`` does (the update and A both
  take x0|t clipped to [−1, 1]) is done by the wrapped denoiser (``clip=True``).
- **The time grid.** deepinv's VP SDE is continuous (β from 0.1 to 20); its solver is given the
  two times whose ᾱ(t) = exp(−∫β) equal the scheduler's ᾱ at t0 and t1.
- **The update form.** singexp feeds the equivalent noise of x̂0 to the scheduler's DDIM step
  at η = 1; deepinv's ancestral step uses the score (s x̂0 − x)/(s σ)². Both are the DDPM
  posterior step q(x_t1 | x_t0, x̂0) (Ho et al. 2020, eq. 6–7): compared, not mapped.
- deepinv's final extra denoising (``denoise_output``) is off: one step is compared.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from deepinv.sampling import DPS, DDPMSolver
from torch import Tensor

from singexp.config import ASSETS_DIR
from singexp.data.shapes import ShapesDataset
from singexp.models.jscc import load_codec
from singexp.models.prior import load_prior
from singexp.samplers.deepinv_bridge import ChainPhysics, PriorDenoiser, to_unit
from singexp.samplers.dps_jscc import JSCCForward, JSCCMeasurement
from singexp.samplers.loop import sample
from singexp.samplers.schedulers import build_scheduler

SNR = 0.0
#: deepinv's VP SDE: β(t) = β_min + t (β_max − β_min), ᾱ(t) = exp(−B(t)) (Song et al. 2021)
BETA_MIN, BETA_MAX = 0.1, 20.0


class _Stop(Exception):
    """Raised by the loop's callback once the step under test is done."""


@pytest.fixture(scope="module")
def parts() -> dict[str, Any]:
    """The shipped prior and codec, two test shapes and what the codec made of them."""
    unet = load_prior("embedded", expected_size=32)
    codec = load_codec(ASSETS_DIR / "jscc_shapes32" / "jscc_1_48.safetensors").codec.eval()
    codec.requires_grad_(False)
    data = ShapesDataset(32, 2, 0, "test", 1, 4)
    x = torch.stack([data[i] for i in range(2)])
    snr = torch.full((2,), SNR)
    with torch.no_grad():
        x_hat = codec(x, snr, torch.Generator().manual_seed(1)).clamp(-1, 1)
    return {"unet": unet, "codec": codec, "x_hat": x_hat, "snr": snr}


def scheduler() -> Any:
    """DDIM with the prior's schedule, as restoration builds DPS-JSCC's (prior/embedded.yaml)."""
    return build_scheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, schedule="linear", kind="ddim"
    )


def continuous_time(alpha_bar: float) -> float:
    """The t of deepinv's VP SDE with ᾱ(t) = ``alpha_bar``: B(t) = β_min t + ½ t² (β_max − β_min)
    = −log ᾱ, solved for t ≥ 0."""
    b, a = BETA_MIN, (BETA_MAX - BETA_MIN) / 2
    return (-b + math.sqrt(b * b + 4 * a * -math.log(alpha_bar))) / (2 * a)


def singexp_step(
    parts: dict[str, Any], x_t: Tensor, zeta: float, schedule: str, steps: int, seed: int
) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """One guided DPS-JSCC step of the production loop from ``x_t`` at the first of ``steps``
    respaced timesteps: (x_t1, the guidance term subtracted from x_t1, (t0, t1))."""
    forward = JSCCForward(parts["codec"], parts["snr"])
    correction = JSCCMeasurement(forward, parts["x_hat"], zeta, schedule, clip_input=True)
    pushes: list[Tensor] = []
    guide = correction.x_t_guidance

    def recorded(x: Tensor, x0: Tensor, step: Any) -> Tensor:
        pushes.append(guide(x, x0, step))
        return pushes[-1]

    correction.x_t_guidance = recorded  # type: ignore[method-assign]
    seen: list[tuple[Any, Tensor]] = []

    def stop_after_first(step: Any, x: Tensor, x0_hat: Tensor) -> None:
        seen.append((step, x))
        if step.index == 1:
            raise _Stop

    sched = scheduler()
    with pytest.raises(_Stop):
        sample(
            parts["unet"],
            sched,
            x_t.shape,
            correction,
            steps=steps,
            eta=1.0,  # DPS's DDPM step (conf/sampler/dps_jscc.yaml)
            update="posterior",
            generator=torch.Generator().manual_seed(seed),
            clip_x0=True,
            x_T=x_t,
            callback=stop_after_first,
            progress=False,
        )
    (first, _), (second, x_t1) = seen
    return x_t1, pushes[0], (int(first.timestep), int(second.timestep))


def deepinv_step(
    parts: dict[str, Any], x_t: Tensor, zeta_t: float, t0: int, t1: int, seed: int
) -> Tensor:
    """One step of deepinv's DPS from ``x_t`` at t0 to t1 with the mapped weight."""
    ab = scheduler().alphas_cumprod.double()
    a0, a1 = float(ab[t0]), float(ab[t1])
    s0, s1 = math.sqrt(a0), math.sqrt(a1)
    sigma0_sq, sigma1_sq = (1 - a0) / a0, (1 - a1) / a1
    weight = 4 * zeta_t / (s0 * s1 * (sigma0_sq - sigma1_sq))  # module docstring
    times = torch.tensor([continuous_time(a0), continuous_time(a1)], dtype=torch.float32)
    solver = DDPMSolver(timesteps=times, rng=torch.Generator().manual_seed(seed))
    denoiser = PriorDenoiser(parts["unet"], scheduler().alphas_cumprod, clip=True)
    dps = DPS(denoiser, solver=solver, weight=weight, dtype=torch.float32)
    physics = ChainPhysics(JSCCForward(parts["codec"], parts["snr"]), sigma=0.0, steps=1)
    out = dps(to_unit(parts["x_hat"]), physics, x_init=x_t, denoise_output=False)
    return 2 * out - 1  # deepinv returns (x + 1)/2


@pytest.mark.parametrize(
    ("steps", "zeta", "schedule"),
    [(4, 0.3, "constant"), (10, 1.0, "constant"), (4, 0.5, "sqrt_alpha_bar")],
)
def test_one_dps_jscc_step_equals_deepinvs_dps_step(
    parts: dict[str, Any], steps: int, zeta: float, schedule: str
) -> None:
    x_t = torch.randn(parts["x_hat"].shape, generator=torch.Generator().manual_seed(5))
    ours, push, (t0, t1) = singexp_step(parts, x_t, zeta, schedule, steps, seed=9)
    zeta_t = zeta  # ζ_t of singexp's schedule at t0 (samplers/base.py Guidance.zeta_at)
    if schedule == "sqrt_alpha_bar":
        zeta_t *= math.sqrt(float(scheduler().alphas_cumprod[t0]))
    theirs = deepinv_step(parts, x_t, zeta_t, t0, t1, seed=9)
    unguided = deepinv_step(parts, x_t, 0.0, t0, t1, seed=9)
    # the guidance term: singexp subtracts `push`; deepinv's weight moves x_t1 by the same
    torch.testing.assert_close(unguided - theirs, push, rtol=0, atol=1e-5)
    # the whole step: same prior step, same noise, same guidance
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # the step guides, by far more than the tolerance: the comparisons above are not vacuous
    assert push.abs().max() > 1e-2
