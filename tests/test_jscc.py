from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from singexp.channel import power_normalize, to_complex, to_real
from singexp.config import embedded_codec
from singexp.data.shapes import render_shapes
from singexp.errors import ConfigError
from singexp.models.jscc import check_checkpoint, checkpoint_identity, export_codec, load_codec
from singexp.modules.jscc import DeepJSCCModule
from singexp.nn.gdn import GDN


def _module(**kw: object) -> DeepJSCCModule:
    args = dict(bcr="1/192", image_size=32, latent_channels=8, width=16, metrics={"lpips": False})
    args.update(kw)
    return DeepJSCCModule(**args)


def test_codec_shapes_and_range() -> None:
    m = _module()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = m(x, 0.0)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    z = m.codec.encode(x, torch.zeros(3))
    assert z.shape == (3, 16) and z.is_complex()  # k = 16 symbols at 1/192, 32 px
    torch.testing.assert_close((z.abs() ** 2).mean(dim=1), torch.ones(3), rtol=1e-5, atol=1e-5)


def test_snr_attention_makes_the_codec_snr_dependent() -> None:
    torch.manual_seed(0)
    m = _module()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = m.codec.encoder(x, torch.full((2,), -5.0))
    b = m.codec.encoder(x, torch.full((2,), 5.0))
    assert not torch.allclose(a, b)
    fixed = _module(snr_adaptive=False)
    torch.testing.assert_close(
        fixed.codec.encoder(x, torch.full((2,), -5.0)),
        fixed.codec.encoder(x, torch.full((2,), 5.0)),
    )


def test_gdn_inverse_and_positivity() -> None:
    x = torch.randn(2, 4, 5, 5)
    gdn, igdn = GDN(4), GDN(4, inverse=True)
    # with the initial (diagonal γ) parameters IGDN(GDN(x)) ≈ x is not exact, but both keep signs
    assert torch.equal(torch.sign(gdn(x)), torch.sign(x))
    assert torch.equal(torch.sign(igdn(x)), torch.sign(x))
    assert gdn(x).abs().max() < x.abs().max() + 1e-6


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    m = _module(test_snr_db=20.0, train_snr=(20.0, 20.0))
    # smooth images (4×4 colour fields upsampled): structure the codec can learn quickly
    x = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")
    opt = m.configure_optimizers()
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = m.training_step(x, 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_checkpoint_identity_mismatch_is_one_line(tmp_path: Path) -> None:
    m = _module()
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0
    )
    trainer.strategy.connect(m)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    assert checkpoint_identity(path)["bcr"] == "1/192"
    check_checkpoint(path, {"bcr": "1/192", "image_size": 32, "channel": "awgn", "downsample": 16})
    with pytest.raises(ConfigError) as info:
        check_checkpoint(path, {"bcr": "1/768", "image_size": 32})
    assert str(info.value).startswith("jscc.checkpoint:") and "bcr.ratio=1/192" in str(info.value)
    with pytest.raises(ConfigError, match=r"dataset\.image_size"):
        check_checkpoint(path, {"bcr": "1/192", "image_size": 64})
    with pytest.raises(ConfigError, match=r"channel\.name"):
        check_checkpoint(path, {"bcr": "1/192", "channel": "rayleigh"})


def test_export_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _module(train_snr=(-5.0, 5.0))
    path = export_codec(m, tmp_path / "codec.safetensors")
    loaded = load_codec(path, metrics={"lpips": False})
    assert loaded.hparams["bcr"] == "1/192" and tuple(loaded.hparams["train_snr"]) == (-5.0, 5.0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    snr = torch.zeros(2)
    with torch.no_grad():
        a = m.codec(x, snr, generator=torch.Generator().manual_seed(1))
        b = loaded.codec(x, snr, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # weights stored in float16
    assert checkpoint_identity(path)["bcr"] == "1/192"
    with pytest.raises(ConfigError, match=r"bcr\.ratio=1/192"):
        check_checkpoint(path, {"bcr": "1/384"})


# ---- the SNR reaches both networks (ADJSCC attention), on the shipped BCR 1/768 codec ----------
@pytest.fixture(scope="module")
def shipped_codec() -> DeepJSCCModule:
    return load_codec(embedded_codec(Fraction(1, 768), 32), metrics={"lpips": False}).eval()


def _shapes(n: int = 8, seed: int = 0) -> Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(render_shapes(rng, 32)) for _ in range(n)]) * 2 - 1


