"""The sampling loop, update forms and SING-Zero, on a tiny random diffusers UNet."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from omegaconf import OmegaConf
from torch import Tensor

from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.operators import AveragePool, ColorToGray, Identity, LinearOperator
from singexp.samplers import (
    Correction,
    NullSpace,
    NullSpacePlus,
    PosteriorUpdate,
    SingZeroConfig,
    StepInfo,
    TimeTravel,
    restore,
    sample,
    sing_zero,
)

SHAPE = (3, 3, 16, 16)
STEPS = 8


def ddim(**kw: Any) -> DDIMScheduler:
    return DDIMScheduler(clip_sample=False, **kw)


def ddpm(**kw: Any) -> DDPMScheduler:
    return DDPMScheduler(clip_sample=False, **kw)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(seed: int = 1, shape: tuple[int, ...] = SHAPE) -> Tensor:
    return torch.rand(shape, generator=gen(seed)) * 2 - 1


class Shift(Correction):
    """A correction that is not a projection: x̂0 = x0 + 0.1 (pins the ε' hand-off)."""

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return x0 + 0.1


# ---- schedule -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [ddim, ddpm])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_respaced_timesteps_match_diffusers(unet: UNet2DModel, make: Any, spacing: str) -> None:
    seen: list[int] = []
    eta = 1.0 if make is ddpm else 0.0
    sample(
        unet,
        make(timestep_spacing=spacing),
        (1, 3, 16, 16),
        steps=STEPS,
        eta=eta,
        generator=gen(),
        progress=False,
        callback=lambda s, x, x0: seen.append(int(s.timestep)),
    )
    reference = make(timestep_spacing=spacing)
    reference.set_timesteps(STEPS)
    assert seen == reference.timesteps.tolist()
    assert len(seen) == STEPS


# ---- update form (a): posterior = the scheduler's own step ---------------------------------
def bare_loop(
    unet: UNet2DModel,
    scheduler: Any,
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator,
    **step_kw: Any,
) -> tuple[Tensor, list[Tensor]]:
    """The plain diffusers loop (as DDIMPipeline/DDPMPipeline), recording each x_t."""
    scheduler.set_timesteps(steps)
    x = randn_tensor(shape, generator=generator, dtype=torch.float32)
    trajectory = []
    for t in scheduler.timesteps:
        trajectory.append(x)
        eps = unet(x, t).sample
        x = scheduler.step(eps, t, x, generator=generator, **step_kw).prev_sample
    return x, trajectory


@pytest.mark.parametrize(("make", "eta"), [(ddim, 0.0), (ddim, 0.85), (ddpm, 1.0)])
def test_posterior_with_identity_correction_is_the_bare_loop(
    unet: UNet2DModel, make: Any, eta: float
) -> None:
    step_kw = {"eta": eta} if make is ddim else {}
    expected, trajectory = bare_loop(unet, make(), SHAPE, STEPS, gen(3), **step_kw)
    seen: list[Tensor] = []
    out = sample(
        unet,
        make(),
        SHAPE,
        Correction(),
        steps=STEPS,
        eta=eta,
        generator=gen(3),
        progress=False,
        callback=lambda s, x, x0: seen.append(x),
    )
    assert all(torch.equal(a, b) for a, b in zip(seen, trajectory, strict=True))
    assert torch.equal(out, expected)


def test_posterior_hands_the_scheduler_the_equivalent_noise(unet: UNet2DModel) -> None:
    # reference: ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) into DDIMScheduler.step (SING.md §7)
    scheduler, g = ddim(), gen(5)
    scheduler.set_timesteps(STEPS)
    x = randn_tensor(SHAPE, generator=g)
    for t in scheduler.timesteps:
        ab = scheduler.alphas_cumprod[t]
        eps = unet(x, t).sample
        x0_hat = (x - (1 - ab).sqrt() * eps) / ab.sqrt() + 0.1
        eps_prime = (x - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        x = scheduler.step(eps_prime, t, x, eta=0.5, generator=g).prev_sample
    out = sample(
        unet, ddim(), SHAPE, Shift(), steps=STEPS, eta=0.5, generator=gen(5), progress=False
    )
    torch.testing.assert_close(out, x0_hat, rtol=1e-5, atol=1e-4)


def test_posterior_step_is_algorithm_1(unet: UNet2DModel) -> None:
    """With DDPM, one step is q(x_t−1 | x_t, x̂0) of SING.md §2, computed by hand."""
    scheduler = ddpm()
    scheduler.set_timesteps(STEPS)
    t, t_prev = scheduler.timesteps[2], scheduler.timesteps[3]
    ab, ab_prev = scheduler.alphas_cumprod[t].double(), scheduler.alphas_cumprod[t_prev].double()
    beta = 1 - ab / ab_prev  # the respaced β_t
    x_t, x0_hat, eps = images(7), images(8), images(9)
    form = PosteriorUpdate()
    form.bind(scheduler, 1.0, Correction())
    a, sigma = form.coefficients(float(ab), float(ab_prev))
    info = StepInfo(
        2,
        STEPS,
        t,
        ab.float(),
        ab_prev.float(),
        ab.float() ** 0.5,
        (1 - ab.float()) ** 0.5,
        a,
        sigma,
    )
    got = form(scheduler, x_t, eps, x_t, x0_hat, info, None, gen(11))
    z = randn_tensor(SHAPE, generator=gen(11))
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0_hat.double() + (
        (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    ) * x_t.double()
    std = ((1 - ab_prev) / (1 - ab) * beta).sqrt()
    torch.testing.assert_close(got.double(), mean + std * z.double(), rtol=1e-5, atol=1e-5)
    assert math.isclose(a, float(ab_prev.sqrt() * beta / (1 - ab)), rel_tol=1e-9)
    assert math.isclose(sigma, float(std), rel_tol=1e-9)


def test_posterior_coefficients_general_eta() -> None:
    """a_t, σ_t of the DDIM step written as a·x̂0 + b·x_t + σ z, for any η."""
    form = PosteriorUpdate()
    form.bind(ddim(), 0.3, Correction())
    ab, ab_prev = 0.4, 0.7
    a, sigma = form.coefficients(ab, ab_prev)
    # x̂0 = 1, x_t = 0: DDIM's x_t' = √ᾱ' x̂0 + √(1−ᾱ'−σ²) ε' with ε' = −√ᾱ x̂0/√(1−ᾱ)
    eps_prime = -math.sqrt(ab) / math.sqrt(1 - ab)
    direct = math.sqrt(ab_prev) + math.sqrt(1 - ab_prev - sigma**2) * eps_prime
    assert math.isclose(a, direct, rel_tol=1e-12)
    assert math.isclose(sigma, 0.3 * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)))


# ---- update form (b): DDNM's released form -------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_ddnm_form_by_hand(unet: UNet2DModel, eta: float) -> None:
    op, x_hat = AveragePool(4), images(12)
    y = op.A(x_hat)
    scheduler, g = ddim(), gen(13)
    scheduler.set_timesteps(STEPS)
    x = randn_tensor(SHAPE, generator=g)
    step = 1000 // STEPS
    for t in scheduler.timesteps:
        ab = float(scheduler.alphas_cumprod[t])
        ab_prev = float(scheduler.alphas_cumprod[t - step]) if t - step >= 0 else 1.0
        eps = unet(x, t).sample
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        x0_hat = op.A_pinv(y) + x0 - op.A_pinv(op.A(x0))  # DDNM eq. 9
        # DDNM code: x_t' = √ᾱ' x̂0 + √(1−ᾱ') (η z + √(1−η²) ε_θ)
        x = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev) * math.sqrt(1 - eta**2) * eps
        if eta > 0:
            x = x + math.sqrt(1 - ab_prev) * eta * randn_tensor(SHAPE, generator=g)
    out = sample(
        unet,
        ddim(),
        SHAPE,
        NullSpace(op, y),
        steps=STEPS,
        eta=eta,
        update="ddnm",
        generator=gen(13),
        progress=False,
    )
    torch.testing.assert_close(out, x0_hat, rtol=1e-5, atol=1e-4)


