"""The restoration evaluation: same received images for every method, files on disk."""

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from conftest import assert_grid_png
from singexp.metrics import ImageMetrics
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import RestorationModule, write_outputs

METRICS = {"lpips": False, "stlpips": False, "swd": True}


def _codec() -> DeepJSCCModule:
    torch.manual_seed(0)
    return DeepJSCCModule(bcr="1/192", image_size=32, latent_channels=8, width=8, metrics=METRICS)


def _images() -> torch.Tensor:
    return torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1


def _evaluate(restorers: dict, seed: int = 0, **kwargs) -> RestorationModule:  # type: ignore[type-arg]
    images = _images()
    module = RestorationModule(
        _codec(),
        restorers,
        snr_db=0.0,
        metrics=ImageMetrics.from_config(METRICS),
        seed=seed,
        grid_images=6,
        **kwargs,
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, DataLoader(images, batch_size=4))  # type: ignore[arg-type]
    return module


def test_every_method_sees_the_same_received_images(tmp_path: Path) -> None:
    seen: list[torch.Tensor] = []

    def record(x_hat: torch.Tensor, snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(x_hat.clone())
        return x_hat

    def blur(x_hat: torch.Tensor, snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(x_hat.clone())
        return torch.nn.functional.avg_pool2d(x_hat, 3, 1, 1)

    module = _evaluate({"copy": record, "blur": blur})
    # per batch, both restorers got the identical DeepJSCC output
    for a, b in zip(seen[0::2], seen[1::2], strict=True):
        torch.testing.assert_close(a, b)
    # a restorer returning x̂ scores exactly like DeepJSCC
    assert module.summary["copy"]["psnr"] == module.summary["deepjscc"]["psnr"]
    assert module.summary["blur"]["psnr"] != module.summary["deepjscc"]["psnr"]
    assert module.summary["deepjscc"]["images"] == 10
    assert "swd" in module.summary["blur"]

    files = write_outputs(module, tmp_path, "title")
    with open(files["per_image"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30  # 10 images × 3 methods
    assert sorted({int(r["image"]) for r in rows}) == list(range(10))
    assert {r["method"] for r in rows} == {"deepjscc", "copy", "blur"}
    grid = module.grid_rows()
    assert list(grid) == ["original", "deepjscc", "copy", "blur"]
    assert all(t.shape[0] == 6 for t in grid.values())
    # the PNG has 4 rows of 6 images and shows the originals and the blurred images as they are
    assert_grid_png(files["grid"], rows=4, cols=6, size=32, shows=grid["original"])
    assert_grid_png(files["grid"], rows=4, cols=6, size=32, shows=grid["blur"])


def test_channel_noise_is_reproducible_and_seeded() -> None:
    def received(seed: int) -> torch.Tensor:
        seen: list[torch.Tensor] = []

        def record(x_hat: torch.Tensor, snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            seen.append(x_hat.clone())
            return x_hat

        _evaluate({"copy": record}, seed=seed)
        return torch.cat(seen)

    a, b, c = received(1), received(1), received(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _psnr_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # PSNR on the [0, 1] scale of images in [-1, 1]: 10 log10(1 / MSE((a+1)/2, (b+1)/2))
    mse = (((a + 1) / 2 - (b + 1) / 2) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def _block_means(x: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // s, s, w // s, s).mean(dim=(3, 5))


def test_mean_image_row_and_consistency_columns() -> None:
    from singexp.operators import AveragePool

    received: list[torch.Tensor] = []

    def record(x_hat: torch.Tensor, snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        received.append(x_hat.clamp(-1, 1))
        return x_hat

    def keep_coarse(x_hat: torch.Tensor, snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # same 4×4 block means as x̂, different detail: perfectly consistent with what arrived
        noise = torch.randn(x_hat.shape, generator=torch.Generator().manual_seed(1)) * 0.02
        up = torch.repeat_interleave(torch.repeat_interleave(_block_means(noise, 4), 4, 2), 4, 3)
        return x_hat.clamp(-1, 1) + noise - up

    mean = torch.full((3, 32, 32), 0.1)
    module = _evaluate(
        {"copy": record, "coarse": keep_coarse}, mean_image=mean, operator=AveragePool(4)
    )
    assert module.methods == ["deepjscc", "copy", "coarse", "mean_image"]
    x = _images()
    x_hat = torch.cat(received)
    rows = {m: [r for r in module.rows if r["method"] == m] for m in module.methods}
    # the trivial baseline: the mean image scored against every test image
    expected = _psnr_db(mean.expand_as(x), x)
    got = torch.tensor([r["psnr"] for r in rows["mean_image"]])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert module.summary["mean_image"]["images"] == 10
    # PSNR(A x̃, A x): block means of 4×4, formula written here
    for name, images in (("copy", x_hat), ("mean_image", mean.expand_as(x))):
        want = _psnr_db(
            torch.repeat_interleave(torch.repeat_interleave(_block_means(images, 4), 4, 2), 4, 3),
            torch.repeat_interleave(torch.repeat_interleave(_block_means(x, 4), 4, 3), 4, 2),
        )
        torch.testing.assert_close(
            torch.tensor([r["psnr_A_x"] for r in rows[name]]), want, atol=1e-4, rtol=0
        )
    # PSNR(A x̃, A x̂): a restoration that keeps x̂'s block means is (numerically) exact;
    # DeepJSCC's own row has none (trivially infinite)
    assert min(r["psnr_A_xhat"] for r in rows["coarse"]) > 45
    assert max(r["psnr_A_xhat"] for r in rows["mean_image"]) < 40
    assert all("psnr_A_xhat" not in r for r in rows["deepjscc"])
    assert all("psnr_A_x" in r for r in rows["deepjscc"])


def test_models_trained_on_another_dataset_are_named(make_cfg: Callable[..., Any]) -> None:
    from singexp.config import validate
    from singexp.models.provenance import trained_elsewhere, trained_on

    cfg = validate(make_cfg("dataset.content=celebahq", "jscc.checkpoint=embedded"))
    torch.manual_seed(0)
    shapes_codec = DeepJSCCModule(
        bcr="1/192", image_size=32, latent_channels=8, width=8, dataset="shapes"
    )
    assert trained_on(shapes_codec, None) == {"jscc": "shapes"}  # metrics.json's trained_on
    (warning,) = trained_elsewhere(cfg, trained_on(shapes_codec, None))
    assert warning.startswith("jscc.checkpoint (embedded) was trained on 'shapes'")
    assert warning.endswith("(train on this data: jscc.checkpoint=auto)")
    assert "'celebahq'" in warning and "\n" not in warning
    # trained on the tested data, or of unknown origin (older files): nothing to say
    same = validate(make_cfg("dataset.content=shapes", "jscc.checkpoint=embedded"))
    assert trained_elsewhere(same, trained_on(shapes_codec, None)) == []
    assert trained_on(_codec(), None) == {"jscc": None}
    assert trained_elsewhere(cfg, trained_on(_codec(), None)) == []


def test_the_test_snr_reaches_every_restorer(
    make_cfg: Callable[..., Any], monkeypatch: Any
) -> None:
    """No silent SNR default on the sampling path: the restoration module hands each
    restorer the run's test SNR, and every restorer the builder makes passes it on to its
    sampler (SING-INN's INN and the baselines' DeepJSCC chain are conditioned on it)."""
    import singexp.samplers.registry as build
    from singexp.assembly import build_restoration
    from singexp.config import validate
    from singexp.data.base import indexed_data

    run = validate(make_cfg("+experiment=comparison", "quick=true", "channel.snr_db=-3"))
    assert set(run.methods) == {
        "sing_zero",
        "sing_inn",
        "dps_jscc",
        "inverse_jscc",
        "diffpir",
        "ddrm",
    }
    seen: dict[str, torch.Tensor] = {}

    def fake_restore(method: Any, x_hat: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        seen[method.name] = kwargs["snr_db"]
        return x_hat

    monkeypatch.setattr(build, "restore", fake_restore)
    data = indexed_data(run)
    parts = build_restoration(run, lambda: data)
    module = RestorationModule(
        parts.codec,
        parts.restorers,
        snr_db=run.channel.snr_db,
        metrics=ImageMetrics.from_config(METRICS),
        seed=0,
        grid_images=2,
    )
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer.test(module, DataLoader(images, batch_size=3))  # type: ignore[arg-type]
    assert set(seen) == set(run.methods)
    for name, snr in seen.items():
        torch.testing.assert_close(snr, torch.full((3,), -3.0), msg=name)
