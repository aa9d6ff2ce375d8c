"""SING-INN's guidance correction and restorer (paper: SING-INN, Algorithm 2)."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel
from omegaconf import OmegaConf
from torch import Tensor

from conftest import randomize
from singexp.assembly import build_restorers
from singexp.config import CONF_DIR, validate
from singexp.errors import ConfigError
from singexp.instantiate import build
from singexp.metrics import periodic_energy
from singexp.models.inn import run_inn
from singexp.models.jscc import load_codec
from singexp.models.prior import run_prior
from singexp.modules.inn import INNModule
from singexp.modules.restoration import batch_generator
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool, build_operator
from singexp.samplers import NullSpace, StepInfo, sample
from singexp.samplers.schedulers import build_scheduler
from singexp.samplers.sing_inn import (
    INNGuidance,
    SingINNConfig,
    TwoPhase,
    check_measurement,
    prepared,
    restore_sing_inn,
    sing_inn,
)

TINY = {"pairs": 1, "cond_blocks": 1, "width": 8, "emb_dim": 16}
SHAPE = (2, 3, 16, 16)


def images(seed: int) -> Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def ddim() -> DDIMScheduler:
    return build_scheduler(kind="ddim")  # the production settings (no clipping)


def step_info() -> object:
    return None  # INNGuidance does not read the step


@pytest.mark.parametrize("gradient", ["autograd", "constant"])
def test_fresh_inn_guidance_at_half_is_ddnm(gradient: str) -> None:
    """Identity couplings: x0 − 2ζ A†(A x0 − c_y); ζ = ½ is DDNM's null-space correction, so
    the INN's coarse part and SING-Zero's A x̂ are the same definition."""
    inn = ConditionalINN(scale=4, **TINY)
    x0, x_hat = images(1), images(2)
    c_y = inn.coarse(x_hat)
    snr = torch.tensor([-3.0, 2.0])
    out = INNGuidance(inn, c_y, snr, zeta=0.5, gradient=gradient, zeta_schedule="constant")(
        x0, step_info()
    )
    ddnm = NullSpace(AveragePool(4), AveragePool(4).A(x_hat))(x0, step_info())
    torch.testing.assert_close(out, ddnm, rtol=0, atol=1e-5)


def test_constant_variant_and_autograd_gradient() -> None:
    inn = randomize(ConditionalINN(scale=4, **TINY)).double()
    x0, x_hat = images(3).double(), images(4).double()
    snr = torch.tensor([-1.0, 4.0])
    c_y = inn.coarse(x_hat)
    zeta = 0.3
    guide = INNGuidance(inn, c_y, snr, zeta=zeta, gradient="constant", zeta_schedule="constant")
    x_inv = guide.inverse_estimate(x0)
    torch.testing.assert_close(guide(x0, step_info()), x0 - 2 * zeta * (x0 - x_inv))

    # autograd: x̂0 = x0 − ζ ∇φ with φ(x) = ‖x − f⁻¹(c_y, d(x))‖²; check ∇φ by a central
    # difference along a random direction (float64)
    def phi(x: Tensor) -> Tensor:
        with torch.no_grad():
            return (x - guide.inverse_estimate(x)).pow(2).sum()

    exact = INNGuidance(inn, c_y, snr, zeta=1.0, gradient="autograd", zeta_schedule="constant")
    grad = x0 - exact(x0, step_info())
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    h = 1e-5
    numeric = (phi(x0 + h * v) - phi(x0 - h * v)) / (2 * h)
    torch.testing.assert_close((grad * v).sum(), numeric, rtol=1e-5, atol=1e-8)
    # the exact gradient differs from the constant variant's 2(x0 − x_inv)
    assert (grad - 2 * (x0 - x_inv)).abs().max() > 1e-4
    # no parameter gradients were accumulated
    assert all(p.grad is None for p in inn.parameters())


def test_guidance_is_per_image() -> None:
    """Batched: each image's correction depends on its own x0, c_y, SNR and ζ only."""
    inn = randomize(ConditionalINN(scale=4, **TINY))
    x0, c_y = images(5), inn.coarse(images(6))
    snr, zeta = torch.tensor([-5.0, 5.0]), torch.tensor([0.2, 0.7])
    batch = INNGuidance(inn, c_y, snr, zeta, "autograd", "constant")(x0, step_info())
    for i in range(2):
        one = INNGuidance(
            inn, c_y[i : i + 1], snr[i : i + 1], float(zeta[i]), "autograd", "constant"
        )
        torch.testing.assert_close(batch[i : i + 1], one(x0[i : i + 1], step_info()))