# ---- SING-Zero ----------------------------------------------------------------------------
CASES = [
    ("posterior", ddim, 0.85),
    ("posterior", ddpm, 1.0),
    ("ddnm", ddim, 0.85),
    ("ddnm", ddpm, 0.5),
]


@pytest.mark.parametrize(("update", "make", "eta"), CASES)
@pytest.mark.parametrize("op", [AveragePool(4), AveragePool(8), ColorToGray()], ids=repr)
def test_sing_zero_is_consistent_with_y(
    unet: UNet2DModel, update: str, make: Any, eta: float, op: LinearOperator
) -> None:
    x_hat = images(20)  # three different images, so three different y
    out = sing_zero(
        unet,
        make(),
        op,
        x_hat,
        steps=STEPS,
        eta=eta,
        update=update,
        generator=gen(21),
        clamp=False,
        progress=False,
    )
    assert out.shape == x_hat.shape
    err = (op.A(out) - op.A(x_hat)).abs().amax(dim=(1, 2, 3))  # per image
    assert (err < 1e-4).all(), err


@pytest.mark.parametrize("update", ["posterior", "ddnm"])
def test_identity_operator_returns_y(unet: UNet2DModel, update: str) -> None:
    x_hat = images(22)
    out = sing_zero(
        unet,
        ddim(),
        Identity(),
        x_hat,
        steps=STEPS,
        update=update,
        generator=gen(0),
        progress=False,
    )
    torch.testing.assert_close(out, x_hat, rtol=0, atol=1e-6)


