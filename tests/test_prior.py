"""The diffusion prior: building, schedule, offline loading and its errors, training, export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from singexp.errors import ConfigError
from singexp.models import prior
from singexp.models.prior import load_prior, resolve_source, train_prior
from singexp.modules.prior import DiffusionPriorModule
from singexp.nn.unet import build_unet, count_parameters
from singexp.samplers.schedulers import build_scheduler

TINY = {"image_size": 16, "block_out_channels": (8, 16), "layers_per_block": 1}


def tiny_module(**kwargs) -> DiffusionPriorModule:
    torch.manual_seed(0)
    return DiffusionPriorModule(**{**TINY, **kwargs})


def fixed_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # smooth images (not white noise) so a few steps of training have something to learn
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def train_steps(module: DiffusionPriorModule, batch: torch.Tensor, steps: int) -> None:
    opt = torch.optim.AdamW(module.unet.parameters(), lr=module.hparams.lr)
    for i in range(steps):
        loss = module.diffusion_loss(batch, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        module.ema.step(module.unet.parameters())


def one_line(err: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_scheduler_is_the_papers_linear_schedule() -> None:
    for kind in ("ddpm", "ddim"):
        s = build_scheduler(kind=kind)
        assert s.config.num_train_timesteps == 1000
        assert s.config.prediction_type == "epsilon"
        expected = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
        torch.testing.assert_close(s.betas, expected)
        torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - expected, 0))


def test_build_unet_has_no_attention_by_default() -> None:
    unet = build_unet(32)
    names = [type(m).__name__ for m in unet.modules()]
    assert "Attention" not in names
    assert unet.config.block_out_channels == (32, 64, 128) or list(
        unet.config.block_out_channels
    ) == [32, 64, 128]
    # the defaults are the shipped embedded prior's architecture, tensor for tensor
    shipped = load_prior("embedded", expected_size=32)
    shapes = {k: v.shape for k, v in unet.state_dict().items()}
    assert shapes == {k: v.shape for k, v in shipped.state_dict().items()}
    # every parameter counts, frozen ones too (the shipped prior is loaded frozen)
    assert count_parameters(shipped) == sum(v.numel() for v in shipped.state_dict().values())
    assert count_parameters(unet) == count_parameters(shipped)
    assert round(count_parameters(unet) / 1e6, 1) == 2.5  # README: 2.5 M
    with_attention = build_unet(16, block_out_channels=(8, 16), attention=True)
    assert "Attention" in [type(m).__name__ for m in with_attention.modules()]
    x = torch.zeros(1, 3, 16, 16)
    assert with_attention(x, 3).sample.shape == x.shape


def test_build_unet_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.image_size"):
        build_unet(30)  # not divisible by 4
    with pytest.raises(ConfigError, match=r"prior\.norm_num_groups"):
        build_unet(16, block_out_channels=(8, 16), norm_num_groups=32)


def test_training_lowers_the_loss_and_ema_moves_away() -> None:
    module = tiny_module(lr=3e-3, ema_decay=0.99)
    batch = fixed_batch()

    def eval_loss() -> float:
        with torch.no_grad():
            losses = [
                module.diffusion_loss(batch, torch.Generator().manual_seed(100 + i))
                for i in range(4)
            ]
        return float(torch.stack(losses).mean())

    before = eval_loss()
    train_steps(module, batch, 25)
    assert eval_loss() < 0.7 * before
    ema = dict(module.ema_unet().named_parameters())
    raw = dict(module.unet.named_parameters())
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)
    assert module.ema.optimization_step == 25


def test_export_round_trip(tmp_path: Path) -> None:
    module = tiny_module()
    train_steps(module, fixed_batch(), 3)
    x = fixed_batch(2)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        reference = module.ema_unet()(x, t).sample
    for dtype, tol in (("float32", 1e-6), ("float16", 5e-3)):
        folder = module.export(tmp_path / dtype, dtype=dtype)
        assert (folder / "diffusion_pytorch_model.safetensors").is_file()
        assert (folder / "scheduler" / "scheduler_config.json").is_file()
        loaded = UNet2DModel.from_pretrained(str(folder), local_files_only=True)
        assert next(loaded.parameters()).dtype == torch.float32  # fp16 file, fp32 model
        with torch.no_grad():
            out = loaded(x, t).sample
        torch.testing.assert_close(out, reference, atol=tol, rtol=0)
        via_load_prior = load_prior(folder, expected_size=16)
        with torch.no_grad():
            torch.testing.assert_close(via_load_prior(x, t).sample, out)


def test_load_prior_finds_a_unet_subfolder(tmp_path: Path) -> None:
    unet = build_unet(16, block_out_channels=(8, 16))
    unet.save_pretrained(str(tmp_path / "pipe" / "unet"))
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    loaded = load_prior(tmp_path / "pipe", expected_size=16)
    assert loaded.config.sample_size == 16


def test_missing_source_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_prior(tmp_path / "nowhere", expected_size=32)
    assert one_line(err).startswith("prior.source:")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as err:
        load_prior(empty, expected_size=32)
    assert one_line(err).startswith("prior.source:")


def test_uncached_preset_names_the_download_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        UNet2DModel, "from_pretrained", classmethod(_raise_not_cached), raising=True
    )
    with pytest.raises(ConfigError) as err:
        load_prior("google/ddpm-ema-celebahq-256", expected_size=256)
    text = one_line(err)
    assert text.startswith("prior.source:")
    assert "hf download google/ddpm-ema-celebahq-256 --local-dir" in text


def _raise_not_cached(cls, *args, **kwargs):
    assert kwargs.get("local_files_only") is True  # never download
    raise OSError("not in the cache\nmore lines of traceback-like text")


def test_size_mismatch_is_a_one_line_error(tmp_path: Path) -> None:
    build_unet(16, block_out_channels=(8, 16)).save_pretrained(str(tmp_path / "p"))
    with pytest.raises(ConfigError) as err:
        load_prior(tmp_path / "p", expected_size=32)
    text = one_line(err)
    assert "prior.source" in text and "dataset.image_size" in text
    with pytest.raises(ConfigError) as err:
        load_prior(tmp_path / "p", expected_size=16, expected_channels=1)
    assert "prior.source" in one_line(err)


def test_presets_resolve_to_repo_ids() -> None:
    for name in (
        "google/ddpm-celebahq-256",
        "google/ddpm-ema-celebahq-256",
        "google/ddpm-cifar10-32",
    ):
        assert resolve_source(name) == (name, None)
    assert resolve_source("ddpm_ema_celebahq_256") == ("google/ddpm-ema-celebahq-256", None)
    assert resolve_source("embedded") == ("embedded", prior.EMBEDDED_DIR)
    with pytest.raises(ConfigError) as err:
        resolve_source("no-such-prior")
    assert one_line(err).startswith("prior.source:")


def test_embedded_wins_over_a_folder_of_that_name_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "embedded").mkdir()  # e.g. a run folder called "embedded"
    monkeypatch.chdir(tmp_path)
    assert resolve_source("embedded") == ("embedded", prior.EMBEDDED_DIR)
    assert resolve_source("./embedded") == ("embedded", Path("embedded"))


def test_checkpoint_carries_the_ema_state() -> None:
    module = tiny_module()
    train_steps(module, fixed_batch(), 2)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    restored = tiny_module()
    restored.on_load_checkpoint(checkpoint)
    assert restored.ema.optimization_step == 2
    for a, b in zip(restored.ema.shadow_params, module.ema.shadow_params, strict=True):
        assert torch.equal(a, b)


def reference_ddim(
    model: UNet2DModel, n: int, steps: int, eta: float, seed: int, clip: bool
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) written out: linear β 1e-4..0.02 over T = 1000 steps,
    S steps at t_k = k·⌊T/S⌋ (k = S−1 … 0), ᾱ = 1 after the last one;
    x̂0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t (clipped to [−1, 1] when ``clip``),
    σ = η √((1−ᾱ_t')/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_t'),
    x_t' = √ᾱ_t' x̂0 + √(1−ᾱ_t'−σ²) ε + σ z.  x_T, then one z per step, from one seeded stream."""
    T = 1000
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float32), 0)
    g = torch.Generator().manual_seed(seed)
    size = model.config.sample_size
    x = torch.randn((n, 3, size, size), generator=g)
    ratio = T // steps
    for k in reversed(range(steps)):
        t, prev = k * ratio, (k - 1) * ratio
        a_t = alpha_bar[t]
        a_prev = alpha_bar[prev] if prev >= 0 else torch.tensor(1.0)
        with torch.no_grad():
            eps = model(x, t).sample
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        z = torch.randn(x.shape, generator=g) if eta > 0 else torch.zeros_like(x)
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps + sigma * z
    return x.clamp(-1, 1)


