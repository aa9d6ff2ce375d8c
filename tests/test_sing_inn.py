"""SING-INN's guidance correction and restorer (SING.md §4, Algorithm 2)."""

from __future__ import annotations

import re

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel
from omegaconf import OmegaConf
from torch import Tensor

from conftest import randomize
from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.modules.inn import INNModule
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool
from singexp.samplers import NullSpace, StepInfo
from singexp.samplers.sing_inn import (
    INNGuidance,
    SingINNConfig,
    TwoPhase,
    restore_sing_inn,
    sing_inn,
)

TINY = {"pairs": 1, "cond_blocks": 1, "width": 8, "emb_dim": 16}
SHAPE = (2, 3, 16, 16)


def images(seed: int) -> Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


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
    out = INNGuidance(inn, c_y, snr, zeta=0.5, gradient=gradient)(x0, step_info())
    ddnm = NullSpace(AveragePool(4), AveragePool(4).A(x_hat))(x0, step_info())
    torch.testing.assert_close(out, ddnm, rtol=0, atol=1e-5)


def test_constant_variant_and_autograd_gradient() -> None:
    inn = randomize(ConditionalINN(scale=4, **TINY)).double()
    x0, x_hat = images(3).double(), images(4).double()
    snr = torch.tensor([-1.0, 4.0])
    c_y = inn.coarse(x_hat)
    zeta = 0.3
    guide = INNGuidance(inn, c_y, snr, zeta=zeta, gradient="constant")
    x_inv = guide.inverse_estimate(x0)
    torch.testing.assert_close(guide(x0, step_info()), x0 - 2 * zeta * (x0 - x_inv))

    # autograd: x̂0 = x0 − ζ ∇φ with φ(x) = ‖x − f⁻¹(c_y, d(x))‖²; check ∇φ by a central
    # difference along a random direction (float64)
    def phi(x: Tensor) -> Tensor:
        with torch.no_grad():
            return (x - guide.inverse_estimate(x)).pow(2).sum()

    exact = INNGuidance(inn, c_y, snr, zeta=1.0, gradient="autograd")
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
    batch = INNGuidance(inn, c_y, snr, zeta)(x0, step_info())
    for i in range(2):
        one = INNGuidance(inn, c_y[i : i + 1], snr[i : i + 1], float(zeta[i]))
        torch.testing.assert_close(batch[i : i + 1], one(x0[i : i + 1], step_info()))


def test_sing_inn_is_reproducible_under_a_seed(unet: UNet2DModel) -> None:
    module = INNModule(scale=4, **TINY)  # an INNModule or its ConditionalINN both work
    randomize(module.inn)
    x_hat, snr = images(7), torch.tensor([-2.0, 3.0])

    def run(seed: int) -> Tensor:
        return sing_inn(
            unet,
            DDIMScheduler(clip_sample=False),
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
    assert (c.zeta, c.gradient, c.switch_t, c.steps, c.eta, c.update) == (
        0.5,
        "constant",
        300,
        100,
        0.85,
        "posterior",
    )
    inn = randomize(ConditionalINN(scale=4, **TINY))
    cfg.update(steps=2, progress=False, gradient="constant")
    x_hat, snr = images(8), torch.tensor([0.0, 1.0])
    kwargs = {"unet": unet, "scheduler": DDIMScheduler(clip_sample=False), "snr_db": snr}
    out = restore_sing_inn(
        cfg, x_hat, inn=inn, generator=torch.Generator().manual_seed(0), **kwargs
    )
    again = sing_inn(
        unet,
        DDIMScheduler(clip_sample=False),
        inn,
        x_hat,
        snr,
        gradient="constant",
        switch_t=300,
        steps=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: "):
        restore_sing_inn(cfg, x_hat, **kwargs)


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"zeta": -1}, "sampler.zeta"),
        ({"zeta": "big"}, "sampler.zeta"),
        ({"gradient": "dps"}, "sampler.gradient"),
        ({"steps": 0}, "sampler.steps"),
        ({"sigma_y": 0.1}, "sampler.sigma_y"),
        ({"zetta": 1}, "sampler.zetta"),
    ],
)
def test_config_errors_name_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: "):
        SingINNConfig.from_config({"name": "sing_inn", **bad})


def test_two_phase_switches_from_null_space_to_inn_guidance() -> None:
    inn = randomize(ConditionalINN(scale=4, **TINY))
    x_hat, x0 = images(4), images(4).flip(-1)
    c_y = inn.coarse(x_hat)
    snr = torch.zeros(x_hat.shape[0])
    early, late = NullSpace(AveragePool(4), c_y), INNGuidance(inn, c_y, snr, 0.5, "constant")
    two = TwoPhase(early, late, switch_t=300)

    def info(t: int) -> StepInfo:
        one = torch.tensor(0.5)
        return StepInfo(0, 2, torch.tensor(t), one, one, one, one, 1.0, 0.0)

    torch.testing.assert_close(two(x0, info(600)), early(x0, info(600)))
    torch.testing.assert_close(two(x0, info(300)), early(x0, info(300)))
    torch.testing.assert_close(two(x0, info(299)), late(x0, info(299)))
    assert not torch.allclose(early(x0, info(0)), late(x0, info(0)))
