"""SING-INN's network, pairs, training module, checkpoints and export (paper: SING-INN)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from conftest import randomize
from singexp.config import CONF_DIR, validate
from singexp.data.pairs import PairMaker, make_pairs
from singexp.data.shapes import ShapesDataModule
from singexp.errors import ConfigError
from singexp.models.inn import (
    EMBEDDED_INN_DIR,
    INNConfig,
    check_inn_checkpoint,
    embedded_inn,
    export_inn,
    inn_config,
    load_inn,
    read_inn_hparams,
    read_inn_metadata,
    resolve_inn_checkpoint,
    train_inn,
)
from singexp.models.jscc import codec_fingerprint, export_codec, jscc_identity
from singexp.modules.inn import INNModule, inn_hparams
from singexp.modules.jscc import DeepJSCCModule
from singexp.nn.inn import ConditionalINN, INNArchitecture, haar_down, haar_up, pairs_per_level
from singexp.operators import AveragePool

TINY = {"pairs": 2, "cond_blocks": 2, "width": 8, "emb_dim": 16}


def codec(bcr: str = "1/192", seed: int = 0) -> DeepJSCCModule:
    torch.manual_seed(seed)
    return DeepJSCCModule(
        bcr=bcr, image_size=16, latent_channels=8, width=8, metrics={"lpips": False}
    )


# ---- the network -----------------------------------------------------------------------------
def test_haar_is_orthonormal_and_invertible() -> None:
    x = torch.randn(2, 3, 8, 8)
    y = haar_down(x)
    assert y.shape == (2, 12, 4, 4)
    torch.testing.assert_close(y.norm(), x.norm())
    torch.testing.assert_close(haar_up(y), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(y[:, :3], 2 * AveragePool(2).A(x), rtol=0, atol=1e-6)


def test_pairs_spread_over_levels() -> None:
    assert pairs_per_level(4, 2) == [2, 2]
    assert pairs_per_level(1, 2) == [0, 1]
    assert pairs_per_level(3, 2) == [1, 2]
    assert pairs_per_level(4, 3) == [1, 1, 2]


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_forward_then_inverse_reconstructs(scale: int) -> None:
    torch.manual_seed(scale)
    net = randomize(ConditionalINN(scale=scale, **TINY), seed=scale)
    x = torch.randn(3, 3, 16, 16)
    snr = torch.rand(3) * 10 - 5
    c, d = net(x, snr)
    assert c.shape == (3, 3, 16 // scale, 16 // scale)
    assert d.shape == (3, 3 * (scale**2 - 1), 16 // scale, 16 // scale)
    # the couplings really act: c is not the plain low-pass any more
    assert (c - AveragePool(scale).A(x)).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(net.inverse(c, d, snr), x, rtol=0, atol=1e-5)


def test_snr_changes_the_output() -> None:
    net = randomize(ConditionalINN(scale=4, **TINY))
    x = torch.randn(2, 3, 16, 16)
    c1, d1 = net(x, torch.full((2,), -5.0))
    c2, d2 = net(x, torch.full((2,), 5.0))
    assert (c1 - c2).abs().max() > 1e-3 and (d1 - d2).abs().max() > 1e-3
    # per-image SNRs: each image gets its own conditioning
    c3, _ = net(x, torch.tensor([-5.0, 5.0]))
    torch.testing.assert_close(c3[0], c1[0])
    torch.testing.assert_close(c3[1], c2[1])


def test_fresh_inn_is_the_haar_split() -> None:
    """The sub-networks' last convolutions are zero-initialised: couplings start as identity."""
    net = ConditionalINN(scale=4, **TINY)
    x = torch.randn(2, 3, 16, 16)
    c, d = net(x, torch.tensor([-3.0, 4.0]))
    torch.testing.assert_close(c, AveragePool(4).A(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(c, net.coarse(x), rtol=0, atol=1e-6)
    c0, d0 = net.split(x)
    torch.testing.assert_close(c, c0, rtol=0, atol=0)
    torch.testing.assert_close(d, d0, rtol=0, atol=0)


def test_bad_shapes_and_arguments() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ConditionalINN(scale=3)
    net = ConditionalINN(scale=4, **TINY)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 3, 10, 12), 0.0)


