"""Tests of singexp.metrics: known values, monotonicity, offline loading, SWD properties."""

from __future__ import annotations

import itertools
import json
import logging
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from singexp import metrics as M
from singexp.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "metrics" / "default.yaml"
SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.4)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (a weight download) fails the test at once."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def metric_logs() -> Iterator[_Records]:
    """Records of the 'singexp.metrics' logger (robust to handlers set up elsewhere)."""
    handler = _Records()
    log = logging.getLogger("singexp.metrics")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private torch hub cache: torch.hub.get_dir() == tmp_path/hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    return tmp_path


def scenes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Non-flat test images in [-1, 1]: a colour gradient, a disk and a rectangle."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.linspace(0.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = []
    for _ in range(n):
        c0, c1, c2, c3 = torch.rand(4, 3, 1, 1, generator=gen) * 1.6 - 0.8
        img = c0 * (1 - xx) + c1 * xx + 0.5 * (c2 - c0) * yy
        cy, cx, r = torch.rand(3, generator=gen) * torch.tensor([0.6, 0.6, 0.15]) + 0.2
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        img = torch.where(disk, c2.expand_as(img), img)
        y0, x0 = (torch.rand(2, generator=gen) * 0.6).tolist()
        box = (yy > y0) & (yy < y0 + 0.3) & (xx > x0) & (xx < x0 + 0.25)
        img = torch.where(box, c3.expand_as(img), img)
        images.append(img)
    return torch.stack(images).clamp(-1, 1)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + sigma * z).clamp(-1, 1)