def test_sing_inn_is_reproducible_under_a_seed(unet: UNet2DModel) -> None:
    module = INNModule(scale=4, **TINY)  # an INNModule or its ConditionalINN both work
    randomize(module.inn)
    x_hat, snr = images(7), torch.tensor([-2.0, 3.0])

    def run(seed: int) -> Tensor:
        return sing_inn(
            unet,
            ddim(),
            module,
            x_hat,
            snr,
            zeta=0.5,
            steps=3,
            eta=0.85,
            generator=torch.Generator().manual_seed(seed),
            progress=False,
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == x_hat.shape and a.abs().max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_restorer_reads_the_config_file(unet: UNet2DModel) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "sing_inn.yaml"))
    assert cfg["name"] == "sing_inn"
    c = SingINNConfig.from_config(cfg)
    # the default is the paper's Algorithm 2: guidance at every step (DPS form, ζ_t = ζ √ᾱ_t)
    assert (c.variant, c.zeta, c.gradient, c.zeta_schedule, c.steps, c.eta, c.update) == (
        "algorithm2",
        1.0,
        "dps",
        "sqrt_alpha_bar",
        100,
        0.85,
        "posterior",
    )
    assert (c.measurement, c.clip_x0) == ("operator", False)
    inn = randomize(ConditionalINN(scale=4, **TINY))
    c = dataclasses.replace(c, steps=2, progress=False)
    x_hat, snr = images(8), torch.tensor([0.0, 1.0])
    kwargs = {"unet": unet, "scheduler": ddim(), "snr_db": snr}
    out = restore_sing_inn(c, x_hat, inn=inn, generator=torch.Generator().manual_seed(0), **kwargs)
    # Algorithm 2 = the one loop with INNGuidance at every step (on the INN as the restorer
    # prepares it: test_prepared_inn_guides_alike_and_is_restored pins what that changes)
    c_y = inn.coarse(x_hat)
    with prepared(inn):
        again = sample(
            unet,
            ddim(),
            x_hat.shape,
            INNGuidance(inn, c_y, snr, 1.0, "dps", "sqrt_alpha_bar"),
            steps=2,
            eta=0.85,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        ).clamp(-1, 1)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    two = dataclasses.replace(c, variant="two_phase", switch_t=300)
    other = restore_sing_inn(
        two, x_hat, inn=inn, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert (other - out).abs().max() > 1e-3
    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: "):
        restore_sing_inn(c, x_hat, **kwargs)


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"zeta": -1}, "sampler.zeta"),
        ({"zeta": "big"}, "sampler.zeta"),
        ({"gradient": "dpss"}, "sampler.gradient"),
        ({"variant": "three_phase"}, "sampler.variant"),
        ({"zeta_schedule": "cosine"}, "sampler.zeta_schedule"),
        ({"measurement": "both"}, "sampler.measurement"),
        ({"steps": 0}, "sampler.steps"),
        ({"eta": 2}, "sampler.eta"),
        ({"sigma_y": 0.1}, "sampler.sigma_y"),
        ({"zetta": 1}, "sampler.zetta"),
        ({"clip_x0": "no"}, "sampler.clip_x0"),
    ],
)
def test_config_errors_name_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: "):
        SingINNConfig.from_config({"name": "sing_inn", **bad})
    methods_key = key.replace("sampler.", "methods.sing_inn.")
    with pytest.raises(ConfigError, match=f"^{re.escape(methods_key)}: "):
        SingINNConfig.from_config({"name": "sing_inn", **bad}, "methods.sing_inn")


def info(t: int, alpha_bar: float = 0.5) -> StepInfo:
    ab = torch.tensor(alpha_bar)
    return StepInfo(0, 2, torch.tensor(t), ab, ab, ab.sqrt(), (1 - ab).sqrt(), 0.0)


def test_two_phase_switches_from_null_space_to_inn_guidance() -> None:
    inn = randomize(ConditionalINN(scale=4, **TINY))
    x_hat, x0 = images(4), images(4).flip(-1)
    c_y = inn.coarse(x_hat)
    snr = torch.zeros(x_hat.shape[0])
    early, late = (
        NullSpace(AveragePool(4), c_y),
        INNGuidance(inn, c_y, snr, 0.5, "constant", "constant"),
    )
    two = TwoPhase(early, late, switch_t=300)
    torch.testing.assert_close(two(x0, info(600)), early(x0, info(600)))
    torch.testing.assert_close(two(x0, info(300)), early(x0, info(300)))
    torch.testing.assert_close(two(x0, info(299)), late(x0, info(299)))
    assert not torch.allclose(early(x0, info(0)), late(x0, info(0)))