# ---- pairs -----------------------------------------------------------------------------------
def test_pairs_are_reproducible_and_in_range() -> None:
    m = codec()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a = make_pairs(m, x, (-5.0, 5.0), torch.Generator().manual_seed(1))
    b = make_pairs(m, x, (-5.0, 5.0), torch.Generator().manual_seed(1))
    assert a.x_hat.shape == x.shape and a.snr_db.shape == (4,)
    assert ((a.snr_db >= -5) & (a.snr_db <= 5)).all() and a.snr_db.unique().numel() == 4
    torch.testing.assert_close(a.x_hat, b.x_hat, rtol=0, atol=0)
    assert not a.x_hat.requires_grad and not any(p.requires_grad for p in m.parameters())
    fixed = PairMaker(m, (-5.0, 5.0)).at(x, 2.0)
    assert (fixed.snr_db == 2.0).all()


# ---- training --------------------------------------------------------------------------------
def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    m = codec()
    module = INNModule(codec=m, jscc=jscc_identity(m), scale=4, **TINY, lr=3e-3)
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4) * 2 - 1, size=16, mode="bilinear")
    pairs = make_pairs(m, x, (-5.0, 5.0), torch.Generator().manual_seed(0))
    opt = module.configure_optimizers()
    first = module.losses(*pairs)
    assert set(first) == {"loss", "loss_c", "loss_x", "loss_d"}
    for _ in range(25):
        opt.zero_grad()
        loss = module.losses(*pairs)["loss"]
        loss.backward()
        opt.step()
    last = module.losses(*pairs)
    assert last["loss"] < 0.7 * first["loss"]
    assert last["loss_c"] < first["loss_c"]


def test_hparams_record_the_deepjscc() -> None:
    m = codec()
    module = INNModule(codec=m, jscc=jscc_identity(m), scale=4, **TINY, train_snr=(-4, 6))
    jscc = module.hparams["jscc"]
    assert jscc["bcr"] == "1/192" and jscc["image_size"] == 16 and jscc["channel"] == "awgn"
    assert jscc["fingerprint"] == codec_fingerprint(m)
    assert tuple(module.hparams["train_snr"]) == (-4.0, 6.0)
    assert module.val_snrs() == [-4.0, 1.0, 6.0]


class StepCounter(L.Callback):
    steps = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.steps += 1


