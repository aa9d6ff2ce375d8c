"""The restoration evaluation: same received images for every method, files on disk."""

import csv
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from singexp.metrics import ImageMetrics
from singexp.modules.jscc import DeepJSCCModule
from singexp.modules.restoration import RestorationModule, write_outputs

METRICS = {"lpips": False, "stlpips": False, "swd": True}


def _codec() -> DeepJSCCModule:
    torch.manual_seed(0)
    return DeepJSCCModule(bcr="1/192", image_size=32, latent_channels=8, width=8, metrics=METRICS)


def _evaluate(restorers: dict, seed: int = 0) -> RestorationModule:  # type: ignore[type-arg]
    images = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    module = RestorationModule(
        _codec(),
        restorers,
        snr_db=0.0,
        metrics=ImageMetrics.from_config(METRICS),
        seed=seed,
        grid_images=6,
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
    assert Path(files["grid"]).stat().st_size > 1000
    grid = module.grid_rows()
    assert list(grid) == ["original", "deepjscc", "copy", "blur"]
    assert all(t.shape[0] == 6 for t in grid.values())


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