class _GradRecorder(torch.nn.Module):
    """The UNet, recording whether each call runs with autograd on."""

    def __init__(self, net: UNet2DModel) -> None:
        super().__init__()
        self.net = net
        self.grad_enabled: list[bool] = []

    def forward(self, x: Tensor, t: Tensor) -> Any:
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.net(x, t)


class _AlwaysGuided(TwoPhase):
    """The loop's former behaviour: the UNet's graph at every step (zero push early)."""

    def guides_at(self, step: StepInfo) -> bool:
        return True


def test_two_phase_dps_differentiates_only_the_guided_steps(unet: UNet2DModel) -> None:
    """Early (null-space) steps of two_phase + dps run the UNet without a graph; the result is
    the same as keeping the graph at every step and pushing by zero there (and at the last
    step, whose push moves only the unused x_t')."""
    module = INNModule(scale=4, **TINY)  # trainable parameters, as loaded for evaluation
    inn = randomize(module.inn)
    x_hat, snr = images(11), torch.tensor([-2.0, 3.0])
    c_y = inn.coarse(x_hat)
    recorder = _GradRecorder(unet)
    out = sing_inn(
        recorder, ddim(), module, x_hat, snr, variant="two_phase", switch_t=300, steps=4,
        gradient="dps", generator=torch.Generator().manual_seed(0), progress=False,
    )  # fmt: skip
    timesteps = build_scheduler_timesteps(4)
    # guided below switch_t, except the last step, whose push the output would not see (loop)
    assert recorder.grad_enabled == [t < 300 and k < 3 for k, t in enumerate(timesteps)]
    # frozen and channels-last only while sampling (samplers.sing_inn.prepared)
    assert all(p.requires_grad and p.is_contiguous() for p in inn.parameters())

    guide = INNGuidance(inn, c_y, snr, 1.0, "dps", "sqrt_alpha_bar")
    always = _AlwaysGuided(NullSpace(AveragePool(4), c_y), guide, 300)
    with prepared(inn):
        old = sample(
            unet, ddim(), x_hat.shape, always, steps=4, eta=0.85,
            generator=torch.Generator().manual_seed(0), progress=False,
        ).clamp(-1, 1)  # fmt: skip
    torch.testing.assert_close(out, old, rtol=0, atol=0)


@pytest.mark.parametrize("gradient", ["autograd", "constant"])
def test_prepared_inn_guides_alike_and_is_restored(gradient: str) -> None:
    """``prepared`` (no parameter gradients, channels-last weights while sampling) changes the
    guidance only by float rounding, and leaves the INN as it was."""
    inn = randomize(ConditionalINN(scale=4, **TINY))
    x0, c_y = images(21), inn.coarse(images(22))
    guide = INNGuidance(inn, c_y, torch.tensor([-1.0, 3.0]), 0.4, gradient, "constant")
    plain = guide(x0, info(100))
    with prepared(inn):
        assert not any(p.requires_grad for p in inn.parameters())
        ready = guide(x0, info(100))
    torch.testing.assert_close(ready, plain, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad and p.is_contiguous() for p in inn.parameters())


def build_scheduler_timesteps(steps: int) -> list[int]:
    scheduler = ddim()
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def test_zeta_schedule() -> None:
    inn = randomize(ConditionalINN(scale=4, **TINY))
    x0, c_y, snr = images(9), inn.coarse(images(10)), torch.zeros(2)
    const = INNGuidance(inn, c_y, snr, 0.4, "constant", "constant")
    sched = INNGuidance(inn, c_y, snr, 0.4, "constant", zeta_schedule="sqrt_alpha_bar")
    x_inv = const.inverse_estimate(x0)
    # ζ_t = ζ √ᾱ_t: x0 − 2·0.4·√0.25·(x0 − x_inv)
    torch.testing.assert_close(sched(x0, info(500, 0.25)), x0 - 2 * 0.4 * 0.5 * (x0 - x_inv))
    torch.testing.assert_close(const(x0, info(500, 0.25)), x0 - 2 * 0.4 * (x0 - x_inv))


