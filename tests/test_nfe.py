"""NFE (every UNet forward and backward) of each method, counted; the last DPS step; the
multistep schedulers (DPM-Solver++, UniPC) fed the corrected x̂0 through ε'."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DModel, UniPCMultistepScheduler
from torch import Tensor, nn

from conftest import tiny_unet
from singexp.errors import ConfigError
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool, ColorToGray, LinearOperator
from singexp.samplers import NullSpace, check_method, restore, sample, sing_zero
from singexp.samplers.base import GuidanceSteps
from singexp.samplers.nfe import method_nfe
from singexp.samplers.schedulers import build_scheduler
from test_baselines import received, tiny_codec

SHAPE = (2, 3, 16, 16)
MULTISTEP = ["dpmsolver++", "unipc"]


class Counting(nn.Module):
    """A UNet that counts its forward calls and the backward passes through its output."""

    def __init__(self, inner: UNet2DModel) -> None:
        super().__init__()
        self.inner = inner
        self.forward_calls = 0
        self.backward_calls = 0

    def _backward(self, grad: Tensor) -> None:
        self.backward_calls += 1

    def forward(self, x: Tensor, t: Any) -> Any:
        self.forward_calls += 1
        out = self.inner(x, t)
        if out.sample.requires_grad:
            out.sample.register_hook(self._backward)
        return out


@pytest.fixture(scope="module")
def unet64() -> UNet2DModel:
    return tiny_unet(dtype=torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(seed: int) -> Tensor:
    return torch.rand(SHAPE, generator=gen(seed)) * 2 - 1


def run_counted(unet: UNet2DModel, raw: dict[str, Any]) -> tuple[int, int]:
    """Run the method of sampler config ``raw`` through the registry; its UNet calls."""
    method = check_method(raw)
    counting = Counting(unet)
    codec = tiny_codec()
    scheduler = build_scheduler(
        kind=raw.get("scheduler", "ddim"), timestep_spacing=raw.get("timestep_spacing", "leading")
    )
    torch.manual_seed(0)
    inn = ConditionalINN(scale=4, pairs=1, cond_blocks=1, width=8, emb_dim=16)
    restore(
        method,
        received(codec),
        unet=counting,
        scheduler=scheduler,
        operator=AveragePool(4),
        inn=inn,
        codec=codec,
        generator=gen(0),
        snr_db=torch.zeros(SHAPE[0]),
    )
    return counting.forward_calls, counting.backward_calls


CASES = [
    {"name": "sing_zero", "steps": 5},
    {"name": "sing_zero", "steps": 6, "time_travel": {"length": 2, "repeat": 2}},
    {"name": "sing_zero", "steps": 4, "scheduler": "dpmsolver++", "eta": 0.0},
    {"name": "sing_inn", "steps": 5},
    {"name": "sing_inn", "steps": 6, "guidance_every": 2},
    {"name": "sing_inn", "steps": 6, "guidance_last": 3},
    {"name": "sing_inn", "steps": 6, "variant": "two_phase", "switch_t": 500},
    {"name": "sing_inn", "steps": 4, "gradient": "autograd"},
    {"name": "sing_inn", "steps": 4, "scheduler": "unipc", "eta": 0.0},
    {"name": "dps_jscc", "steps": 4},
    {"name": "inverse_jscc", "generator_steps": 2, "iterations": 3},
    {"name": "inverse_jscc", "generator_steps": 2, "iterations": 2, "init": "noise"},
    {"name": "diffpir", "steps": 3, "sigma_y": 0.05},
    {"name": "ddrm", "steps": 3, "sigma_y": 0.05},
]


@pytest.mark.parametrize("raw", CASES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
def test_recorded_nfe_is_the_counted_unet_calls(unet: UNet2DModel, raw: dict[str, Any]) -> None:
    forward, backward = run_counted(unet, {**raw, "progress": False})
    nfe = method_nfe(check_method(raw))
    assert (nfe["unet_forward"], nfe["unet_backward"]) == (forward, backward)
    assert nfe["nfe"] == forward + backward


@pytest.mark.parametrize("name", ["sing_inn", "dps_jscc"])
def test_the_last_dps_step_runs_no_backward(unet: UNet2DModel, name: str) -> None:
    """The output is the last x̂0 (loop docstring): the last step's push would move only the
    unused x_t', so it is not computed: steps − 1 backward passes."""
    assert run_counted(unet, {"name": name, "steps": 5, "progress": False}) == (5, 4)
    assert method_nfe(check_method({"name": name, "steps": 100}))["nfe"] == 199


def test_default_nfe_of_each_method() -> None:
    nfe = {n: method_nfe(check_method({"name": n}))["nfe"] for n in ("sing_zero", "sing_inn")}
    nfe["inverse_jscc"] = method_nfe(check_method({"name": "inverse_jscc"}))["nfe"]
    assert nfe == {"sing_zero": 100, "sing_inn": 199, "inverse_jscc": 5 * (2 * 20 + 2)}


