from pathlib import Path

import lightning as L
import pytest
import torch

from singexp.errors import ConfigError
from singexp.modules.jscc import (
    DeepJSCCModule,
    check_checkpoint,
    checkpoint_identity,
    export_codec,
    load_codec,
)
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