@pytest.mark.parametrize("gradient", ["autograd", "constant", "dps"])
def test_the_snr_reaches_the_guidance(unet: UNet2DModel, gradient: str) -> None:
    """The INN is conditioned on the channel SNR: another SNR, another restoration."""
    inn = randomize(ConditionalINN(scale=4, **TINY), std=0.3)
    x_hat = images(11)

    def run(snr_db: float) -> Tensor:
        return sing_inn(
            unet,
            ddim(),
            inn,
            x_hat,
            torch.full((2,), snr_db),
            gradient=gradient,
            steps=3,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        )

    assert (run(-5.0) - run(5.0)).abs().max() > 1e-3


def test_dps_guidance_is_the_gradient_through_the_unet(unet: UNet2DModel) -> None:
    """x_t' −= ζ/‖r‖ ∇_{x_t}‖r‖², r = x0|t(x_t) − x_inv: ∇ checked by a central difference."""
    net = copy.deepcopy(unet).double()
    inn = randomize(ConditionalINN(scale=4, **TINY)).double()
    x_t = images(12).double() * 0.3
    c_y, snr = inn.coarse(images(13).double()), torch.tensor([-2.0, 2.0])
    zeta = 0.7
    guide = INNGuidance(inn, c_y, snr, zeta, "dps", "constant")
    t, ab = torch.tensor(100), torch.tensor(0.9, dtype=torch.float64)
    step = StepInfo(0, 2, t, ab, ab, ab.sqrt(), (1 - ab).sqrt(), 0.0)

    def x0_of(x: Tensor) -> Tensor:
        return (x - (1 - ab).sqrt() * net(x, t).sample) / ab.sqrt()

    def loss(x: Tensor, i: int) -> Tensor:  # ‖r_i‖² of image i
        x0 = x0_of(x)
        return (x0 - guide.inverse_estimate(x0))[i].pow(2).sum()

    with torch.enable_grad():
        x_in = x_t.clone().requires_grad_(True)
        push = guide.x_t_guidance(x_in, x0_of(x_in), step).detach()
    assert guide(x_t, step) is x_t  # DPS leaves x0|t alone
    v = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        for i in range(2):
            numeric = (loss(x_t + h * v, i) - loss(x_t - h * v, i)) / (2 * h)
            norm = loss(x_t, i).sqrt()
            torch.testing.assert_close(
                (push[i] * v[i]).sum(), zeta / norm * numeric, rtol=1e-4, atol=1e-9
            )


def test_measurement_must_be_sing_zeros_a() -> None:
    inn = ConditionalINN(scale=4, **TINY)
    c = SingINNConfig()
    check_measurement(c, inn, AveragePool(4), "methods.sing_inn")  # the same A: fine
    with pytest.raises(ConfigError, match=r"^methods\.sing_inn\.measurement: .*inn\.scale=8"):
        check_measurement(c, inn, AveragePool(8), "methods.sing_inn")
    check_measurement(dataclasses.replace(c, measurement="inn"), inn, AveragePool(8), "x")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "grid_free"),
    [
        ((), True),  # the default: Algorithm 2, DPS form
        (("methods.sing_inn.gradient=autograd", "methods.sing_inn.zeta=0.5"), False),
        (("methods.sing_inn.gradient=constant", "methods.sing_inn.variant=two_phase"), False),
    ],
)
def test_default_sing_inn_draws_no_grid_pattern(
    make_cfg: Any, overrides: tuple[str, ...], grid_free: bool
) -> None:
    """The main job's SING-INN on shipped weights: the share of spectral energy at period 2
    (the INN's finest Haar level) stays near the originals'; x0-space guidance raised it."""
    cfg = make_cfg(
        "+experiment=sing_inn",
        "~methods.sing_zero",
        "methods.sing_inn.steps=25",
        "methods.sing_inn.progress=false",
        *overrides,
    )
    v = validate(cfg)
    operator = build_operator(cfg.operator.name, cfg.operator.scale, v.bcr, v.latent.image_size)
    codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db).eval()
    _, inn = run_inn(v, Path(str(v.jscc.checkpoint)))
    _, unet = run_prior(v)
    restorers, _ = build_restorers(v, operator, unet=unet, inn=inn, codec=codec)
    x = build(cfg.dataset).test_images(8)
    snr = torch.full((8,), v.channel.snr_db)
    with torch.no_grad():
        x_hat = codec(x, snr, batch_generator(0, 0, 0, x.device)).clamp(-1, 1)
    out = restorers["sing_inn"](x_hat, snr, batch_generator(0, 0, 1, x.device))
    ratio = float(periodic_energy(out, 2).mean() / periodic_energy(x, 2).mean())
    assert (ratio < 2.5) == grid_free, ratio