@pytest.mark.parametrize("update", ["posterior", "ddnm"])
def test_seeded_and_reproducible(unet: UNet2DModel, update: str) -> None:
    x_hat, op = images(23), AveragePool(4)
    kw: dict[str, Any] = {"steps": STEPS, "update": update, "progress": False}
    a = sing_zero(unet, ddim(), op, x_hat, generator=gen(1), **kw)
    b = sing_zero(unet, ddim(), op, x_hat, generator=gen(1), **kw)
    c = sing_zero(unet, ddim(), op, x_hat, generator=gen(2), **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # one generator per image: the same per-image seeds give the same batch
    d = sing_zero(unet, ddim(), op, x_hat, generator=[gen(i) for i in range(3)], **kw)
    e = sing_zero(unet, ddim(), op, x_hat, generator=[gen(i) for i in range(3)], **kw)
    assert torch.equal(d, e)


@pytest.mark.parametrize("update", ["posterior", "ddnm"])
def test_ddnm_plus_with_zero_sigma_is_ddnm(unet: UNet2DModel, update: str) -> None:
    op, x_hat = AveragePool(4), images(24)
    y = op.A(x_hat)
    kw: dict[str, Any] = {"steps": STEPS, "eta": 0.85, "update": update, "progress": False}
    plain = sample(unet, ddim(), SHAPE, NullSpace(op, y), generator=gen(4), **kw)
    plus = sample(unet, ddim(), SHAPE, NullSpacePlus(op, y, 0.0), generator=gen(4), **kw)
    scale = max(1.0, float(plain.abs().max()))
    torch.testing.assert_close(plus, plain, rtol=0, atol=1e-5 * scale)
    # per-image σ_y: image 0 (σ_y = 0) is still plain DDNM, image 1 is not
    mixed = sample(
        unet,
        ddim(),
        SHAPE,
        NullSpacePlus(op, y, torch.tensor([0.0, 0.3, 0.0])),
        generator=gen(4),
        **kw,
    )
    torch.testing.assert_close(mixed[0], plain[0], rtol=0, atol=1e-5 * scale)
    assert not torch.allclose(mixed[1], plain[1], atol=1e-3 * scale)


def test_ddnm_plus_lambda_rule() -> None:
    op = AveragePool(2)
    y = torch.zeros(2, 3, 4, 4)
    corr = NullSpacePlus(op, y, torch.tensor([0.1, 1.0]))
    info = StepInfo(
        0,
        10,
        torch.tensor(500),
        torch.tensor(0.5),
        torch.tensor(0.6),
        torch.tensor(0.5) ** 0.5,
        torch.tensor(0.5) ** 0.5,
        x0_coeff=0.5,
        noise_std=0.1,
    )
    lam, scale = corr._lambda_and_scale(info)
    # σ_y = 0.1: a σ_y = 0.05 ≤ σ = 0.1 → λ = 1, Φ = 0.01 − 0.0025
    # σ_y = 1:   a σ_y = 0.5 > 0.1 → λ = 0.2, Φ = 0
    assert torch.allclose(lam.flatten(), torch.tensor([1.0, 0.2]))
    assert torch.allclose(scale.flatten(), torch.tensor([math.sqrt(0.0075) / 0.1, 0.0]))
    assert corr.noise_scale(info) is not None
    assert NullSpacePlus(op, y, 0.0).noise_scale(info) is None


@pytest.mark.parametrize(("update", "make"), [("ddnm", ddim), ("ddnm", ddpm), ("posterior", ddim)])
def test_ddnm_plus_reduces_the_step_noise(unet: UNet2DModel, update: str, make: Any) -> None:
    """With σ_y huge, Φ_t = 0 at every step: the run no longer depends on the noise drawn."""
    op, x_hat = AveragePool(4), images(25)
    x_T = images(26)
    corr = NullSpacePlus(op, op.A(x_hat), 1e6)
    outs = [
        sample(
            unet,
            make(),
            SHAPE,
            corr,
            steps=STEPS,
            eta=0.85 if make is ddim else 1.0,
            update=update,
            generator=gen(seed),
            x_T=x_T,
            progress=False,
        )
        for seed in (1, 2)
    ]
    assert torch.equal(outs[0], outs[1])


def test_posterior_refuses_what_ddpm_cannot_do(unet: UNet2DModel) -> None:
    op, x_hat = AveragePool(4), images(27)
    with pytest.raises(ConfigError) as err:
        sing_zero(unet, ddpm(), op, x_hat, sigma_y=0.1, steps=2, eta=1.0, progress=False)
    assert err.value.key == "sampler.update"
    with pytest.raises(ConfigError) as err:
        sing_zero(unet, ddpm(), op, x_hat, steps=2, eta=0.85, progress=False)
    assert err.value.key == "sampler.eta"
    with pytest.raises(ConfigError) as err:
        sing_zero(unet, ddim(), op, x_hat, steps=2, update="ddrm", progress=False)
    assert err.value.key == "sampler.update"


# ---- time travel --------------------------------------------------------------------------
def test_time_travel_plan() -> None:
    assert TimeTravel().plan(4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    moves = TimeTravel(length=2, repeat=2).plan(6)
    levels = [0] + [k_to for _, k_to in moves]
    # jump points k = 5, 3 (≥ L = 2, every L from N−1 = 5), each window redone once
    assert levels == [0, 1, 2, 3, 1, 2, 3, 4, 5, 3, 4, 5, 6]
    denoise = sum(k_to > k for k, k_to in moves)
    assert denoise == 6 + 2 * 2
    moves = TimeTravel(length=1, repeat=3, every=2).plan(5)
    assert sum(k_to > k for k, k_to in moves) == 5 + 2 * (3 - 1)  # jumps at k = 4, 2


def test_time_travel_sampling_stays_consistent(unet: UNet2DModel) -> None:
    op, x_hat = AveragePool(4), images(28)
    calls: list[int] = []
    out = sample(
        unet,
        ddim(),
        SHAPE,
        NullSpace(op, op.A(x_hat)),
        steps=STEPS,
        eta=0.85,
        time_travel=TimeTravel(length=2, repeat=2, every=3),
        generator=gen(0),
        progress=False,
        callback=lambda s, x, x0: calls.append(s.index),
    )
    assert len(calls) == STEPS + 2 * 2  # jumps back 2 steps at levels 7 and 4, once each
    assert calls[-1] == STEPS - 1
    assert (op.A(out) - op.A(x_hat)).abs().max() < 1e-4


def test_progress_bar_runs(unet: UNet2DModel) -> None:
    out = sample(unet, ddim(), (1, 3, 16, 16), steps=2, generator=gen(0), progress=True)
    assert out.shape == (1, 3, 16, 16)


# ---- config -------------------------------------------------------------------------------
def test_sampler_configs(unet: UNet2DModel) -> None:
    zero = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "sing_zero.yaml"))
    none = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "none.yaml"))
    parsed = SingZeroConfig.from_config(zero)
    assert (parsed.steps, parsed.eta, parsed.update, parsed.sigma_y) == (100, 0.85, "posterior", 0)
    assert not parsed.time_travel.enabled
    x_hat = images(29)
    assert restore(none, x_hat) is x_hat
    out = restore(
        {**zero, "steps": 2, "progress": False},
        x_hat,
        unet=unet,
        scheduler=ddim(),
        operator=AveragePool(4),
        generator=gen(0),
    )
    assert out.shape == x_hat.shape and out.abs().max() <= 1


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"update": "ddrm"}, "sampler.update"),
        ({"steps": 0}, "sampler.steps"),
        ({"steps": 2.5}, "sampler.steps"),
        ({"eta": "x"}, "sampler.eta"),
        ({"sigma_y": -1}, "sampler.sigma_y"),
        ({"stepz": 3}, "sampler.stepz"),
        ({"time_travel": {"lenght": 3}}, "sampler.time_travel.lenght"),
        ({"time_travel": {"length": -1}}, "sampler.time_travel"),
    ],
)
def test_sampler_config_errors(override: dict[str, Any], key: str) -> None:
    zero = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "sing_zero.yaml"))
    with pytest.raises(ConfigError) as err:
        SingZeroConfig.from_config({**zero, **override})
    assert err.value.key == key


def test_unknown_sampler_name() -> None:
    with pytest.raises(ConfigError) as err:
        restore({"name": "sing_one"}, images(30))
    assert err.value.key == "sampler.name"