def test_train_inn_exports_and_resumes(tmp_path: Path) -> None:
    path = export_codec(codec(), tmp_path / "jscc.safetensors")
    data = ShapesDataModule(image_size=16, batch_size=4, train_size=8, val_size=4, test_size=4)
    kwargs = {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    cfg = {**TINY, "scale": 4, "val_snr_db": [0.0, 5.0]}
    out = train_inn(cfg, datamodule=data, codec=path, trainer_kwargs=kwargs, out_dir=tmp_path)
    assert out == tmp_path / "inn.safetensors" and (tmp_path / "checkpoints/last.ckpt").is_file()
    meta = read_inn_metadata(out)
    assert meta["hparams"]["jscc"]["checkpoint"] == str(path)
    assert set(meta["metrics"]) >= {"psnr", "psnr_c_snr0", "psnr_c_snr5", "psnr_x_snr0"}
    check_inn_checkpoint(out, jscc_identity(path))  # the INN matches its own codec
    # resumable: a second call continues from last.ckpt, running only the one more epoch
    counter = StepCounter()
    train_inn(
        cfg,
        datamodule=data,
        codec=path,
        trainer_kwargs={**kwargs, "max_epochs": 2, "callbacks": [counter]},
        out_dir=tmp_path,
    )
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4 and counter.steps == 2


# ---- checkpoints -----------------------------------------------------------------------------
def _ckpt(module: INNModule, path: Path) -> Path:
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_another_bcr_or_deepjscc_is_one_line(tmp_path: Path, suffix: str) -> None:
    trained_on = codec("1/192", seed=0)
    module = INNModule(codec=trained_on, jscc=jscc_identity(trained_on), scale=4, **TINY)
    path = tmp_path / f"inn{suffix}"
    _ = _ckpt(module, path) if suffix == ".ckpt" else export_inn(module, path)

    check_inn_checkpoint(path, jscc_identity(trained_on))
    with pytest.raises(ConfigError) as info:
        check_inn_checkpoint(path, jscc_identity(codec("1/384")))
    message = str(info.value)
    assert "\n" not in message and message.startswith("inn.checkpoint: ")
    assert "bcr=1/192" in message and "bcr.ratio=1/384" in message

    with pytest.raises(ConfigError) as info:
        check_inn_checkpoint(path, jscc_identity(codec("1/192", seed=1)))
    message = str(info.value)
    assert "\n" not in message and message.startswith("inn.checkpoint: ")
    assert "another DeepJSCC" in message

    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: .*image_size=16"):
        check_inn_checkpoint(path, {"image_size": 32})


def test_not_an_inn_checkpoint(tmp_path: Path) -> None:
    jscc = export_codec(codec(), tmp_path / "jscc.safetensors")
    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: .*not a singexp INN"):
        load_inn(jscc)
    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: no such file"):
        check_inn_checkpoint(tmp_path / "missing.safetensors", {})
    assert resolve_inn_checkpoint(None, "1/192", 32) is None
    with pytest.raises(ConfigError, match=r"^inn\.checkpoint: no such file"):
        resolve_inn_checkpoint(tmp_path / "nope.ckpt", "1/192", 32)


def test_export_load_round_trip(tmp_path: Path) -> None:
    m = codec()
    module = INNModule(codec=m, jscc=jscc_identity(m), scale=4, **TINY, train_snr=(-2, 3))
    randomize(module.inn)
    x, snr = torch.randn(2, 3, 16, 16), torch.tensor([-1.0, 2.0])
    c, d = module(x, snr)
    for dtype, tol in ((torch.float32, 0.0), (torch.float16, 5e-2)):
        loaded = load_inn(export_inn(module, tmp_path / f"inn_{dtype}.safetensors", dtype))
        assert loaded.hparams["jscc"] == module.hparams["jscc"]
        assert tuple(loaded.hparams["train_snr"]) == (-2.0, 3.0)
        c2, d2 = loaded(x, snr)
        torch.testing.assert_close(c2, c, rtol=0, atol=tol)
        torch.testing.assert_close(d2, d, rtol=0, atol=tol)
        with torch.no_grad():  # the loaded network is still exactly invertible
            torch.testing.assert_close(loaded.inn.inverse(c2, d2, snr), x, rtol=0, atol=1e-5)
    loaded = load_inn(_ckpt(module, tmp_path / "inn.ckpt"))
    torch.testing.assert_close(loaded(x, snr)[0], c, rtol=0, atol=0)


# ---- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "scale"),
    [(("bcr=1_768",), 16), (("bcr=1_384",), 8), (("bcr=1_192",), 8), (("operator.scale=4",), 4)],
)
def test_inn_scale_follows_sing_zeros_operator(make_cfg: Any, overrides: tuple, scale: int) -> None:
    """SING-INN measures with SING-Zero's A: inn.scale defaults to the resolved operator.scale."""
    cfg = make_cfg("+experiment=train_inn", *overrides)
    assert inn_config(cfg.inn).scale == scale
    assert inn_config(OmegaConf.to_container(cfg.inn, resolve=True)).scale == scale


