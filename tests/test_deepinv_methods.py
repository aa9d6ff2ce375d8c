"""DiffPIR and DDRM through deepinv (samplers/deepinv_methods.py, samplers/deepinv_bridge.py).

The wrappers first: the physics is singexp's operator (A, Aᵀ, A† and an orthonormal SVD), the
denoiser is deepinv's own convention on singexp's prior (equal to deepinv's ScoreModelWrapper
on the same UNet). Then each method at tiny settings on the shipped models (2 shapes of 32 px,
the main job's codec, 2–4 steps), and what holds by construction: DDRM at σ_y = 0 keeps
A x̃ = y up to its last denoising step.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from deepinv.models import ScoreModelWrapper
from torch import Tensor

from singexp.assembly import method_record
from singexp.config import ASSETS_DIR
from singexp.data.shapes import ShapesDataset
from singexp.errors import ConfigError
from singexp.models.jscc import load_codec
from singexp.models.prior import load_prior
from singexp.operators import (
    AveragePool,
    ColorToGray,
    Identity,
    StridedBlur,
    fit_patch_projection,
    measurement_noise_std,
)
from singexp.printing import describe_sampler
from singexp.samplers import deepinv_bridge as bridge
from singexp.samplers.deepinv_methods import DIFFPIR_NOISE_FLOOR, DDRMConfig, DiffPIRConfig
from singexp.samplers.dps_jscc import JSCCForward
from singexp.samplers.registry import check_method, restore
from singexp.samplers.schedulers import build_scheduler

SNR = 0.0
OPERATOR = AveragePool(4)  # the main job's A (BCR 1/48 at 32 px: operator.scale=auto → 4)


def scheduler() -> Any:
    """DDIM with the shipped prior's schedule (prior/embedded.yaml)."""
    return build_scheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, schedule="linear", kind="ddim"
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def parts() -> dict[str, Any]:
    """The shipped prior and codec, two test shapes, what the codec made of them and σ_y as
    ``sigma_y=auto`` measures it (here on the same images)."""
    unet = load_prior("embedded", expected_size=32)
    codec = load_codec(ASSETS_DIR / "jscc_shapes32" / "jscc_1_48.safetensors").eval()
    data = ShapesDataset(32, 2, 0, "test", 1, 4)
    x = torch.stack([data[i] for i in range(2)])
    snr = torch.full((2,), SNR)
    with torch.no_grad():
        x_hat = codec(x, snr, gen(1)).clamp(-1, 1)
    sigma_y = measurement_noise_std(OPERATOR, x, x_hat)
    return {"unet": unet, "codec": codec, "x": x, "x_hat": x_hat, "snr": snr, "sigma_y": sigma_y}


def run(parts: dict[str, Any], node: dict[str, Any], seed: int = 0, **extra: Any) -> Tensor:
    """``restore`` of the method ``node`` on the received images, as a run calls it."""
    return restore(
        check_method({"progress": False, **node}),
        parts["x_hat"],
        unet=parts["unet"],
        scheduler=scheduler(),
        generator=gen(seed),
        snr_db=parts["snr"],
        sigma_y=parts["sigma_y"],
        **{"operator": OPERATOR, "codec": parts["codec"], **extra},
    )


# ---- the physics: singexp's operator with its SVD -----------------------------------------------
def _operators() -> list[Any]:
    pairs = torch.rand(4, 3, 32, 32, generator=gen(2)) * 2 - 1
    noisy = pairs + 0.3 * torch.randn(pairs.shape, generator=gen(3))
    return [
        AveragePool(4),
        AveragePool(8),
        Identity(),
        ColorToGray(),
        fit_patch_projection(pairs, noisy, 4, rank=6),
    ]