def blur(x: torch.Tensor, k: int = 4) -> torch.Tensor:
    """k×k box blur keeping the size."""
    pad = (k // 2, k - 1 - k // 2, k // 2, k - 1 - k // 2)
    return F.avg_pool2d(F.pad(x, pad, mode="replicate"), k, stride=1)


# --------------------------------------------------------------------------- PSNR / SSIM


@pytest.mark.parametrize("d", [0.1, 0.01, 0.05])
def test_psnr_constant_offset(d: float) -> None:
    gen = torch.Generator().manual_seed(0)
    target01 = torch.rand(3, 3, 16, 16, generator=gen) * 0.6 + 0.2  # room for +d
    target, pred = 2 * target01 - 1, 2 * (target01 + d) - 1
    value = M.psnr(pred, target)
    assert value.shape == (3,)
    torch.testing.assert_close(value, torch.full((3,), 20 * math.log10(1 / d)), atol=1e-3, rtol=0)


def test_psnr_identical_is_capped_and_per_image() -> None:
    x = scenes(2, 16)
    pred = x.clone()
    pred[1] = (pred[1] + 0.2).clamp(-1, 1)
    value = M.psnr(pred, x)
    assert value[0] == M.PSNR_MAX_DB  # identical: +inf capped at 100 dB
    assert math.isfinite(float(value[1])) and value[1] < 40


def test_psnr_clamps_out_of_range_predictions() -> None:
    x = -torch.ones(1, 3, 8, 8)
    assert M.psnr(x - 5.0, x) == M.PSNR_MAX_DB


def test_ssim_identical_one_and_decreasing_with_noise() -> None:
    x = scenes(3, 32)
    values = [M.ssim(noisy(x, s), x) for s in SIGMAS]
    torch.testing.assert_close(values[0], torch.ones(3), atol=1e-5, rtol=0)
    for hi, lo in itertools.pairwise(values):
        assert torch.all(lo < hi)


def test_ms_ssim_size_rule() -> None:
    assert M.MS_SSIM_MIN_SIZE == 176
    assert not M.ms_ssim_supported(32)
    assert not M.ms_ssim_supported(175)
    assert M.ms_ssim_supported(176)
    assert not M.ms_ssim_supported((256, 64))
    x = scenes(2, 32)
    assert M.ms_ssim(x, x) is None
    big = scenes(2, 176)
    torch.testing.assert_close(M.ms_ssim(big, big), torch.ones(2), atol=1e-5, rtol=0)
    worse = M.ms_ssim(noisy(big, 0.3), big)
    assert worse is not None and torch.all(worse < 0.99)


# --------------------------------------------------------------------------- ST-LPIPS


def test_stlpips_loads_offline_from_the_wheel() -> None:
    net = M.stlpips_net("cpu")
    assert net is not None and net is M.stlpips_net("cpu")  # cached once per process/device
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    shipped = torch.load(M._stlpips_weights_file(), map_location="cpu", weights_only=True)
    state = net.state_dict()
    for key, value in shipped.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    assert M.stlpips_status() == "ok"


def test_stlpips_zero_for_identical_and_monotone_in_noise() -> None:
    x = scenes(3, 64)
    values = [M.stlpips(noisy(x, s), x) for s in SIGMAS]
    assert all(v is not None and v.shape == (3,) for v in values)
    assert float(values[0].abs().max()) < 1e-6
    for lo, hi in itertools.pairwise(values):
        assert torch.all(hi > lo)


def test_stlpips_is_a_symmetric_per_image_distance() -> None:
    x, y = scenes(3, 64, seed=0), blur(scenes(3, 64, seed=2))
    d = M.stlpips(x, y)
    assert d is not None and (d > 0).all()
    # d(x, y) = d(y, x): ST-LPIPS compares the two images' normalised features symmetrically
    torch.testing.assert_close(M.stlpips(y, x), d, atol=1e-6, rtol=1e-5)
    # d(x, x) = 0 with a different partner in the batch, and each image's distance is its own
    torch.testing.assert_close(M.stlpips(x, x), torch.zeros(3), atol=1e-6, rtol=0)
    alone = torch.cat([M.stlpips(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(alone, d, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- LPIPS


def test_lpips_missing_returns_none_with_one_warning(
    torch_home: Path, metric_logs: _Records
) -> None:
    x = scenes(2, 32)
    assert M.lpips(x, noisy(x, 0.1)) is None
    metrics = M.ImageMetrics(stlpips=False)
    first = metrics.per_image(x, noisy(x, 0.1))
    second = metrics.per_image(x, noisy(x, 0.2))
    assert "lpips" not in first and "lpips" not in second
    warnings = [r for r in metric_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert (
        "alexnet-owt-7be5be79.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    )
    assert "missing" in message
    status = metrics.status()["lpips"]
    assert status.startswith("missing:") and "alexnet-owt-7be5be79.pth" in status
    summary = M.summarize([first, second])
    assert summary["lpips"] is None and summary["ms_ssim"] is None


def test_lpips_present_uses_the_local_backbone_file(
    torch_home: Path, metric_logs: _Records
) -> None:
    import torchvision

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = torchvision.models.alexnet(weights=None).state_dict()
    # the classifier (58M parameters) is left out to keep the file small; LPIPS never reads it
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    torch.save(features, checkpoints / "alexnet-owt-7be5be79.pth")
    assert M.lpips_backbone_file("alex") == checkpoints / "alexnet-owt-7be5be79.pth"
    assert M.lpips_status("alex") == "ok"

    x = scenes(2, 32)
    same = M.lpips(x, x)
    different = M.lpips(x, noisy(x, 0.3))
    assert same is not None and different is not None
    assert same.shape == (2,) and float(same.abs().max()) < 1e-6
    assert torch.all(torch.isfinite(different)) and torch.all(different > 0)

    net = M.lpips_net("alex", "cpu")
    assert net is not None and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(net.net.slice1[0].weight, features["features.0.weight"])
    torch.testing.assert_close(
        net.net.slice5.get_submodule("10").bias, features["features.10.bias"]
    )
    out = M.ImageMetrics(stlpips=False).per_image(x, noisy(x, 0.3))
    torch.testing.assert_close(out["lpips"], different)
    assert not [r for r in metric_logs.records if r.levelno >= logging.WARNING]


def test_lpips_vgg_file_name_and_bad_net() -> None:
    assert M.lpips_backbone_file("vgg").name == "vgg16-397923af.pth"
    with pytest.raises(ConfigError, match=r"metrics\.lpips_net"):
        M.lpips_backbone_file("resnet")


# --------------------------------------------------------------------------- perceptual size


def test_perceptual_size_rule() -> None:
    assert M.perceptual_input_hw(32, 32, 64) == (64, 64)
    assert M.perceptual_input_hw(32, 48, 64) == (64, 96)
    assert M.perceptual_input_hw(128, 128, 64) == (128, 128)
    x = scenes(1, 128)
    assert M.perceptual_resize(x, 64) is x


def test_perceptual_upsizing_for_32px_inputs() -> None:
    x = scenes(2, 32)
    y = noisy(x, 0.2)
    metrics = M.ImageMetrics(lpips=False)
    out = metrics.per_image(y, x)
    assert metrics.perceptual_hw == (64, 64)
    assert metrics.status()["perceptual_size"] == "64x64 (bilinear upsampling from 32x32)"
    up = {"size": (64, 64), "mode": "bilinear", "align_corners": False, "antialias": False}
    expected = M.stlpips(F.interpolate(y, **up), F.interpolate(x, **up))
    assert expected is not None
    torch.testing.assert_close(out["stlpips"], expected)
    native = M.ImageMetrics(lpips=False, perceptual_size=32)
    at32 = native.per_image(y, x)["stlpips"]
    assert native.status()["perceptual_size"] == "32x32 (native)"
    assert not torch.allclose(at32, out["stlpips"])


# --------------------------------------------------------------------------- SWD


def test_laplacian_pyramid_levels_and_reconstruction() -> None:
    x = scenes(2, 64)
    levels = M.laplacian_pyramid(x, min_size=16)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    kernel = M._binomial_kernel(3, x.device)
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):
        rebuilt = band + M._pyr_up(rebuilt, kernel, (band.shape[-2], band.shape[-1]))
    torch.testing.assert_close(rebuilt, x, atol=1e-5, rtol=0)
    assert len(M.laplacian_pyramid(scenes(1, 32))) == 2


def test_swd_properties() -> None:
    a = scenes(24, 64, seed=0)
    a2 = scenes(24, 64, seed=7)  # other scenes from the same distribution
    same = M.sliced_wasserstein(a, a)
    assert set(same) == {"swd_64", "swd_32", "swd_16", "swd"}
    assert all(abs(v) < 1e-6 for v in same.values())
    # few simple scenes: sampling differences live mostly in the low-pass residual (colours),
    # so degradations are compared with them in the finest band, where blur and noise show
    baseline = M.sliced_wasserstein(a2, a)["swd_64"]
    d_blur = M.sliced_wasserstein(blur(a), a)
    assert d_blur["swd_64"] > 1.5 * baseline > 0
    by_noise = [M.sliced_wasserstein(noisy(a, s), a)["swd"] for s in (0.02, 0.05, 0.2)]
    assert 0 < by_noise[0] < by_noise[1] < by_noise[2]
    assert by_noise[2] > d_blur["swd"]
    swapped = M.sliced_wasserstein(a, blur(a))
    for key, value in d_blur.items():
        assert swapped[key] == pytest.approx(value, rel=1e-4)
    assert M.sliced_wasserstein(blur(a), a) == d_blur  # deterministic with the seed
    other_seed = M.sliced_wasserstein(blur(a), a, seed=1)
    assert other_seed["swd"] != d_blur["swd"]
    assert other_seed["swd"] == pytest.approx(d_blur["swd"], rel=0.25)
    json.dumps(d_blur, allow_nan=False)


def _constant_images(values: list[float], size: int = 32) -> torch.Tensor:
    return torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, size, size).contiguous()


def test_swd_reference_value_of_two_sets_of_flat_images() -> None:
    # Grey flat images, 1×1 patches: every band-pass level is exactly 0 (dyadic values and the
    # binomial kernel are exact in float32), so only the low-pass residual counts. There each
    # descriptor is an image's value, normalised over its set: a = {-½, -½, ½, ½} → {-1, -1, 1, 1};
    # b = {-¾, -¼, ¼, ¾} → {-3, -1, 1, 3}/√5 (mean 0, std √5/4). In one dimension every random
    # unit direction is ±1, so the sliced distance is the 1-D Wasserstein-1 distance of the
    # sorted values, W1 = (2(3/√5 − 1) + 2(1 − 1/√5))/4 = 1/√5, reported ×1e3.
    a = _constant_images([-0.5, -0.5, 0.5, 0.5])
    b = _constant_images([-0.75, -0.25, 0.25, 0.75])
    kwargs = {"patch_size": 1, "patches_per_image": 8, "directions": 16, "repeats": 2}
    out = M.sliced_wasserstein(a, b, **kwargs)
    expected = 1e3 / math.sqrt(5)
    assert out["swd_32"] == 0.0
    assert out["swd_16"] == pytest.approx(expected, rel=1e-5)
    assert out["swd"] == pytest.approx(expected / 2, rel=1e-5)  # the mean over the 2 levels
    # symmetric; blind to a set-wide offset (each set is normalised); any seed gives the same
    assert M.sliced_wasserstein(b, a, **kwargs)["swd"] == pytest.approx(out["swd"], rel=1e-6)
    shifted = M.sliced_wasserstein(a, b + 0.125, seed=3, **kwargs)
    assert shifted["swd"] == pytest.approx(out["swd"], rel=1e-5)
    # a set against a rescaled copy of itself: the same normalised values, distance 0
    assert M.sliced_wasserstein(a, 0.5 * a, **kwargs)["swd"] == 0.0


def test_swd_unequal_sets_and_small_images() -> None:
    a, b = scenes(10, 32, seed=0), scenes(6, 32, seed=3)
    out = M.sliced_wasserstein(a, b, patches_per_image=16)
    assert set(out) == {"swd_32", "swd_16", "swd"} and all(math.isfinite(v) for v in out.values())
    assert out == M.sliced_wasserstein(a, b, patches_per_image=16)
    with pytest.raises(ValueError, match="at least 16"):
        M.sliced_wasserstein(scenes(2, 8), scenes(2, 8))
    metrics = M.ImageMetrics(stlpips=False, lpips=False)
    assert metrics.set_level(scenes(2, 8), scenes(2, 8)) == {}
    assert metrics.status()["swd"] == "skipped: image size 8 < 16"
    assert set(metrics.set_level([a[:5], a[5:]], [b])) == {"swd_32", "swd_16", "swd"}


# --------------------------------------------------------------------------- ImageMetrics


def test_config_builds_image_metrics() -> None:
    from hydra.utils import instantiate

    cfg = OmegaConf.load(CONF)
    assert cfg.perceptual_size == 64 and cfg.lpips_net == "alex"
    for key in ("stlpips", "lpips", "ms_ssim", "swd"):
        assert cfg[key] is True
    built = M.ImageMetrics.from_config(cfg)
    assert isinstance(instantiate(cfg), M.ImageMetrics)
    assert built.swd == M.SWDSettings()  # the swd_* keys default to SWD's own defaults
    with pytest.raises(ConfigError, match=r"metrics\.typo"):
        M.ImageMetrics.from_config({**OmegaConf.to_container(cfg), "typo": 1})
    with pytest.raises(ConfigError, match=r"metrics\.lpips_net"):
        M.ImageMetrics(lpips_net="squeezenet")
    with pytest.raises(ConfigError, match=r"metrics\.perceptual_size"):
        M.ImageMetrics(perceptual_size=8)
    # the group's keys and defaults are MetricsConfig's, checked by config.check_schema
    assert built.config == M.MetricsConfig() == M.ImageMetrics().config
    assert M.ImageMetrics(M.MetricsConfig(lpips=False), swd=False).enabled["swd"] is False
    for bad, key in (({"stlpips": "yes"}, "stlpips"), ({"swd_repeats": 1.5}, "swd_repeats")):
        with pytest.raises(ConfigError, match=rf"^metrics\.{key}: "):
            M.ImageMetrics(**bad)
    with pytest.raises(ConfigError, match=r"^metrics\.swd_patch_size: "):
        M.ImageMetrics(M.MetricsConfig(swd_patch_size=17))


def test_image_metrics_end_to_end(torch_home: Path) -> None:
    metrics = M.ImageMetrics().to("cpu")
    assert metrics.status()["ms_ssim"].startswith("pending")
    x = scenes(4, 32)
    batches = [metrics.per_image(noisy(x, s, seed=i), x) for i, s in enumerate((0.1, 0.2))]
    for out in batches:
        assert set(out) == {"psnr", "ssim", "stlpips"}
        assert all(v.shape == (4,) for v in out.values())
    status = metrics.status()
    assert status["ms_ssim"] == "skipped: image size 32 < 176"
    assert status["lpips"].startswith("missing:") and status["stlpips"] == "ok"
    summary = metrics.summarize(batches)
    assert list(summary)[:5] == list(M.PER_IMAGE_KEYS)
    assert summary["lpips"] is None and summary["ms_ssim"] is None
    expected = float(torch.cat([b["psnr"] for b in batches]).double().mean())
    assert summary["psnr"] == pytest.approx(expected)
    json.dumps(summary, allow_nan=False)
    swd = metrics.set_level(noisy(x, 0.2), x)
    assert set(swd) == {"swd_32", "swd_16", "swd"}


def test_summarize_drops_non_finite_and_accepts_mappings() -> None:
    out = M.summarize({"psnr": [torch.tensor([10.0, float("inf")]), 30.0], "ssim": []})
    assert out["psnr"] == pytest.approx(20.0)
    assert out["ssim"] is None and out["lpips"] is None
    json.dumps(out, allow_nan=False)


def test_swd_of_many_sets_equals_one_call_per_set() -> None:
    # the originals' pyramid, descriptors and sorted projections computed once for
    # every method must not change any value (to 1e-6)
    from singexp.metrics import sliced_wasserstein, sliced_wasserstein_many

    g = torch.Generator().manual_seed(0)
    target = torch.rand(12, 3, 32, 32, generator=g) * 2 - 1
    preds = {
        "noisy": (target + 0.2 * torch.randn(target.shape, generator=g)).clamp(-1, 1),
        "blurred": torch.nn.functional.avg_pool2d(target, 3, 1, 1),
        "other": torch.rand(12, 3, 32, 32, generator=g) * 2 - 1,
    }
    kwargs = {"seed": 3, "patches_per_image": 32, "directions": 16, "repeats": 2}
    many = sliced_wasserstein_many(preds, target, **kwargs)
    for name, pred in preds.items():
        one = sliced_wasserstein(pred, target, **kwargs)
        assert many[name].keys() == one.keys()
        for key, value in one.items():
            assert many[name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert len({round(m["swd"], 3) for m in many.values()}) == 3  # really different sets
    # a set of another size: the per-set fallback, same values
    smaller = {"half": preds["noisy"][:6]}
    assert sliced_wasserstein_many(smaller, target, **kwargs)["half"] == pytest.approx(
        sliced_wasserstein(preds["noisy"][:6], target, **kwargs)
    )


def _write_random_alexnet(torch_home: Path) -> None:
    import torchvision

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = torchvision.models.alexnet(weights=None).state_dict()
    torch.save(
        {k: v for k, v in state.items() if k.startswith("features.")},
        checkpoints / "alexnet-owt-7be5be79.pth",
    )


def test_perceptual_metrics_of_many_sets_equal_the_packages_per_pair(torch_home: Path) -> None:
    # the originals' ST-LPIPS / LPIPS features computed once and shared by every
    # method must not change any value (to 1e-6). The reference is each package's own
    # LPIPS.forward on the pair (M.stlpips / M.lpips), at the evaluation's perceptual size.
    _write_random_alexnet(torch_home)
    target = scenes(4, 32)
    preds = {
        "noisy": noisy(target, 0.2),
        "blurred": torch.nn.functional.avg_pool2d(target, 3, 1, 1),
        "other": scenes(4, 32, seed=5),
        "same": target.clone(),
    }
    metrics = M.ImageMetrics(lpips=True)
    many = metrics.per_image_many(preds, target)
    assert set(many) == set(preds)
    for name, pred in preds.items():
        for key, reference in (("stlpips", M.stlpips), ("lpips", M.lpips)):
            expected = reference(pred, target, perceptual_size=metrics.perceptual_size)
            assert expected is not None
            torch.testing.assert_close(many[name][key], expected, atol=1e-6, rtol=0)
        one = metrics.per_image(pred, target)  # the single-set path is the same computation
        assert one.keys() == many[name].keys()
        for key, value in one.items():
            torch.testing.assert_close(many[name][key], value, atol=1e-6, rtol=0)
    distances = [float(many[n]["stlpips"].mean()) for n in ("noisy", "blurred", "other")]
    assert min(distances) > 1e-3 and len({round(d, 4) for d in distances}) == 3
    assert float(many["same"]["stlpips"].abs().max()) < 1e-6


def test_swd_sorts_by_numpy_give_torchs_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU sort SWD uses (NumPy's, faster) equals torch.sort's values exactly, ties and
    all, and so does the SWD computed with either."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 7, generator=g)
    x[::5] = 0.25  # ties
    assert torch.equal(M._sorted_columns(x), torch.sort(x, dim=0).values)
    a = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    b = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    fast = M.sliced_wasserstein_many({"a": a, "b": b.flip(-1)}, b, min_size=16)
    monkeypatch.setattr(M, "_sorted_columns", lambda t: torch.sort(t, dim=0).values)
    assert M.sliced_wasserstein_many({"a": a, "b": b.flip(-1)}, b, min_size=16) == fast