def test_config_file_is_the_schema_and_errors_name_the_key() -> None:
    """conf/inn/default.yaml has exactly INNConfig's keys, with its defaults (one source: the
    network's keys and defaults are INNArchitecture's); bad values name their inn.* key."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "inn" / "default.yaml"))
    assert "operator.scale" in cfg["scale"]  # an interpolation (test above); a number here
    cfg["scale"] = INNConfig.scale
    assert [f.name for f in dataclasses.fields(INNConfig)] == list(cfg)
    c = inn_config(cfg)
    assert c == INNConfig()
    assert c.train_snr_range == (-5.0, 5.0) and c.checkpoint is None
    assert [f.name for f in dataclasses.fields(INNArchitecture)] == [
        "scale", "pairs", "cond_blocks", "width", "emb_dim", "clamp"
    ]  # fmt: skip
    module = INNModule(c)  # every architecture/loss key reaches the module and its network
    assert module.inn.arch == INNArchitecture.of(c) and module.config == inn_hparams(c)
    for bad, key in (
        ({"scale": 6}, "inn.scale"),
        ({"pairs": "x"}, "inn.pairs"),
        ({"pairs": -1}, "inn.pairs"),
        ({"clamp": 0}, "inn.clamp"),
        ({"lambda_d": -1}, "inn.lambda_d"),
        ({"lr": 0}, "inn.lr"),
        ({"train_snr_range": [5, -5]}, "inn.train_snr_range"),
        ({"train_snr_range": [1, 2, 3]}, "inn.train_snr_range"),
        ({"val_snr_db": []}, "inn.val_snr_db"),
        ({"val_snr_db": ["a"]}, "inn.val_snr_db[0]"),
        ({"export_dtype": "int8"}, "inn.export_dtype"),
        ({"resume": "yes"}, "inn.resume"),
        ({"widht": 3}, "inn.widht"),
    ):
        with pytest.raises(ConfigError, match=f"^{re.escape(key)}: "):
            inn_config({**cfg, **bad})


def test_module_takes_a_config_or_recorded_keys() -> None:
    """INNModule(config) and INNModule(**recorded) build the same network and record the same
    hyper-parameters; an architecture key that is no key is an error."""
    config = INNConfig(scale=8, width=8, emb_dim=16, train_snr_range=(-2.0, 3.0), lr=3e-3)
    torch.manual_seed(0)
    a = INNModule(config)
    torch.manual_seed(0)
    b = INNModule(scale=8, width=8, emb_dim=16, train_snr=[-2, 3], lr=3e-3)
    assert a.config == b.config and dict(a.hparams) == dict(b.hparams)
    assert a.hparams["train_snr"] == (-2.0, 3.0) and "train_snr_range" not in a.hparams
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert ConditionalINN(config).arch == ConditionalINN(scale=8, width=8, emb_dim=16).arch
    with pytest.raises(TypeError, match="widht"):
        ConditionalINN(widht=3)
    with pytest.raises(ConfigError, match=r"^inn\.widht: unknown key"):
        INNModule(widht=3)


@pytest.mark.parametrize(
    "path", sorted(EMBEDDED_INN_DIR.glob("*.safetensors")), ids=lambda p: p.stem
)
def test_shipped_inns_load_with_their_recorded_hparams(path: Path) -> None:
    """The shipped INNs' metadata (written by the earlier flat-keyword INNModule) still builds the
    module: same hyper-parameters, every weight loaded, an exactly invertible network."""
    recorded = read_inn_hparams(path)
    module = load_inn(path)
    assert {k: v for k, v in module.hparams.items() if k in recorded} == {
        k: tuple(v) if k == "train_snr" else v for k, v in recorded.items()
    }
    assert module.inn.scale == recorded["scale"] and module.config.recorded() == {
        k: module.hparams[k] for k in module.config.recorded()
    }
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        c, d = module(x, torch.tensor([-5.0, 5.0]))
        assert c.shape == (2, 3, 32 // recorded["scale"], 32 // recorded["scale"])
        x_back = module.inn.inverse(c, d, torch.tensor([-5.0, 5.0]))
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "path", sorted(EMBEDDED_INN_DIR.glob("*.safetensors")), ids=lambda p: p.stem
)
def test_shipped_inn_file_names_say_their_architecture(path: Path) -> None:
    # inn.checkpoint=embedded picks the file by its recorded architecture; the name's suffix
    # (none for the default network, _w16p2 for inn=light) must still say what the file holds
    recorded = read_inn_hparams(path)
    default = INNArchitecture()
    width, pairs = recorded.get("width", default.width), recorded.get("pairs", default.pairs)
    bcr = re.fullmatch(r"inn_(\d+)_(\d+)(_w\d+p\d+)?", path.stem)
    assert bcr is not None, path.name
    suffix = "" if (width, pairs) == (default.width, default.pairs) else f"_w{width}p{pairs}"
    assert (bcr.group(3) or "") == suffix


def test_inn_light_selects_the_light_embedded_network(make_cfg: Any) -> None:
    # `+experiment=sing_inn inn=light`: the same inn.checkpoint=embedded, the light file, whether
    # the inn group comes as the composed DictConfig or as the validated run's plain dict (what
    # a run passes: RunConfig.inn; reading it by attribute saw the defaults, the light INN's bug)
    default = make_cfg("+experiment=sing_inn")
    light = make_cfg("+experiment=sing_inn", "inn=light")
    assert (light.inn.width, light.inn.pairs) == (16, 2)
    assert str(light.inn.checkpoint) == "embedded" == str(default.inn.checkpoint)
    light_file = EMBEDDED_INN_DIR / "inn_1_48_w16p2.safetensors"
    default_file = EMBEDDED_INN_DIR / "inn_1_48.safetensors"
    run = validate(light)
    plain, typed = run.plain["inn"], run.inn  # the resolved dict and the typed INNConfig
    assert isinstance(plain, dict) and not isinstance(plain, DictConfig) and typed is not None
    both = (light.inn, plain, typed, {"width": 16, "pairs": 2}, INNArchitecture(width=16, pairs=2))
    for arch in both:
        assert resolve_inn_checkpoint("embedded", "1/48", 32, arch) == light_file, arch
    assert read_inn_hparams(light_file)["width"] == 16
    for arch in (default.inn, validate(default).inn, {}, None, INNArchitecture()):
        assert resolve_inn_checkpoint("embedded", "1/48", 32, arch) == default_file, arch
    # every shipped file is found by its own recorded architecture
    for path in sorted(EMBEDDED_INN_DIR.glob("*.safetensors")):
        bcr = re.fullmatch(r"inn_(\d+)_(\d+)(_w\d+p\d+)?", path.stem)
        assert bcr is not None
        ratio = f"{bcr.group(1)}/{bcr.group(2)}"
        assert embedded_inn(ratio, 32, read_inn_hparams(path)) == path


@pytest.mark.parametrize(
    ("arch", "bcr", "key"),
    [
        ({"width": 8, "pairs": 1}, "1/48", "width"),
        ({"width": 16, "pairs": 2}, "1/192", "width"),  # inn=light where none is shipped
        ({"pairs": 3}, "1/48", "pairs"),
        ({"cond_blocks": 3}, "1/48", "cond_blocks"),
        ({"width": 16, "pairs": 2, "emb_dim": 32}, "1/96", "emb_dim"),
        ({"scale": 2}, "1/48", "scale"),  # e.g. operator.scale=2, which inn.scale follows
        ({"clamp": 1.5}, "1/24", "clamp"),
    ],
)
def test_embedded_inn_of_an_architecture_not_shipped_is_one_line_error(
    arch: dict[str, Any], bcr: str, key: str
) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_inn_checkpoint("embedded", bcr, 32, arch)
    message = str(error.value)
    assert message.startswith(f"inn.{key}: is {arch[key]}") and "\n" not in message
    assert f"no embedded INN for bcr {bcr} has it (shipped: {key} " in message
    assert "inn.checkpoint=PATH" in message  # the fix: another architecture or one's own INN


def test_given_inn_file_of_another_architecture_is_one_line_error(make_cfg: Any) -> None:
    # the network is built from the file: a config naming other keys would record what did not run
    light_file = EMBEDDED_INN_DIR / "inn_1_48_w16p2.safetensors"
    light = validate(make_cfg("+experiment=sing_inn", "inn=light")).inn
    assert resolve_inn_checkpoint(str(light_file), "1/48", 32, light) == light_file
    default = validate(make_cfg("+experiment=sing_inn")).inn
    with pytest.raises(ConfigError) as error:
        resolve_inn_checkpoint(str(light_file), "1/48", 32, default)
    assert str(error.value) == (
        "inn.width: is 32 but inn_1_48_w16p2.safetensors was built with width=16; set "
        "inn.width=16 to use this file (the network is built from it) or use an INN trained "
        "with inn.width=32"
    )
    with pytest.raises(ConfigError, match=r"^inn\.cond_blocks: is 3 but inn_1_48_w16p2"):
        resolve_inn_checkpoint(
            str(light_file), "1/48", 32, dataclasses.replace(light, cond_blocks=3)
        )
