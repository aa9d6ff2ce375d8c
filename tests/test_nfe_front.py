"""tools/nfe_front.py: the NFE front paired against each method's default, the fast pick, and
its docs tables (tools/doc_tables.py kinds nfe_front, nfe_fast)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from test_doc_tables import _load_tool

nfe_front = _load_tool("nfe_front")
doc_tables = _load_tool("doc_tables")

#: per-image ST-LPIPS and PSNR of sing_zero at the default and at two budgets (4 images)
REF = {"stlpips": [0.40, 0.50, 0.45, 0.55], "psnr": [15.0, 16.0, 14.0, 15.5]}
BUDGETS = {
    # equal up to noise: the paired differences' CI covers 0
    "10": {"stlpips": [0.41, 0.49, 0.46, 0.54], "psnr": [15.1, 15.9, 14.1, 15.4]},
    # clearly worse on ST-LPIPS (every image +0.1)
    "5": {"stlpips": [0.50, 0.60, 0.55, 0.65], "psnr": [15.0, 16.0, 14.0, 15.5]},
}


def write_point(
    root: Path, point: str, budget: str, values: dict, nfe: int, lever: str = "none"
) -> None:
    folder = root / f"{point}_nfe{budget}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        f"nfe: {budget}\nfront:\n  point: {point}\n  lever: {lever}\n", encoding="utf-8"
    )
    with (folder / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "method", "psnr", "ssim", "stlpips", "psnr_A_xhat"])
        writer.writeheader()
        for i in range(4):
            writer.writerow(
                {
                    "image": i,
                    "method": "sing_zero",
                    "psnr": values["psnr"][i],
                    "ssim": 0.5,
                    "stlpips": values["stlpips"][i],
                    "psnr_A_xhat": 40.0,
                }
            )
    summary = {
        "psnr": sum(values["psnr"]) / 4,
        "stlpips": sum(values["stlpips"]) / 4,
        "ssim": 0.5,
        "psnr_A_xhat": 40.0,
        "swd": 100.0 + int(budget) if budget != "ref" else 100.0,
        "images": 4,
        "seconds_per_image": 0.2,
        "cpu_seconds_per_image": 0.1 * nfe / 100,
    }
    metrics = {
        "bcr": "1/48",
        "snr_db": 0.0,
        "methods": {"sing_zero": summary},
        "samplers": {"sing_zero": {"nfe": nfe, "steps": nfe, "scheduler": "ddim"}},
        "evaluate": {"precision_used": "fp32"},
        "threads": 1,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "nfe_front_none"
    write_point(root, "main", "ref", REF, 100)
    for budget, values in BUDGETS.items():
        write_point(root, "main", budget, values, int(budget))
    return root


def test_paired_differences_and_the_fast_pick(sweep: Path) -> None:
    data = nfe_front.front(sweep)
    rows = {r["budget"]: r for r in data["rows"]}
    worse = rows["5"]["paired"]["stlpips"]
    assert worse["mean"] == pytest.approx(0.1) and worse["n"] == 4
    assert worse["ci95"] == pytest.approx(0.0, abs=1e-9)  # every image +0.1: no spread
    assert rows["5"]["not_worse"] == {"psnr": True, "ssim": True, "stlpips": False,
                                      "psnr_A_xhat": True}  # fmt: skip
    equal = rows["10"]["paired"]["psnr"]
    diffs = [0.1, -0.1, 0.1, -0.1]
    sd = math.sqrt(sum(d * d for d in diffs) / 3)
    assert equal["mean"] == pytest.approx(0.0, abs=1e-9)
    assert equal["ci95"] == pytest.approx(1.959964 * sd / 2)
    assert rows["10"]["not_worse"]["stlpips"] and rows["10"]["not_worse"]["psnr"]
    assert rows["10"]["swd_delta"] == pytest.approx(10.0)
    assert rows["10"]["nfe"] == 10 and rows["10"]["cpu_s_per_image"] == pytest.approx(0.01)
    # 5 is worse on ST-LPIPS: the fewest NFE not worse is 10
    assert data["fast"]["not_worse"]["sing_zero"] == {"budget": "10", "nfe": [10], "points": 1}
    assert "model" in data["cpu"] and isinstance(data["cpu"]["flags"], list)


def test_a_budget_must_hold_at_every_point(sweep: Path) -> None:
    """A budget not worse at one point but worse at another is not picked."""
    write_point(sweep, "low", "ref", REF, 100)
    write_point(sweep, "low", "10", BUDGETS["5"], 10)  # worse at the second point
    write_point(sweep, "low", "5", BUDGETS["5"], 5)
    fast = nfe_front.front(sweep)["fast"]["not_worse"]["sing_zero"]
    assert fast["budget"] == "ref"


def test_docs_tables_of_the_front(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "front.json"
    nfe_front.main([str(sweep), "--out", str(out)])
    table = doc_tables.render_nfe_front(out, {"point": "main"})
    lines = table.splitlines()
    assert lines[0].startswith("BCR 1/48, 0 dB · 4 test images · fp32")
    body = [line for line in lines if line.startswith("| SING-Zero")]
    assert [line.split(" | ")[1] for line in body] == ["5", "10", "default"]
    assert "+0.100 ± 0.000 |" in body[0]  # worse: no ✓
    assert "✓" in body[1].split(" | ")[6]
    fast = doc_tables.render_nfe_fast(out, {})
    assert "| SING-Zero | 10 (NFE 10) | 10 (NFE 10) | 1 |" in fast


def test_merge_keeps_the_points_a_rerun_lacks(sweep: Path, tmp_path: Path) -> None:
    """A sweep that re-ran one point and the references merges with the earlier JSON: the
    earlier budgets of the other points are kept (with their source), the pick covers both."""
    old = tmp_path / "old.json"
    nfe_front.main([str(sweep), "--out", str(old)])  # main: ref, 5, 10
    rerun = tmp_path / "rerun" / "nfe_front_none"
    write_point(rerun, "main", "ref", REF, 100)  # the same reference again
    write_point(rerun, "low", "ref", REF, 100)
    write_point(rerun, "low", "10", BUDGETS["5"], 10)  # 10 is worse at the second point
    new = tmp_path / "new.json"
    data = nfe_front.main([str(rerun), "--out", str(new), "--merge", str(old)])
    keys = [(r["point"], r["budget"]) for r in data["rows"]]
    assert keys == [("main", "5"), ("main", "10"), ("main", "ref"), ("low", "10"), ("low", "ref")]
    kept = {r["budget"]: r["source"]["sweep"] for r in data["rows"] if r["point"] == "main"}
    assert kept["5"] == str(sweep) and kept["ref"] == str(rerun)
    assert data["merged"]["rows_kept"] == 2 and data["merged"]["ref_check"] == ["main/sing_zero"]
    assert data["points"] == ["main", "low"]
    assert data["fast"]["not_worse"]["sing_zero"]["budget"] == "ref"  # 10 fails at low


def test_merge_refuses_a_reference_that_moved(sweep: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    nfe_front.main([str(sweep), "--out", str(old)])
    rerun = tmp_path / "rerun" / "nfe_front_none"
    write_point(rerun, "main", "ref", BUDGETS["5"], 100)  # other code: other numbers
    with pytest.raises(SystemExit, match="sing_zero's ref at main differs"):
        nfe_front.main([str(rerun), "--out", str(tmp_path / "new.json"), "--merge", str(old)])


def test_a_levers_reference_is_picked_only_where_it_holds(sweep: Path, tmp_path: Path) -> None:
    """A lever's sweep (its settings at nfe=ref) pairs with the base front's ref: picked where
    not worse at every point, named by the lever in the docs' table; never picked for free."""
    lever = tmp_path / "nfe_front_guide5"
    write_point(lever, "main", "ref", BUDGETS["10"], 60, "guide5")  # equal up to noise
    out = tmp_path / "guide5.json"
    data = nfe_front.main([str(lever), "--out", str(out), "--reference", str(sweep)])
    assert data["fast"]["not_worse"]["sing_zero"]["nfe"] == [60]
    assert not data["rows"][0]["reference_itself"]
    assert "| SING-Zero | guide5 (NFE 60) |" in doc_tables.render_nfe_fast(out, {})
    worse = tmp_path / "nfe_front_worse"
    write_point(worse, "main", "ref", BUDGETS["5"], 60, "worse")  # worse on ST-LPIPS
    data = nfe_front.main([str(worse), "--out", str(out), "--reference", str(sweep)])
    assert "sing_zero" not in data["fast"]["not_worse"]
    table = doc_tables.render_nfe_front(out, {"point": "main"})
    row = next(line for line in table.splitlines() if line.startswith("| SING-Zero"))
    assert "| worse (default steps) | 60 |" in row and "+0.100 ± 0.000 |" in row  # paired