@pytest.mark.parametrize("operator", _operators(), ids=repr)
def test_tile_physics_is_singexps_operator_with_its_svd(operator: Any) -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen(4))
    physics = bridge.TileSVDPhysics(operator, tuple(x.shape), 0.0)
    y = operator.A(x)
    torch.testing.assert_close(physics.A(x), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.A_adjoint(y), operator.A_adjoint(y), rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.A_dagger(y), operator.A_pinv(y), rtol=0, atol=1e-5)
    # A A† A = A, and V, U orthonormal (Vᵀ V = I on images, UᵀU = I on measurements)
    torch.testing.assert_close(physics.A(physics.A_dagger(y)), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.V(physics.V_adjoint(x)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.U(physics.U_adjoint(y)), y, rtol=0, atol=1e-5)
    coefficients = physics.V_adjoint(x)
    assert coefficients.flatten(1).norm(dim=1).allclose(x.flatten(1).norm(dim=1), atol=1e-4)
    # the singular values: A Aᵀ = σ² I for these operators (operators.py singular_value)
    nonzero = physics.mask[physics.mask > 0]
    assert nonzero.numel() == y[0].numel()
    torch.testing.assert_close(nonzero, torch.full_like(nonzero, operator.singular_value))


def test_an_operator_without_tile_svd_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^operator\.name: StridedBlur.*avgpool, identity"):
        bridge.TileSVDPhysics(StridedBlur(4), (2, 3, 32, 32), 0.0)


# ---- the denoiser: the prior in deepinv's convention ---------------------------------------------
def test_prior_denoiser_is_deepinvs_own_wrapper_of_the_prior(parts: dict[str, Any]) -> None:
    """D(u, σ) on [0, 1] images with σ in [0, 1] units equals deepinv's ScoreModelWrapper of
    the same ε-prediction UNet and ᾱ_t (its VP, integer-time form), and at σ = σ_t/2 it is
    Tweedie's x0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t of the UNet at t, x_t = √ᾱ_t (2u − 1)."""
    ab = scheduler().alphas_cumprod
    ours = bridge.PriorDenoiser(parts["unet"], ab, clip=False)
    theirs = ScoreModelWrapper(
        score_model=parts["unet"],
        prediction_type="epsilon",
        clip_output=False,
        scale_t=ab.sqrt(),
        variance_preserving=True,
        takes_integer_time=True,
        n_timesteps=1000,
    )
    u = torch.rand(2, 3, 32, 32, generator=gen(6))
    for t in (0, 40, 333, 700, 999):
        sigma = float(bridge.ve_sigma(ab[t : t + 1])) / 2
        assert ours.timesteps(sigma, 2).tolist() == [t, t]
        with torch.no_grad():
            got = ours(u, sigma)
            x_t = ab[t].sqrt() * (2 * u - 1)
            eps = parts["unet"](x_t, t).sample
            by_hand = ((x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt() + 1) / 2
            tol = 1e-5 * (1 + 2 * sigma)  # x0 carries σ_t ε: float error grows with σ
            torch.testing.assert_close(got, theirs(u, sigma, return_dict=False), rtol=0, atol=tol)
        torch.testing.assert_close(got, by_hand, rtol=0, atol=tol)
    assert ours.calls == 5
    # per-image noise levels, and clipping to [−1, 1] (i.e. [0, 1] here)
    t_pair = ours.timesteps(torch.tensor([0.01, 3.0]), 2)
    assert t_pair[0] < t_pair[1]
    clipped = bridge.PriorDenoiser(parts["unet"], ab, clip=True)(u, 20.0)
    assert clipped.min() >= 0 and clipped.max() <= 1


# ---- the methods, tiny ----------------------------------------------------------------------
def _in_range_and_finite(out: Tensor, like: Tensor) -> None:
    assert out.shape == like.shape and out.dtype == like.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize(
    "node",
    [
        {"name": "ddrm", "steps": 3},
        {"name": "diffpir", "steps": 4},
        {"name": "diffpir", "steps": 3, "forward": "jscc", "sigma_y": 0.1, "prox_steps": 2},
    ],
    ids=["ddrm", "diffpir-linear", "diffpir-jscc"],
)
def test_each_method_restores_at_tiny_settings(
    parts: dict[str, Any], node: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    forward = bridge.PriorDenoiser.forward

    def counted(self: Any, *args: Any, **kwargs: Any) -> Tensor:
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(bridge.PriorDenoiser, "forward", counted)
    state = torch.random.get_rng_state()
    out = run(parts, node, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # deepinv's draws are fenced off
    _in_range_and_finite(out, parts["x_hat"])
    assert len(calls) == node["steps"]  # NFE = steps (what metrics.json records)
    # the sampler's generator fixes the result; another seed draws other noise
    torch.testing.assert_close(run(parts, node, seed=3), out, rtol=0, atol=0)
    assert not torch.allclose(run(parts, node, seed=4), out, atol=1e-3)
    # the data step acts: the output agrees with what was received through the method's forward
    # model (A, or the chain) far better than a blank image does; at 2–4 steps the output
    # still carries noise in what A does not see, so its distance to x says little
    if node.get("forward") == "jscc":
        measure, y = JSCCForward(parts["codec"], parts["snr"]), parts["x_hat"]
    else:
        measure, y = OPERATOR.A, OPERATOR.A(parts["x_hat"])
    with torch.no_grad():
        miss = (measure(out) - y).pow(2).mean().sqrt()
        blank = (measure(torch.zeros_like(out)) - y).pow(2).mean().sqrt()
    assert miss < 0.6 * blank


def test_ddrm_at_zero_noise_keeps_the_measurement(parts: dict[str, Any]) -> None:
    """σ_y = 0, η_b = 1: DDRM sets A's observed spectral components to y plus the step's noise
    at every step (Kawar et al. 2022, Sec. 3), so A x̃ = y up to its last denoising step
    (t = 0, σ ≈ 0.01) and the noise drawn with it; with the measured σ_y it does not (y is
    noisy)."""
    y = OPERATOR.A(parts["x_hat"])

    def rms(out: Tensor) -> float:
        return float((OPERATOR.A(out) - y).pow(2).mean().sqrt())

    exact = run(parts, {"name": "ddrm", "steps": 20, "sigma_y": 0.0})
    noisy = run(parts, {"name": "ddrm", "steps": 20})  # sigma_y: auto (measured)
    assert parts["sigma_y"] > 0.1
    assert rms(exact) < 0.01
    assert rms(noisy) > 5 * rms(exact)
    # SING-Zero (DDNM, σ_y = 0) holds A x̃ = y exactly in the same sense: DDRM is as close
    ddnm = run(parts, {"name": "sing_zero", "steps": 20, "sigma_y": 0.0})
    assert rms(exact) < rms(ddnm) + 0.01


def test_diffpir_noise_level_is_half_sigma_y_floored() -> None:
    assert DiffPIRConfig(sigma_y=0.2).noise_level(None) == pytest.approx(0.1)
    assert DiffPIRConfig(sigma_y="auto").noise_level(0.3) == pytest.approx(0.15)
    assert DiffPIRConfig(sigma_y=0.0).noise_level(None) == DIFFPIR_NOISE_FLOOR
    assert DDRMConfig(sigma_y=0.0).noise_level(None) == 0.0
    with pytest.raises(ConfigError, match=r"^methods\.ddrm\.sigma_y: auto needs"):
        DDRMConfig(sigma_y="auto").noise_level(None)


def test_ddrm_noise_levels_are_the_priors_at_the_respaced_timesteps() -> None:
    sched = scheduler()
    sigmas = bridge.ddrm_sigmas(sched, 4)
    ab = sched.alphas_cumprod.double()
    expected = [math.sqrt((1 - ab[t]) / ab[t]) / 2 for t in (750, 500, 250, 0)]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)


# ---- config and record ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"name": "diffpir", "zeta": 1.5}, "zeta"),
        ({"name": "diffpir", "lambda_": 0}, "lambda_"),
        ({"name": "diffpir", "steps": 1}, "steps"),
        ({"name": "diffpir", "forward": "jscc"}, "sigma_y"),  # auto measures the linear A's
        ({"name": "diffpir", "forward": "chain"}, "forward"),
        ({"name": "diffpir", "prox_steps": 0}, "prox_steps"),
        ({"name": "diffpir", "scheduler": "ddpm"}, "scheduler"),  # DiffPIR's own schedule
        ({"name": "ddrm", "eta": -0.1}, "eta"),
        ({"name": "ddrm", "eta_b": 2}, "eta_b"),
        ({"name": "ddrm", "sigma_y": -1}, "sigma_y"),
        ({"name": "ddrm", "zeta": 0.3}, "zeta"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(node: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^methods\.m\.{key}: ") as error:
        check_method(node, "methods.m")
    assert "\n" not in str(error.value)


def test_diffpir_through_the_chain_needs_the_codec(parts: dict[str, Any]) -> None:
    node = {"name": "diffpir", "steps": 2, "forward": "jscc", "sigma_y": 0.1}
    with pytest.raises(ConfigError, match=r"^jscc\.checkpoint: sampler=diffpir runs the DeepJSCC"):
        run(parts, node, codec=None)


def test_the_record_says_what_ran() -> None:
    diffpir = check_method({"name": "diffpir", "steps": 7}, "methods.diffpir")
    record = method_record(diffpir, OPERATOR, None, 0.24)
    assert record["nfe"] == 7 and record["lambda_"] == 1.0 and record["zeta"] == 0.1
    assert record["sigma_y"] == "auto" and record["sigma_y_measured"] == 0.24
    assert record["noise_level"] == pytest.approx(0.12)
    assert record["physics"].startswith("linear: y = A x̂, A = AveragePool(scale=4)")
    assert record["deepinv"].startswith("0.5.")
    line = describe_sampler(record)
    assert line.startswith("DiffPIR (Zhu et al. 2023) by deepinv.sampling.DiffPIR; λ 1.0, ζ 0.1")
    assert "7 steps (7 NFE), σ_y auto = 0.2400" in line
    chain = check_method(
        {"name": "diffpir", "forward": "jscc", "sigma_y": 0.1, "prox_steps": 3}, "m"
    )
    record = method_record(chain, OPERATOR, None, None)
    assert "sigma_y_measured" not in record and record["noise_level"] == pytest.approx(0.05)
    assert "DeepJSCC chain" in record["physics"] and "3 gradient steps" in record["physics"]
    ddrm = check_method({"name": "ddrm", "scheduler": "ddim", "sigma_y": 0.0}, "methods.ddrm")
    record = method_record(ddrm, OPERATOR, None, None)
    assert (record["nfe"], record["eta"], record["eta_b"], record["noise_level"]) == (
        20,
        0.85,
        1.0,
        0.0,
    )
    assert record["scheduler"] == "ddim"
    assert "η 0.85, η_b 1.0, 20 steps (20 NFE), σ_y 0.0" in describe_sampler(record)
