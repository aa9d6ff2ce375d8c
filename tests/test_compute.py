"""How the restorers compute: sampling precision, guidance micro-batch and
gradient checkpointing of the prior UNet — each an ``evaluate`` key, checked and recorded."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from diffusers import UNet2DModel
from omegaconf import OmegaConf
from torch import Tensor

from conftest import randomize
from singexp.config import CONF_DIR
from singexp.errors import ConfigError
from singexp.nn.inn import ConditionalINN
from singexp.operators import AveragePool
from singexp.samplers.compute import ComputeConfig
from singexp.samplers.dps_jscc import JSCCForward, JSCCMeasurement
from singexp.samplers.registry import check_method, restore
from singexp.samplers.schedulers import build_scheduler

TINY = {"pairs": 1, "cond_blocks": 1, "width": 8, "emb_dim": 16}


def _images(seed: int, n: int = 4) -> Tensor:
    return torch.rand((n, 3, 16, 16), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _sing_inn(unet: UNet2DModel, compute: ComputeConfig, x_hat: Tensor) -> Tensor:
    """SING-INN as the experiments configure it (conf/sampler/sing_inn.yaml: gradient=dps),
    3 steps, through the one entry point every run uses."""
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "sing_inn.yaml"))
    method = check_method({**node, "steps": 3, "progress": False})
    torch.manual_seed(3)
    inn = randomize(ConditionalINN(scale=4, **TINY), std=0.3)
    return restore(
        method,
        x_hat,
        compute=compute,
        unet=unet,
        scheduler=build_scheduler(kind="ddim"),
        inn=inn,
        snr_db=torch.tensor([-5.0, 0.0, 5.0, 2.0]),
        generator=torch.Generator().manual_seed(0),
    )


@contextmanager
def _unet_batches(unet: UNet2DModel) -> Iterator[list[int]]:
    """The batch size of every UNet call inside."""
    seen: list[int] = []
    handle = unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        yield seen
    finally:
        handle.remove()


def test_the_keys_are_checked_with_the_key_named() -> None:
    node = OmegaConf.load(CONF_DIR / "config.yaml").evaluate
    assert ComputeConfig.from_config(node) == ComputeConfig("fp32", None, False, False)
    for bad, key in (
        ({"precision": "fp64"}, "evaluate.precision"),
        ({"guidance_batch": 0}, "evaluate.guidance_batch"),
        ({"guidance_batch": True}, "evaluate.guidance_batch"),
        ({"gradient_checkpointing": "yes"}, "evaluate.gradient_checkpointing"),
        ({"compile": 1}, "evaluate.compile"),
    ):
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            ComputeConfig.from_config(bad)


def test_guidance_micro_batches_give_the_same_restoration(unet: UNet2DModel) -> None:
    x_hat = _images(1)
    with _unet_batches(unet) as whole_calls:
        whole = _sing_inn(unet, ComputeConfig(), x_hat)
    with _unet_batches(unet) as micro_calls:
        micro = _sing_inn(unet, ComputeConfig(guidance_batch=1), x_hat)
    assert set(whole_calls) == {4}
    # the guided steps are split; the last step is not guided (samplers/loop.py): whole batch
    assert micro_calls[-1] == 4 and set(micro_calls[:-1]) == {1} and len(micro_calls) > 4
    # every image's gradient is its own: the same numbers (float rounding of another batch)
    torch.testing.assert_close(micro, whole, rtol=0, atol=1e-5)
    with _unet_batches(unet) as uneven:
        three = _sing_inn(unet, ComputeConfig(guidance_batch=3), x_hat)
    assert uneven[:2] == [3, 1]
    torch.testing.assert_close(three, whole, rtol=0, atol=1e-5)


def test_micro_batches_refuse_a_forward_that_draws_noise_per_batch() -> None:
    class Chain(torch.nn.Module):  # the parts JSCCForward uses; never called here
        encoder = decoder = channel = torch.nn.Identity()

    y = _images(2)
    for noise, samples in (("none", 1), ("mean", 2)):
        guide = JSCCMeasurement(
            JSCCForward(Chain(), torch.arange(4.0), noise, samples), y, 0.5, "constant"
        )
        if noise == "mean":
            with pytest.raises(ConfigError, match=r"^evaluate\.guidance_batch: DPS-JSCC"):
                guide.rows(slice(0, 2))
            continue
        part = guide.rows(slice(1, 3))
        torch.testing.assert_close(part.y, y[1:3])
        torch.testing.assert_close(part.forward.snr_db, torch.tensor([1.0, 2.0]))
        assert guide.y.shape[0] == 4 and guide.forward.snr_db.shape == (4,)  # not changed


def _sing_zero(unet: UNet2DModel, compute: ComputeConfig, x_hat: Tensor) -> Tensor:
    method = check_method({"name": "sing_zero", "steps": 5, "progress": False})
    return restore(
        method,
        x_hat,
        compute=compute,
        unet=unet,
        scheduler=build_scheduler(kind="ddim"),
        operator=AveragePool(4),
        sigma_y=0.0,
        generator=torch.Generator().manual_seed(0),
    )


def test_bf16_runs_the_unet_in_bf16_and_returns_float32(unet: UNet2DModel) -> None:
    x_hat = _images(4)
    dtypes: list[torch.dtype] = []
    handle = unet.conv_in.register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    try:
        full = _sing_zero(unet, ComputeConfig(), x_hat)
        assert set(dtypes) == {torch.float32}
        dtypes.clear()
        half = _sing_zero(unet, ComputeConfig(precision="bf16"), x_hat)
        assert set(dtypes) == {torch.bfloat16}
    finally:
        handle.remove()
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    gap = (half - full).abs().mean()
    assert 0 < gap < 0.02  # bf16 rounding: near, never identical


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(
    unet: UNet2DModel, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """``precision=auto``: bf16 on a CPU with AVX-512 BF16 or AMX, fp32 on one
    without (where oneDNN emulates bf16, 40-130x slower); metrics.json records what ran."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    compute = ComputeConfig.from_config({"precision": "auto"})
    cpu = torch.device("cpu")
    expected = "bf16" if native else "fp32"
    assert compute.record(cpu) == {
        "precision": "auto",
        "guidance_batch": None,
        "gradient_checkpointing": False,
        "compile": False,
        "precision_used": expected,
    }
    dtypes: list[torch.dtype] = []
    handle = unet.conv_in.register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    try:
        _sing_zero(unet, compute, _images(6))
    finally:
        handle.remove()
    assert set(dtypes) == {torch.bfloat16 if native else torch.float32}
    # an explicit precision is never changed by the hardware
    assert ComputeConfig(precision="fp32").record(cpu)["precision_used"] == "fp32"
    assert ComputeConfig(precision="bf16").record(cpu)["precision_used"] == "bf16"