@pytest.mark.skipif(
    not (prior.EMBEDDED_DIR / "config.json").is_file(), reason="embedded prior not shipped"
)
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize(("steps", "eta"), [(3, 1.0), (5, 0.5), (4, 0.0)])
def test_sampling_is_ddim_with_the_ema_weights(steps: int, eta: float, clip: bool) -> None:
    # the shipped (trained) prior as EMA weights: its samples stay mostly inside [-1, 1], so
    # the final clamp hides little; the raw weights are a perturbed copy (EMA ≠ raw)
    module = tiny_module()
    module.unet = load_prior("embedded", expected_size=32).requires_grad_(True)
    module.ema = EMAModel(module.unet.parameters(), decay=0.999)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.unet.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
    module.noise_scheduler.register_to_config(clip_sample=clip)
    samples = module.sample(2, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 32, 32)
    assert samples.abs().max() <= 1.0
    ema = load_prior("embedded", expected_size=32)
    expected = reference_ddim(ema, 2, steps, eta, seed=0, clip=clip)
    assert (expected.abs() < 0.999).float().mean() > 0.5  # not a comparison of saturated values
    torch.testing.assert_close(samples, expected, atol=1e-4, rtol=1e-4)
    raw = reference_ddim(module.unet.eval(), 2, steps, eta, seed=0, clip=clip)
    assert (raw - expected).abs().max() > 1e-2  # the EMA weights make a visible difference


