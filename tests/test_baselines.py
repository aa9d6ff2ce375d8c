"""The baselines (docs/results/baselines.md): DPS-JSCC and InverseJSCC through the real DeepJSCC
chain.

Tiny random networks (a 16×16 UNet, a DeepJSCC with 4× downsampling); the formulas are written
out here, not imported: A(x) = D(√k E(x)/‖E(x)‖) (paper: system model, noiseless chain), DPS's step
ζ/‖r‖ ∇_{x_t}‖r‖² (Chung et al. 2023, Alg. 1), InverseJSCC's MSE(x̂, A(G(z))).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import pytest
import torch
from diffusers import UNet2DModel
from omegaconf import OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from conftest import randomize, tiny_unet
from singexp.channel import AWGNChannel, power_normalize, to_complex, to_real
from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.metrics import ImageMetrics
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import SECONDS, RestorationModule
from singexp.nn.jscc import DeepJSCC
from singexp.samplers import Correction, PosteriorUpdate, check_method, restore, sample
from singexp.samplers.dps_jscc import DPSJSCCConfig, JSCCForward, JSCCMeasurement, dps_jscc
from singexp.samplers.inverse_jscc import DDIMGenerator, InverseJSCCConfig, inverse_jscc
from singexp.samplers.loop import step_infos
from singexp.samplers.schedulers import build_scheduler

SHAPE = (2, 3, 16, 16)
SNR = 0.0
PRIOR = OmegaConf.load(CONF_DIR / "prior" / "embedded.yaml")


def scheduler() -> Any:
    """DDIM with the shipped prior's schedule, as restoration builds it."""
    return build_scheduler(
        num_train_timesteps=PRIOR.num_train_timesteps,
        beta_start=PRIOR.beta_start,
        beta_end=PRIOR.beta_end,
        schedule=PRIOR.schedule,
        kind="ddim",
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_codec(dtype: torch.dtype = torch.float32) -> DeepJSCC:
    torch.manual_seed(3)
    codec = DeepJSCC(latent_channels=4, channel=AWGNChannel(), downsample=4, width=8)
    return codec.to(dtype).eval().requires_grad_(False)


def received(codec: DeepJSCC, seed: int = 7) -> Tensor:
    """x̂ = D(channel(E(x))) of random images, with seeded channel noise."""
    dtype = next(codec.parameters()).dtype
    x = (torch.rand(SHAPE, generator=gen(seed)) * 2 - 1).to(dtype)
    snr = torch.full((SHAPE[0],), SNR)
    with torch.no_grad():
        return codec(x, snr, gen(seed + 1)).clamp(-1, 1)


def chain_by_formula(codec: DeepJSCC, x: Tensor) -> Tensor:
    """A(x) = D(√k z/‖z‖), z = E(x), k = half the reals per image (paper: system model)."""
    snr = torch.full((x.shape[0],), SNR, dtype=x.dtype)
    z = codec.encoder(x, snr)
    k = z[0].numel() / 2
    norm = z.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    return codec.decoder(math.sqrt(k) * z / norm, snr)


# ---- the forward model ---------------------------------------------------------------------
def test_noiseless_forward_is_the_codecs_chain_without_noise() -> None:
    codec = tiny_codec()
    x = torch.rand(SHAPE, generator=gen(1)) * 2 - 1
    snr = torch.full((SHAPE[0],), SNR)
    with torch.no_grad():
        z = codec.encoder(x, snr)
        by_channel_module = codec.decoder(to_real(power_normalize(to_complex(z)), z.shape), snr)
        torch.testing.assert_close(JSCCForward(codec, SNR)(x), by_channel_module)
        torch.testing.assert_close(JSCCForward(codec, SNR)(x), chain_by_formula(codec, x))


def test_mean_forward_averages_fixed_channel_draws() -> None:
    codec = tiny_codec()
    x = torch.rand(SHAPE, generator=gen(1)) * 2 - 1
    snr = torch.full((SHAPE[0],), SNR)
    forward = JSCCForward(codec, SNR, "mean", samples=3, seed=11)
    with torch.no_grad():
        by_hand = sum(codec(x, snr, gen(11 + j)) for j in range(3)) / 3
        torch.testing.assert_close(forward(x), by_hand)
        assert torch.equal(forward(x), forward(x))  # the same draws at every call


# ---- DPS-JSCC -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unet64() -> UNet2DModel:
    """A tiny random UNet in float64 (for finite differences)."""
    return tiny_unet(0, (8, 16), 4, torch.float64)


def test_dps_gradient_matches_finite_differences(unet64: UNet2DModel) -> None:
    codec = tiny_codec(torch.float64)
    y = received(codec)
    sched = scheduler()
    sched.set_timesteps(10)
    form = PosteriorUpdate()
    form.bind(sched, 1.0, Correction())
    step = step_infos(sched, form)[6]
    zeta = 0.7
    correction = JSCCMeasurement(JSCCForward(codec, SNR), y, zeta, "constant")

    def x0_of(x_t: Tensor) -> Tensor:  # x0|t = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t
        eps = unet64(x_t, step.timestep).sample
        ab = float(step.alpha_bar)
        return (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)

    def residual_norm(x_t: Tensor) -> Tensor:  # ‖y − A(x0|t(x_t))‖ per image
        return (y - chain_by_formula(codec, x0_of(x_t))).flatten(1).norm(dim=1)

    x_t = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    with torch.enable_grad():
        x_in = x_t.clone().requires_grad_(True)
        push = correction.x_t_guidance(x_in, x0_of(x_in), step)
    # ζ/‖r‖ ∇‖r‖² = 2ζ ∇‖r‖: directional derivatives against central differences
    h = 1e-6
    for seed in (3, 4):
        v = torch.randn(SHAPE, generator=gen(seed), dtype=torch.float64)
        fd = (residual_norm(x_t + h * v) - residual_norm(x_t - h * v)) / (2 * h)
        analytic = (push * v).flatten(1).sum(1)
        torch.testing.assert_close(analytic, 2 * zeta * fd, rtol=1e-5, atol=1e-8)
        assert analytic.abs().min() > 1e-6  # not trivially zero


def _dps(unet: UNet2DModel, seed: int, zeta: float = 1.0, **kw: Any) -> Tensor:
    codec = tiny_codec()
    with torch.no_grad():
        return dps_jscc(
            unet,
            scheduler(),
            codec,
            received(codec),
            SNR,
            zeta=zeta,
            steps=4,
            eta=1.0,
            generator=gen(seed),
            progress=False,
            **kw,
        )


def test_dps_is_the_loop_plus_guidance(unet: UNet2DModel) -> None:
    plain = sample(unet, scheduler(), SHAPE, steps=4, eta=1.0, generator=gen(0), progress=False)
    torch.testing.assert_close(_dps(unet, 0, zeta=0.0), plain.clamp(-1, 1))
    assert not torch.equal(_dps(unet, 0, zeta=1.0), plain.clamp(-1, 1))  # guidance acts


@pytest.mark.parametrize("noise", ["none", "mean"])
def test_dps_is_deterministic_for_a_seed(unet: UNet2DModel, noise: str) -> None:
    kw = {"forward_noise": noise, "noise_samples": 2}
    assert torch.equal(_dps(unet, 0, **kw), _dps(unet, 0, **kw))
    assert not torch.equal(_dps(unet, 0, **kw), _dps(unet, 1, **kw))


# ---- InverseJSCC ---------------------------------------------------------------------------
def test_generator_is_the_loops_ddim_at_eta_zero(unet: UNet2DModel) -> None:
    z = torch.randn(SHAPE, generator=gen(5))
    with torch.no_grad():
        by_loop = sample(unet, scheduler(), SHAPE, steps=3, eta=0.0, x_T=z, clip_x0=True)
        torch.testing.assert_close(DDIMGenerator(unet, scheduler(), 3)([z]), by_loop)


def _inverse(unet: UNet2DModel, seed: int, **kw: Any) -> tuple[Tensor, list[Tensor]]:
    codec = tiny_codec()
    options: dict[str, Any] = {
        "generator_steps": 2,
        "iterations": 12,
        "lr": 0.1,
        "init": "noise",
        **kw,
    }
    return inverse_jscc(
        unet,
        scheduler(),
        codec,
        received(codec),
        SNR,
        generator=gen(seed),
        progress=False,
        **options,
    )


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_inverse_jscc_lowers_its_objective(eta: float) -> None:
    unet = randomize(_fresh_unet(), std=0.05)  # outputs that depend on the latent
    image, losses = _inverse(unet, 0, generator_eta=eta)
    assert len(losses) == 13
    first, last = losses[0], losses[-1]
    assert (last < first).all(), (first, last)
    # the last loss is MSE(x̂, A(G(z))) of the returned image, by the formula
    codec = tiny_codec()
    with torch.no_grad():
        mse = (received(codec) - chain_by_formula(codec, image)).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(last, mse)


def _fresh_unet() -> UNet2DModel:
    return tiny_unet(1, (8, 16), 4)


def test_inverse_jscc_is_deterministic_for_a_seed(unet: UNet2DModel) -> None:
    a, la = _inverse(unet, 0, iterations=3)
    b, lb = _inverse(unet, 0, iterations=3)
    assert torch.equal(a, b) and all(torch.equal(p, q) for p, q in zip(la, lb, strict=True))
    assert not torch.equal(a, _inverse(unet, 1, iterations=3)[0])


def test_inverse_jscc_from_the_inversion_needs_no_seed(unet: UNet2DModel) -> None:
    a, _ = _inverse(unet, 0, iterations=2, init="invert")
    assert torch.equal(a, _inverse(unet, 5, iterations=2, init="invert")[0])


def test_inverse_jscc_latent_weight_is_the_shell_penalty(unet: UNet2DModel) -> None:
    _, plain = _inverse(unet, 0, iterations=0)
    _, weighted = _inverse(unet, 0, iterations=0, latent_weight=2.0)
    z = torch.randn(SHAPE, generator=gen(0))  # z0: the first draw of the generator
    shell = (z.pow(2).flatten(1).mean(1) - 1).pow(2)
    torch.testing.assert_close(weighted[0], plain[0] + 2.0 * shell)


# ---- configs and the registry ---------------------------------------------------------------
def _yaml(name: str) -> dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / f"{name}.yaml"))
    assert isinstance(node, dict)
    return node  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("name", "cls"), [("dps_jscc", DPSJSCCConfig), ("inverse_jscc", InverseJSCCConfig)]
)
def test_yaml_is_the_dataclass_default_and_every_key_is_commented(name: str, cls: Any) -> None:
    assert check_method(_yaml(name)).config == cls()
    lines = (CONF_DIR / "sampler" / f"{name}.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")):
            assert lines[i - 1].startswith("#") or i == 0 or lines[i - 1].startswith(" "), line


