"""tools/grid_pairs.py: the fast grid paired point by point with the 100-step grid, and its docs
tables (tools/doc_tables.py kind grid_pairs)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from test_doc_tables import _load_tool

grid_pairs = _load_tool("grid_pairs")
doc_tables = _load_tool("doc_tables")

FIELDS = ["image", "method", "psnr", "ssim", "stlpips", "psnr_A_xhat"]


def write_point(
    sweep: Path, name: str, bcr: str, snr: float, stlpips: list[float], nfe: int
) -> None:
    folder = sweep / name
    folder.mkdir(parents=True)
    with (folder / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for i, v in enumerate(stlpips):
            writer.writerow({"image": i, "method": "deepjscc", "psnr": 14.0, "ssim": 0.4,
                             "stlpips": 0.6, "psnr_A_xhat": ""})  # fmt: skip
            writer.writerow({"image": i, "method": "sing_inn", "psnr": 15.0 + 0.1 * i,
                             "ssim": 0.5, "stlpips": v, "psnr_A_xhat": 30.0})  # fmt: skip
    summary = {"images": len(stlpips), "stlpips": sum(stlpips) / len(stlpips), "psnr": 15.15,
               "cpu_seconds_per_image": nfe / 100}  # fmt: skip
    metrics = {
        "bcr": bcr,
        "snr_db": snr,
        "methods": {"deepjscc": {"images": 4}, "sing_inn": summary},
        "samplers": {"sing_inn": {"nfe": nfe}},
        "evaluate": {"precision_used": "bf16"},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


@pytest.fixture
def sweeps(tmp_path: Path) -> tuple[Path, Path]:
    base, fast = tmp_path / "paper_grid", tmp_path / "paper_grid_fast"
    ref = [0.40, 0.50, 0.45, 0.55]
    write_point(base, "bcr1_48_snr-5", "1/48", -5.0, ref, 199)
    write_point(fast, "bcr1_48_snr-5", "1/48", -5.0, [0.41, 0.49, 0.46, 0.54], 120)  # noise
    write_point(base, "bcr1_24_snr5", "1/24", 5.0, ref, 199)
    write_point(fast, "bcr1_24_snr5", "1/24", 5.0, [v + 0.1 for v in ref], 120)  # worse
    write_point(base, "bcr1_96_snr1", "1/96", 1.0, ref, 199)  # not in the fast sweep
    return base, fast


def test_each_point_pairs_image_by_image(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    base, fast = sweeps
    data = grid_pairs.main([str(base), str(fast), "--out", str(tmp_path / "pairs.json")])
    rows = {r["point"]: r for r in data["rows"]}
    assert set(rows) == {"bcr1_48_snr-5", "bcr1_24_snr5"}  # deepjscc has no sampler: no row
    assert data["unpaired"] == ["bcr1_96_snr1"]  # said, not dropped silently
    worse = rows["bcr1_24_snr5"]
    assert worse["paired"]["stlpips"]["mean"] == pytest.approx(0.1)
    assert worse["not_worse"] == {"psnr": True, "ssim": True, "stlpips": False,
                                  "psnr_A_xhat": True}  # fmt: skip
    assert rows["bcr1_48_snr-5"]["not_worse"]["stlpips"]
    assert worse["nfe"] == {"base": 199, "fast": 120}
    summary = data["summary"]["sing_inn"]
    assert summary["not_worse_points"]["stlpips"] == 1 and not summary["all_not_worse"]
    pooled = summary["pooled"]["stlpips"]  # 8 pairs: four of +0.1, four of ±0.01
    assert pooled["n"] == 8 and pooled["mean"] == pytest.approx(0.05)


def test_docs_tables(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    base, fast = sweeps
    out = tmp_path / "pairs.json"
    grid_pairs.main([str(base), str(fast), "--out", str(out)])
    table = doc_tables.render_grid_pairs(out, {})
    lines = [line for line in table.splitlines() if line.startswith("| 1/")]
    assert [line.split(" | ")[0] for line in lines] == ["| 1/48", "| 1/24"]  # by BCR, SNR
    assert "| SING-INN | 199 → 120 |" in lines[1] and "+0.100 ± 0.000 |" in lines[1]
    assert "In one sweep only (not paired): bcr1_96_snr1" in table
    summary = doc_tables.render_grid_pairs(out, {"summary": "1"})
    assert "| SING-INN | 199 → 120 | 2 of 2 | 1 of 2 |" in summary
