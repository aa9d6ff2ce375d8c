"""The sampling loop, update forms and SING-Zero, on a tiny random diffusers UNet."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from omegaconf import OmegaConf
from torch import Tensor

from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.operators import AveragePool, ColorToGray, Identity, LinearOperator
from singexp.samplers import (
    Correction,
    DDNMUpdate,
    NullSpace,
    NullSpacePlus,
    PosteriorUpdate,
    SamplingError,
    SingZeroConfig,
    StepInfo,
    TimeTravel,
    check_method,
    restore,
    sample,
    sing_zero,
)
from singexp.samplers.loop import step_infos
from singexp.samplers.schedulers import build_scheduler

SHAPE = (3, 3, 16, 16)
STEPS = 8


#: the schedule of the shipped prior, as restoration builds its schedulers
#: (singexp.assembly.build_restorers)
PRIOR = OmegaConf.load(CONF_DIR / "prior" / "embedded.yaml")


def production(kind: str, **kw: Any) -> DDIMScheduler | DDPMScheduler:
    """The scheduler restoration uses: :func:`build_scheduler` with the prior's schedule."""
    return build_scheduler(
        num_train_timesteps=PRIOR.num_train_timesteps,
        beta_start=PRIOR.beta_start,
        beta_end=PRIOR.beta_end,
        schedule=PRIOR.schedule,
        kind=kind,
        **kw,
    )


def ddim(**kw: Any) -> DDIMScheduler:
    return production("ddim", **kw)


def ddpm(**kw: Any) -> DDPMScheduler:
    return production("ddpm", **kw)


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


def test_production_schedulers_do_not_clip() -> None:
    """Restoration's schedulers leave x̂0 alone inside ``step`` (clipping is ``clip_x0``)."""
    assert not ddim().config.clip_sample and not ddpm().config.clip_sample


def one_step(scheduler: Any, form: Any, index: int, eta: float) -> StepInfo:
    form.bind(scheduler, eta, Correction())
    scheduler.set_timesteps(STEPS)
    return step_infos(scheduler, form)[index]