def _saved_numel(net: UNet2DModel, x: Tensor) -> int:
    """Elements the autograd graph of one UNet forward keeps for its backward."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x.clone().requires_grad_(True), torch.tensor(500)).sample.sum()
    return total


def test_gradient_checkpointing_keeps_less_and_changes_nothing(unet: UNet2DModel) -> None:
    x_hat = _images(5)
    plain_unet = copy.deepcopy(unet)
    checkpointed = ComputeConfig(gradient_checkpointing=True).prepare_prior(copy.deepcopy(unet))
    assert checkpointed.is_gradient_checkpointing and not plain_unet.is_gradient_checkpointing
    # the blocks' activations are recomputed in the backward, not kept
    assert _saved_numel(checkpointed, x_hat) < 0.7 * _saved_numel(plain_unet, x_hat)
    plain = _sing_inn(plain_unet, ComputeConfig(), x_hat)
    again = _sing_inn(checkpointed, ComputeConfig(gradient_checkpointing=True), x_hat)
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_compile_gives_the_eager_restoration(unet: UNet2DModel) -> None:
    """``evaluate.compile``: the prior through torch.compile restores the same images as the
    eager UNet (SING-INN with its guided steps: a forward and a backward graph), to float
    rounding."""
    x_hat = _images(7)
    eager = _sing_inn(unet, ComputeConfig(), x_hat)
    compiled_unet = ComputeConfig(compile=True).prepare_prior(copy.deepcopy(unet))
    assert compiled_unet is not unet and hasattr(compiled_unet, "_orig_mod")
    assert compiled_unet.config == unet.config  # what the samplers read passes through
    compiled = _sing_inn(compiled_unet, ComputeConfig(compile=True), x_hat)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