def test_guidance_steps() -> None:
    assert [GuidanceSteps().active(k, 6) for k in range(6)] == [True] * 6
    assert [GuidanceSteps(every=2).active(k, 6) for k in range(6)] == [True, False] * 3
    assert [GuidanceSteps(last=2).active(k, 6) for k in range(6)] == [False] * 4 + [True] * 2
    with pytest.raises(ConfigError, match="guidance_every"):
        GuidanceSteps(every=0)


# ---- multistep schedulers ------------------------------------------------------------------
@pytest.mark.parametrize("kind", MULTISTEP)
@pytest.mark.parametrize("op", [AveragePool(4), AveragePool(8), ColorToGray()], ids=repr)
@pytest.mark.parametrize("steps", [3, 8])
def test_multistep_sing_zero_is_consistent_with_y(
    unet64: UNet2DModel, kind: str, op: LinearOperator, steps: int
) -> None:
    """Acceptance (issue 40): A x̂ = y to 1e-5 at σ_y = 0 with each new scheduler (in float64:
    the random UNet's x0|t reach ~500, where float32 rounding alone is ~3e-5)."""
    x_hat = images(20).double()
    out = sing_zero(
        unet64,
        build_scheduler(kind=kind),
        op,
        x_hat,
        steps=steps,
        eta=0.0,
        generator=gen(21),
        clamp=False,
        progress=False,
    )
    assert out.dtype == torch.float64
    err = (op.A(out) - op.A(x_hat)).abs().amax(dim=(1, 2, 3))
    assert (err < 1e-5).all(), err


@pytest.mark.parametrize("kind", MULTISTEP)
def test_multistep_solver_extrapolates_from_the_corrected_x0(unet: UNet2DModel, kind: str) -> None:
    """ε' = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t) hands the solver x̂0 itself: its stored data prediction
    (``model_outputs``) is the corrected x̂0 of each step, not the model's x0|t."""
    op = AveragePool(4)
    scheduler = build_scheduler(kind=kind)
    seen: list[tuple[Tensor, Tensor]] = []

    def check(step: Any, x_t: Tensor, x0_hat: Tensor) -> None:
        if step.index > 0:  # the previous step's x̂0 is the solver's last stored output
            seen.append((scheduler.model_outputs[-1].clone(), previous[0]))
        previous[:] = [x0_hat.clone()]

    previous: list[Tensor] = []
    sample(
        unet,
        scheduler,
        SHAPE,
        NullSpace(op, op.A(images(3))),
        steps=5,
        eta=0.0,
        generator=gen(1),
        callback=check,
        progress=False,
    )
    assert len(seen) == 4
    for stored, x0_hat in seen:
        torch.testing.assert_close(stored, x0_hat, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", MULTISTEP)
def test_multistep_unguided_loop_is_diffusers_own(unet: UNet2DModel, kind: str) -> None:
    """No correction: the loop is the plain diffusers loop of that scheduler."""
    ours = sample(
        unet, build_scheduler(kind=kind), SHAPE, steps=6, generator=gen(5), progress=False
    )
    ref = build_scheduler(kind=kind)
    ref.set_timesteps(6)
    x = torch.randn(SHAPE, generator=gen(5))
    for t in ref.timesteps:
        x = ref.step(unet(x, t).sample, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)
    assert isinstance(ref, DPMSolverMultistepScheduler | UniPCMultistepScheduler)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"eta": 0.85}, "sampler.eta"),
        ({"eta": 0.0, "update": "ddnm"}, "sampler.update"),
        ({"eta": 0.0, "sigma_y": 0.1}, "sampler.sigma_y"),
        ({"eta": 0.0, "time_travel": {"length": 2, "repeat": 2}}, "sampler.time_travel"),
    ],
)
@pytest.mark.parametrize("kind", MULTISTEP)
def test_multistep_config_errors_name_the_key(kind: str, override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_method({"name": "sing_zero", "scheduler": kind, **override})


def test_every_method_of_the_comparison_records_its_nfe(make_cfg: Any) -> None:
    """The record of every method the comparison runs (the loop's, InverseJSCC's, deepinv's)
    names its NFE: none is left out, none fails."""
    from singexp.assembly import method_records
    from singexp.config import validate

    run = validate(make_cfg("+experiment=comparison"))
    records = method_records(run.methods, AveragePool(4), None, 0.05)
    assert set(records) == {"sing_zero", "sing_inn", "dps_jscc", "inverse_jscc", "diffpir", "ddrm"}
    assert all(r["nfe"] > 0 for r in records.values()), {k: r["nfe"] for k, r in records.items()}
    assert records["diffpir"]["nfe"] == records["diffpir"]["steps"]