def test_posterior_step_is_algorithm_1() -> None:
    """With DDPM, one step is q(x_t−1 | x_t, x̂0) of Ho et al. 2020, computed by hand, for an
    x̂0 far outside [−1, 1] (a clipping step would not match)."""
    scheduler = ddpm()
    scheduler.set_timesteps(STEPS)
    t, t_prev = scheduler.timesteps[2], scheduler.timesteps[3]
    ab, ab_prev = scheduler.alphas_cumprod[t].double(), scheduler.alphas_cumprod[t_prev].double()
    beta = 1 - ab / ab_prev  # the respaced β_t
    x_t, x0_hat, eps = images(7), 3 * images(8), images(9)
    form = PosteriorUpdate()
    info = one_step(scheduler, form, 2, 1.0)
    got = form(scheduler, x_t, eps, x_t, x0_hat, info, Correction(), gen(11))
    z = randn_tensor(SHAPE, generator=gen(11))
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0_hat.double() + (
        (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    ) * x_t.double()
    std = ((1 - ab_prev) / (1 - ab) * beta).sqrt()
    torch.testing.assert_close(got.double(), mean + std * z.double(), rtol=1e-5, atol=1e-5)
    # η_t: the fresh noise's share of the budget √(1−ᾱ_t')
    assert math.isclose(info.eta, float(std / (1 - ab_prev).sqrt()), rel_tol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_posterior_step_is_ddim_in_the_main_jobs_setting(eta: float) -> None:
    """DDIM (the main job's scheduler, η = 0.85 there) by DDIM eq. 12, x̂0 far outside [−1, 1]:
    x_t' = √ᾱ' x̂0 + √(1−ᾱ'−σ²) ε' + σ z, ε' = (x_t − √ᾱ x̂0)/√(1−ᾱ), σ = η σ_DDPM."""
    scheduler = ddim()
    form = PosteriorUpdate()
    info = one_step(scheduler, form, 3, eta)
    ab, ab_prev = float(info.alpha_bar), float(info.alpha_bar_prev)
    x_t, x0, x0_hat, eps = images(31), images(32), 4 * images(33), images(34)
    got = form(scheduler, x_t, eps, x0, x0_hat, info, Correction(), gen(12))
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    eps_prime = (x_t.double() - math.sqrt(ab) * x0_hat.double()) / math.sqrt(1 - ab)
    z = randn_tensor(SHAPE, generator=gen(12)).double()
    want = (
        math.sqrt(ab_prev) * x0_hat.double()
        + math.sqrt(1 - ab_prev - sigma**2) * eps_prime
        + (sigma * z if eta > 0 else 0)
    )
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_clip_x0_clips_only_when_asked(unet: UNet2DModel) -> None:
    """A correction pushing x̂0 out of [−1, 1]: clip_x0 clips every x̂0|t, the default does not."""
    seen: dict[bool, list[Tensor]] = {True: [], False: []}
    for clip in (False, True):
        sample(
            unet,
            ddim(),
            SHAPE,
            Shift(),
            steps=STEPS,
            eta=0.85,
            clip_x0=clip,
            generator=gen(3),
            progress=False,
            callback=lambda s, x, x0, c=clip: seen[c].append(x0),
        )
    assert max(float(x.abs().max()) for x in seen[False]) > 1.5
    assert max(float(x.abs().max()) for x in seen[True]) <= 1.0


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
    assert (err < 1e-5).all(), err


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


def dense(op: LinearOperator, shape: tuple[int, ...]) -> Tensor:
    """The matrix of ``op`` on flattened images of ``shape`` (C, H, W)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    return op.A(basis).reshape(n, -1).T  # (m, n)


def ddnm_plus_reference(
    matrix: Tensor,
    x_t: Tensor,
    eps: Tensor,
    y: Tensor,
    z: Tensor,
    ab: float,
    ab_prev: float,
    eta: float,
    sigma_y: float,
    direction: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of DDNM's ``ddnm_plus_diffusion`` (DDNM paper eq. 17-19; the code's Lambda and
    Lambda_noise rules per singular value), written here with a dense SVD A = U S Vᵀ, on
    flattened images (B, n). Returns (x̂0, x_t'). ``direction``: the e of the noise term
    (DDNM: ε_θ). The code multiplies the noise by V without Vᵀ first; here both z and e are
    taken in the V basis (Vᵀ then V), which the paper's Σ_t = V diag(λ) Vᵀ means."""
    e = eps if direction is None else direction
    u, sv, vh = torch.linalg.svd(matrix, full_matrices=True)
    n = matrix.shape[1]
    sing = torch.zeros(n, dtype=torch.float64)
    sing[: sv.numel()] = sv
    inv = torch.where(sing > 0, 1 / sing.clamp_min(1e-300), torch.zeros(()))
    a, sigma_t = math.sqrt(ab_prev), math.sqrt(1 - ab_prev)
    x0 = (x_t - eps * math.sqrt(1 - ab)) / math.sqrt(ab)
    # Eq. 17 with Lambda: λ per V-component of A†(A x0 − y)
    coeff = torch.zeros(x0.shape[0], n, dtype=torch.float64)
    coeff[:, : sv.numel()] = ((x0 @ matrix.T - y) @ u) / sv
    lam = torch.ones(n, dtype=torch.float64)
    d1 = torch.full((n,), sigma_t * eta, dtype=torch.float64)
    d2 = torch.full((n,), sigma_t * math.sqrt(1 - eta**2), dtype=torch.float64)
    if sigma_y != 0:
        below = sigma_t < a * sigma_y * inv
        lam = torch.where(below, sing * sigma_t * math.sqrt(1 - eta**2) / a / sigma_y, lam)
        d1 = torch.where(below, sigma_t * eta, d1)
        d2 = torch.where(below, 0.0, d2)
        above = sigma_t > a * sigma_y * inv
        d1 = torch.where(above, (sigma_t**2 - a**2 * sigma_y**2 * inv**2).clamp_min(0).sqrt(), d1)
        d2 = torch.where(above, 0.0, d2)
        null = sing == 0
        d1 = torch.where(null, sigma_t * eta, d1)
        d2 = torch.where(null, sigma_t * math.sqrt(1 - eta**2), d2)
    x0_hat = x0 - (lam * coeff) @ vh
    x_next = a * x0_hat + (d1 * (z @ vh.T) + d2 * (e @ vh.T)) @ vh
    return x0_hat, x_next


@pytest.mark.parametrize("eta", [0.0, 0.85])
@pytest.mark.parametrize("sigma_y", [0.05, 0.2])
@pytest.mark.parametrize("index", [0, 3, 6, STEPS - 1])
@pytest.mark.parametrize("op", [AveragePool(4), AveragePool(2), ColorToGray()], ids=repr)
def test_ddnm_plus_one_update_is_ddnms(
    eta: float, sigma_y: float, index: int, op: LinearOperator
) -> None:
    """DDNM+ (update=ddnm) against the independent dense-SVD reference on identical inputs."""
    shape = (3, 8, 8)
    scheduler, form = ddim(), DDNMUpdate()
    info = one_step(scheduler, form, index, eta)
    x_t, eps = 2 * images(40, (2, *shape)), images(41, (2, *shape))
    y = op.A(images(42, (2, *shape)))
    x0 = (x_t - info.sqrt_one_minus_alpha_bar * eps) / info.sqrt_alpha_bar
    corr = NullSpacePlus(op, y, sigma_y)
    x0_hat = corr(x0, info)
    got = form(scheduler, x_t, eps, x0, x0_hat, info, corr, gen(43))
    z = randn_tensor(x_t.shape, generator=gen(43))
    flat = {k: v.double().reshape(2, -1) for k, v in {"x": x_t, "e": eps, "y": y, "z": z}.items()}
    ref_x0_hat, ref_next = ddnm_plus_reference(
        dense(op, shape),
        flat["x"],
        flat["e"],
        flat["y"],
        flat["z"],
        float(info.alpha_bar),
        float(info.alpha_bar_prev),
        eta,
        sigma_y,
    )
    scale = float(ref_next.abs().max())
    torch.testing.assert_close(got.double().reshape(2, -1), ref_next, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(
        x0_hat.double().reshape(2, -1),
        ref_x0_hat,
        rtol=0,
        atol=1e-5 * float(ref_x0_hat.abs().max()),
    )


@pytest.mark.parametrize("eta", [0.0, 0.85])
def test_ddnm_plus_posterior_form_is_the_same_rule_on_the_equivalent_noise(eta: float) -> None:
    """update=posterior: DDNM's rule with e = ε' and η_t = σ_DDIM(η)/√(1−ᾱ_t')."""
    shape, op, sigma_y = (3, 8, 8), AveragePool(4), 0.1
    scheduler, form = ddim(), PosteriorUpdate()
    info = one_step(scheduler, form, 2, eta)
    ab, ab_prev = float(info.alpha_bar), float(info.alpha_bar_prev)
    x_t, eps = 2 * images(44, (2, *shape)), images(45, (2, *shape))
    y = op.A(images(46, (2, *shape)))
    x0 = (x_t - info.sqrt_one_minus_alpha_bar * eps) / info.sqrt_alpha_bar
    corr = NullSpacePlus(op, y, sigma_y)
    x0_hat = corr(x0, info)
    got = form(scheduler, x_t, eps, x0, x0_hat, info, corr, gen(47))
    eta_t = eta * math.sqrt((1 - ab / ab_prev) / (1 - ab))
    flat = [
        v.double().reshape(2, -1) for v in (x_t, eps, y, randn_tensor(x_t.shape, generator=gen(47)))
    ]
    ref_x0_hat, _ = ddnm_plus_reference(dense(op, shape), *flat, ab, ab_prev, eta_t, sigma_y)
    eps_prime = (flat[0] - math.sqrt(ab) * ref_x0_hat) / math.sqrt(1 - ab)
    _, want = ddnm_plus_reference(
        dense(op, shape), *flat, ab, ab_prev, eta_t, sigma_y, direction=eps_prime
    )
    torch.testing.assert_close(
        got.double().reshape(2, -1), want, rtol=0, atol=1e-5 * float(want.abs().max())
    )


@pytest.mark.parametrize("update", ["posterior", "ddnm"])
def test_ddnm_plus_uses_the_measurement_at_eta_zero(unet: UNet2DModel, update: str) -> None:
    """η = 0 leaves no fresh noise, yet DDNM+ must still pull A x̃ toward y (it did not)."""
    op, x_hat = AveragePool(4), images(48)
    y = op.A(x_hat)
    kw: dict[str, Any] = {"steps": STEPS, "eta": 0.0, "update": update, "progress": False}
    free = sample(unet, ddim(), SHAPE, None, generator=gen(5), **kw)
    plus = sample(unet, ddim(), SHAPE, NullSpacePlus(op, y, 0.05), generator=gen(5), **kw)
    free_err = float((op.A(free) - y).abs().max())
    plus_err = float((op.A(plus) - y).abs().max())
    assert plus_err < 0.5 * free_err, (plus_err, free_err)


def test_posterior_refuses_what_ddpm_cannot_do(unet: UNet2DModel) -> None:
    op, x_hat = AveragePool(4), images(27)
    with pytest.raises(ConfigError) as err:
        sing_zero(unet, ddpm(), op, x_hat, steps=2, eta=0.85, progress=False)
    assert err.value.key == "sampler.eta"
    with pytest.raises(ConfigError) as err:
        sing_zero(unet, ddim(), op, x_hat, steps=2, update="ddrm", progress=False)
    assert err.value.key == "sampler.update"


def test_a_clipping_scheduler_is_refused(unet: UNet2DModel) -> None:
    with pytest.raises(ValueError, match="clip_sample=False"):
        sample(unet, ddim(clip_sample=True), SHAPE, steps=2, progress=False)


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
    assert (op.A(out) - op.A(x_hat)).abs().max() < 1e-5


def test_progress_sees_every_step_and_changes_nothing(unet: UNet2DModel) -> None:
    events: list[Any] = []

    @contextmanager
    def hook(desc: str, total: int) -> Iterator[Callable[[], None]]:
        events.append((desc, total))
        yield lambda: events.append("step")
        events.append("done")

    def run(progress: Any) -> Tensor:
        return sample(unet, ddim(), (1, 3, 16, 16), steps=3, generator=gen(0), progress=progress)

    quiet = run(False)
    # the hook is entered once with the number of steps, advanced once per step, then left
    torch.testing.assert_close(run(hook), quiet, rtol=0, atol=0)
    assert events == [("sampling", 3), "step", "step", "step", "done"]
    # the default display (progress=True) leaves the result exactly as without one
    torch.testing.assert_close(run(True), quiet, rtol=0, atol=0)


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
        ({"sigma_y": "often"}, "sampler.sigma_y"),
        ({"eta": 2}, "sampler.eta"),
        ({"clip_x0": "yes"}, "sampler.clip_x0"),
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


def test_errors_name_the_key_the_user_typed() -> None:
    zero = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "sing_zero.yaml"))
    with pytest.raises(ConfigError) as err:
        check_method({**zero, "steps": 0}, "methods.sing_zero")
    assert err.value.key == "methods.sing_zero.steps"
    assert check_method({**zero, "sigma_y": "auto"}).config.sigma_y == "auto"


def test_unknown_sampler_name() -> None:
    with pytest.raises(ConfigError) as err:
        restore({"name": "sing_one"}, images(30))
    assert err.value.key == "sampler.name"


class Diverge(Correction):
    """A correction that blows up at its third step."""

    def __call__(self, x0: Tensor, step: StepInfo) -> Tensor:
        return x0 * float("inf") if step.index == 2 else x0


def test_non_finite_values_stop_sampling_naming_the_step(unet: UNet2DModel) -> None:
    with pytest.raises(SamplingError, match=r"^SING-Zero: non-finite values at step 3/8 "):
        sample(
            unet, ddim(), SHAPE, Diverge(), steps=STEPS, eta=0.85, desc="SING-Zero", progress=False
        )


def test_sigma_y_auto_is_the_rms_of_a_x_hat_minus_a_x(make_cfg: Any) -> None:
    """``sigma_y=auto``: √mean((A x̂ − A x)²) over the validation images through the codec."""
    from singexp.assembly import needs_sigma_y
    from singexp.config import validate
    from singexp.instantiate import build
    from singexp.models.jscc import load_codec
    from singexp.modules.restoration import measured_sigma_y
    from singexp.operators import build_operator

    cfg = make_cfg("+experiment=sing_zero", "sampler.sigma_y=auto", "dataset.val_size=8")
    v = validate(cfg)
    op = build_operator(cfg.operator.name, cfg.operator.scale, v.bcr, v.latent.image_size)
    codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db)
    data = build(cfg.dataset)
    assert needs_sigma_y(v.methods)
    got = measured_sigma_y(codec, op, data, v.channel.snr_db, v.seed)
    x = torch.stack([data.val_dataset[i] for i in range(8)])
    g = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + 2)
    with torch.no_grad():
        x_hat = codec(x, v.channel.snr_db, g).clamp(-1, 1)
    s = op.scale
    want = (F.avg_pool2d(x_hat, s) - F.avg_pool2d(x, s)).double().pow(2).mean().sqrt()
    assert got == pytest.approx(float(want), rel=1e-9)
    assert got > 0.05  # at −3 dB the received average colours are noisy
    # a fixed σ_y needs no measurement
    assert not needs_sigma_y(validate(make_cfg("+experiment=sing_zero")).methods)