@pytest.mark.skipif(
    not (prior.EMBEDDED_DIR / "config.json").is_file(), reason="embedded prior not shipped"
)
def test_embedded_prior_loads() -> None:
    unet = load_prior("embedded", expected_size=32)
    assert unet.config.sample_size == 32
    assert not any(p.requires_grad for p in unet.parameters())
    with torch.no_grad():
        out = unet(torch.zeros(1, 3, 32, 32), 500).sample
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match=r"dataset\.image_size"):
        load_prior("embedded", expected_size=64)


def test_train_prior_exports_and_resumes(tmp_path: Path) -> None:
    from singexp.data.shapes import ShapesDataModule

    cfg = {
        "image_size": 16,
        "block_out_channels": [8, 16],
        "lr": 1e-3,
        "ema_decay": 0.99,
        "batch_size": 4,
        "max_steps": 2,
        "checkpoint_every": 1,
        "val_every": 2,
        "val_batches": 1,
        "grid_size": 2,
        "grid_steps": 2,
    }
    trainer_kwargs = {
        "_target_": "lightning.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }

    def datamodule() -> ShapesDataModule:
        return ShapesDataModule(image_size=16, batch_size=2, train_size=16, val_size=4, test_size=4)

    out = train_prior(cfg, datamodule(), trainer_kwargs, tmp_path)
    assert out == tmp_path / "prior"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "samples").glob("*.png"))
    assert load_prior(out, expected_size=16).config.sample_size == 16
    # the data it was trained on, recorded for the mismatch warning
    from singexp.models.prior import prior_trained_on

    assert prior_trained_on(out) == "shapes"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ema"]["optimization_step"] == 2
    resumed = train_prior({**cfg, "max_steps": 3}, datamodule(), trainer_kwargs, tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["ema"]["optimization_step"] == 3
    assert resumed == out
    # resuming a run whose checkpoints were moved (or copied) keeps writing last.ckpt
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "checkpoints", moved / "checkpoints")
    train_prior({**cfg, "max_steps": 4}, datamodule(), trainer_kwargs, moved)
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    assert not list((moved / "checkpoints").glob("last-v*.ckpt"))
    with pytest.raises(ConfigError, match=r"prior\.image_size"):
        train_prior({**cfg, "image_size": 32}, datamodule(), trainer_kwargs, tmp_path / "x")


def test_min_snr_weights_follow_hang_et_al() -> None:
    # Min-SNR-γ for ε-prediction (Hang et al. 2023): w_t = min(SNR_t, γ) / SNR_t,
    # SNR_t = ᾱ_t / (1 − ᾱ_t); uniform weighting is L_simple (w = 1)
    from singexp.modules.prior import loss_weights

    alpha_bar = torch.tensor([0.999, 0.9, 5 / 6, 0.5, 0.01])
    gamma = 5.0
    expected = []
    for a in alpha_bar.tolist():
        snr = a / (1 - a)
        expected.append(min(snr, gamma) / snr)
    got = loss_weights(alpha_bar, "min_snr", gamma)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    assert got[0] < 0.01 and got[-1] == pytest.approx(1.0)  # easy steps down-weighted
    assert torch.equal(loss_weights(alpha_bar, "uniform"), torch.ones(5))


def test_min_snr_loss_is_the_weighted_mse() -> None:
    module = tiny_module(loss_weighting="min_snr", min_snr_gamma=5.0)
    x0 = fixed_batch(32)
    weighted = module.diffusion_loss(x0, torch.Generator().manual_seed(3))
    # the same draws by hand: noise, then t, from the same seeded generator
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, module.noise_scheduler.config.num_train_timesteps, (32,), generator=g)
    a = module.noise_scheduler.alphas_cumprod[t]
    x_t = a.sqrt().view(-1, 1, 1, 1) * x0 + (1 - a).sqrt().view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        per_image = ((module.unet(x_t, t).sample - noise) ** 2).mean(dim=(1, 2, 3))
    snr = a / (1 - a)
    expected = (torch.clamp(snr, max=5.0) / snr * per_image).mean()
    assert float(weighted) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) != pytest.approx(float(per_image.mean()), rel=1e-3)


def test_unknown_loss_weighting_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"prior\.loss_weighting") as err:
        tiny_module(loss_weighting="snr")
    one_line(err)


def test_loss_at_given_steps_uses_those_steps() -> None:
    # diffusion_loss(t=...) (used by the mid-step fine-tune of docs/research/prior_samples): the
    # ε-MSE of x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε at exactly the given t, the noise from the generator
    module = tiny_module()
    x0 = fixed_batch(8)
    t = torch.tensor([0, 50, 100, 200, 400, 600, 800, 999])
    got = module.diffusion_loss(x0, torch.Generator().manual_seed(5), t=t)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    a = module.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.no_grad():
        expected = ((module.unet(x_t, t).sample - noise) ** 2).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    other = module.diffusion_loss(x0, torch.Generator().manual_seed(5), t=t.flip(0))
    assert float(other) != pytest.approx(float(expected), rel=1e-3)