def _full(snr_db: float, n: int = 8) -> Tensor:
    return torch.full((n,), snr_db)


@torch.no_grad()
def test_decoder_output_depends_on_the_snr_it_is_told(shipped_codec: DeepJSCCModule) -> None:
    codec, x = shipped_codec.codec, _shapes()
    # ONE channel output (sent at -5 dB), decoded twice: only the decoder's SNR input changes
    z = codec.encoder(x, _full(-5.0))
    sent = power_normalize(to_complex(z))
    noise = torch.randn((2, *sent.shape), generator=torch.Generator().manual_seed(1))
    # AWGN at -5 dB, written here: CN(0, σ²) with σ² = 10^(5/10), σ²/2 per real component
    received = sent + (10 ** (5.0 / 10) / 2) ** 0.5 * torch.complex(noise[0], noise[1])
    y = to_real(received, z.shape)
    told_low, told_high = codec.decoder(y, _full(-5.0)), codec.decoder(y, _full(20.0))
    told_mid = codec.decoder(y, _full(5.0))
    # images live in [-1, 1]: a mean change of 0.05 is 2.5 % of the range (measured: 0.11-0.26)
    assert (told_low - told_mid).abs().mean() > 0.05
    assert (told_low - told_high).abs().mean() > 0.1
    # and it is used as trained: the true SNR (-5 dB) decodes better than a claimed 20 dB
    mse_true, mse_wrong = ((told_low - x) ** 2).mean(), ((told_high - x) ** 2).mean()
    assert mse_true < 0.9 * mse_wrong


@torch.no_grad()
def test_encoder_output_depends_on_the_snr(shipped_codec: DeepJSCCModule) -> None:
    codec, x = shipped_codec.codec, _shapes()
    low, high = codec.encode(x, _full(-5.0)), codec.encode(x, _full(5.0))
    # both are unit-power symbol vectors (|s|² averages 1): the SNR changes what is sent
    assert (low - high).abs().mean() > 0.1


@torch.no_grad()
def test_the_chain_hands_its_snr_to_every_snr_input(shipped_codec: DeepJSCCModule) -> None:
    """Encoder, channel, decoder and each attention module inside them see the image's SNR."""
    codec, x = shipped_codec.codec, _shapes(4)
    snr = torch.tensor([-5.0, 0.0, 3.0, 10.0])  # one per image
    seen: dict[str, Tensor] = {}

    def spy(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen[name] = kwargs["snr_db"] if "snr_db" in kwargs else args[1]

        return hook

    watched = {name: getattr(codec, name) for name in ("encoder", "channel", "decoder")}
    # ADJSCC: one attention module per stage, encoder and decoder alike
    watched.update(
        (name, m) for name, m in codec.named_modules() if type(m).__name__ == "SNRAttention"
    )
    assert sum(name.startswith("decoder.") for name in watched) >= 2
    assert sum(name.startswith("encoder.") for name in watched) >= 2
    handles = [m.register_forward_pre_hook(spy(n), with_kwargs=True) for n, m in watched.items()]
    try:
        codec(x, snr, generator=torch.Generator().manual_seed(0))
    finally:
        for handle in handles:
            handle.remove()
    assert set(seen) == set(watched)
    for name, value in seen.items():
        torch.testing.assert_close(value.reshape(-1).float(), snr, msg=f"{name} got another SNR")