@pytest.mark.parametrize(
    ("name", "override", "key"),
    [
        ("dps_jscc", {"zeta": -1}, "methods.x.zeta"),
        ("dps_jscc", {"zeta": "big"}, "methods.x.zeta"),
        ("dps_jscc", {"zeta_schedule": "cosine"}, "methods.x.zeta_schedule"),
        ("dps_jscc", {"forward_noise": "sample"}, "methods.x.forward_noise"),
        ("dps_jscc", {"noise_samples": 0}, "methods.x.noise_samples"),
        ("dps_jscc", {"sigma_y": 0.1}, "methods.x.sigma_y"),
        ("dps_jscc", {"steps": 0}, "methods.x.steps"),
        ("dps_jscc", {"zetta": 1}, "methods.x.zetta"),
        ("inverse_jscc", {"iterations": -1}, "methods.x.iterations"),
        ("inverse_jscc", {"lr": 0}, "methods.x.lr"),
        ("inverse_jscc", {"generator_steps": 0}, "methods.x.generator_steps"),
        ("inverse_jscc", {"generator_eta": 2}, "methods.x.generator_eta"),
        ("inverse_jscc", {"generator_eta": 1, "init": "invert"}, "methods.x.init"),
        ("inverse_jscc", {"loss": "lpips"}, "methods.x.loss"),
        ("inverse_jscc", {"latent_weight": -1}, "methods.x.latent_weight"),
        ("inverse_jscc", {"init": "zeros"}, "methods.x.init"),
        ("inverse_jscc", {"steps": 10}, "methods.x.steps"),
        ("inverse_jscc", {"clip_x0": "yes"}, "methods.x.clip_x0"),
    ],
)
def test_config_errors_name_the_key(name: str, override: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_method({**_yaml(name), **override}, "methods.x")
    assert err.value.key == key


@pytest.mark.parametrize("name", ["dps_jscc", "inverse_jscc"])
def test_registry_restores_with_the_codec_component(unet: UNet2DModel, name: str) -> None:
    codec = tiny_codec()
    node = {**_yaml(name), "progress": False}
    node.update({"steps": 2} if name == "dps_jscc" else {"iterations": 1, "generator_steps": 2})
    method = check_method(node)
    x_hat = received(codec)
    out = restore(method, x_hat, unet=unet, scheduler=scheduler(), codec=codec, generator=gen(0))
    assert out.shape == x_hat.shape and out.abs().max() <= 1
    with pytest.raises(ConfigError) as err:  # without the codec: how to give one
        restore(method, x_hat, unet=unet, scheduler=scheduler(), generator=gen(0))
    assert err.value.key == "jscc.checkpoint"


# ---- time per image -----------------------------------------------------------------------
def test_restoration_reports_seconds_per_image() -> None:
    def slow(x_hat: Tensor, snr: Tensor, g: torch.Generator) -> Tensor:
        time.sleep(0.02 * x_hat.shape[0])
        return x_hat

    torch.manual_seed(0)
    metrics = {"lpips": False, "stlpips": False, "swd": False}
    codec = DeepJSCCModule(bcr="1/192", image_size=32, latent_channels=8, width=8, metrics=metrics)
    module = RestorationModule(
        codec, {"slow": slow}, snr_db=0.0, metrics=ImageMetrics.from_config(metrics)
    )
    images = torch.rand(6, 3, 32, 32, generator=gen(5)) * 2 - 1
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(images, batch_size=4))  # type: ignore[arg-type]
    assert 0.02 <= module.summary["slow"][SECONDS] < 0.2
    assert module.summary["deepjscc"][SECONDS] > 0  # the codec's own time, also there
