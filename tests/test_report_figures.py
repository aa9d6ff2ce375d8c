"""Sweep report tables and figures, and the comparison grid, as a reader sees them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from singexp.report import collect, figure, report, sweep_info
from singexp.visualize import comparison_figure, save_comparison_grid

METHODS = ("sing_zero", "deepjscc", "sing_inn")


def _draw(fig: Figure) -> Any:
    """Lay ``fig`` out as saving does; its renderer, to measure what is drawn."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _point(folder: Path, bcr: str, snr: float, seed: int) -> None:
    """A finished restoration point: metrics.json and per_image.csv (4 images)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    methods = {
        m: {"psnr": 20.0 + i, "ssim": 0.5, "stlpips": 0.3, "swd": 40.0 - i, "images": 4}
        for i, m in enumerate(METHODS)
    }
    record = {"name": "sing_zero", "steps": 10}
    point = {
        "task": "restore",
        "dataset": "shapes",
        "channel": "awgn",
        "snr_db": snr,
        "bcr": bcr,
        "seed": 0,
        "methods": methods,
        "samplers": {"sing_zero": record, "sing_inn": {**record, "name": "sing_inn"}},
    }
    (folder / "metrics.json").write_text(json.dumps(point))
    with (folder / "per_image.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "method", "psnr", "ssim", "stlpips"])
        writer.writeheader()
        for m in METHODS:
            for i in range(4):
                writer.writerow(
                    {"image": i, "method": m, "psnr": 20 + rng.normal(), "ssim": 0.5}
                    | {"stlpips": 0.3 + 0.01 * rng.normal()}
                )


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    # job numbers deliberately out of the (bcr, snr) order
    points = [("1/192", 5.0), ("1/768", 5.0), ("1/192", -5.0), ("1/768", -5.0)]
    for num, (bcr, snr) in enumerate(points):
        _point(sweep / f"{num}_p", bcr, snr, num)
    return sweep


def test_results_csv_is_sorted_and_has_swd(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    summary = report(sweep)
    with (sweep / "report" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    keys = [(r["bcr"], float(r["snr_db"]), r["method"]) for r in rows]
    order = {"1/768": 0, "1/192": 1}
    methods = {"deepjscc": 0, "sing_zero": 1, "sing_inn": 2}  # not alphabetical
    assert keys == sorted(keys, key=lambda k: (order[k[0]], k[1], methods[k[2]]))
    assert keys[0] == ("1/768", -5.0, "deepjscc")
    swd = [r for r in rows if r["metric"] == "swd"]
    assert len(swd) == 4 * 3 and swd[0]["ci95"] == "nan"  # set-level: no interval
    table = (sweep / "report" / "results.md").read_text()
    assert "SWD (×10³)" in table and "PSNR (dB)" in table
    assert any(f.endswith("swd_vs_snr.png") for f in summary["files"])


def test_figure_has_one_legend_outside_shared_y_offsets_and_a_title(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    info = sweep_info(sweep)
    assert info["images"] == [4] and info["steps"] == [10]
    fig = figure(collect(sweep), "psnr", info)
    axes = fig.axes
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["BCR 1/768", "BCR 1/192"]
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in axes)
    renderer = _draw(fig)
    legend_box = fig.legends[0].get_window_extent(renderer)
    for ax in axes:  # the legend covers no panel
        assert not legend_box.overlaps(ax.get_window_extent())
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    assert axes[0].get_ylabel() == "PSNR (dB)" and axes[0].get_xlabel() == "SNR (dB)"
    xs = [tuple(line.get_xdata()) for line in axes[0].get_lines() if len(line.get_xdata()) == 2]
    assert len(set(xs)) == 3  # the three methods sit at slightly different x
    title = fig._suptitle.get_text()  # type: ignore[union-attr]
    assert "4 test images" in title and "10 sampler steps" in title
    lower = figure(collect(sweep), "stlpips", info)
    assert lower.axes[0].get_ylabel() == "ST-LPIPS (lower is better)"


def test_grid_one_column_keeps_its_title_and_shows_psnr(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    rows = {"original": x, "deepjscc": noisy, "sing_zero": x}
    title = "shapes · awgn · snr_db -5.0 · bcr 1/768 · a long title for one column"
    fig = comparison_figure(rows, title)
    renderer = _draw(fig)
    box = fig.bbox
    shown = [t for t in [*fig.texts, *fig.axes[0].texts] if t.get_text()]
    assert " ".join(fig._suptitle.get_text().split()) == title  # type: ignore[union-attr]
    for t in [*shown, *fig.axes[0].get_yticklabels()]:  # every label lies inside the image
        extent = t.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, t.get_text()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, t.get_text()
    numbers = [t.get_text() for t in fig.axes[0].texts]
    expected = 10 * math.log10(4 / float(((noisy - x) ** 2).mean()))
    assert numbers == [f"PSNR {expected:.1f} dB", "PSNR ∞"]  # under each restored image only
    save_comparison_grid(rows, tmp_path / "grid.png", title=title)
    assert (tmp_path / "grid.png").is_file()


def _variant_point(folder: Path, snr: float, operator: str, steps: int, shift: float) -> None:
    """A point of an ablation/NFE sweep: DeepJSCC the same at every variant, SING-Zero not."""
    folder.mkdir(parents=True)
    methods = {
        "deepjscc": {"psnr": 20.0, "stlpips": 0.5, "images": 4, "seconds_per_image": 0.001},
        "sing_zero": {
            "psnr": 21.0 + shift,
            "stlpips": 0.4 - shift / 10,
            "images": 4,
            "seconds_per_image": 0.01 * steps,
        },
    }
    point = {
        "task": "restore",
        "dataset": "shapes",
        "channel": "awgn",
        "snr_db": snr,
        "bcr": "1/48",
        "methods": methods,
        "operator": {"name": operator, "scale": 4},
        "samplers": {"sing_zero": {"name": "sing_zero", "steps": steps}},
    }
    (folder / "metrics.json").write_text(json.dumps(point))


def test_operator_variants_become_a_column_and_lines(tmp_path: Path) -> None:
    sweep = tmp_path / "ablation"
    for i, (op, snr) in enumerate((a, s) for a in ("avgpool", "fitted") for s in (-5.0, 5.0)):
        _variant_point(sweep / f"{i}", snr, op, 100, shift=float(op == "fitted"))
    report(sweep)
    table = (sweep / "report" / "results.md").read_text()
    assert "| variant |" in table
    assert "| sing_zero | A=fitted |" in table and "| sing_zero | A=avgpool |" in table
    with (sweep / "report" / "results.csv").open() as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"A=avgpool", "A=fitted"}
    fig = figure(collect(sweep), "psnr", sweep_info(sweep))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    # DeepJSCC does not depend on A: one line; SING-Zero: one line per A
    assert sorted(labels) == ["DeepJSCC", "SING-Zero · A=avgpool", "SING-Zero · A=fitted"]
    assert fig.legends[0].get_title().get_text() == "method · variant"
    # a method's variants share its colour and differ in line style
    lines = {
        line.get_label(): line for line in fig.axes[0].get_lines() if line.get_label()[0] != "_"
    }
    if not lines:  # errorbar containers: their data line carries the style
        lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}
    a, f = lines["SING-Zero · A=avgpool"], lines["SING-Zero · A=fitted"]
    assert a.get_color() == f.get_color() != lines["DeepJSCC"].get_color()
    assert a.get_linestyle() != f.get_linestyle()


def test_paper_grid_report_has_no_variant_column(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    report(sweep)
    assert "variant" not in (sweep / "report" / "results.md").read_text()


def test_steps_sweep_draws_steps_and_seconds_figures_with_the_default_marked(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "nfe"
    for steps in (10, 100, 1000):
        _variant_point(sweep / f"steps{steps}", 0.0, "avgpool", steps, shift=steps / 1000)
    summary = report(sweep)
    names = {Path(f).name for f in summary["files"]}
    assert {"psnr_vs_steps.png", "psnr_vs_steps.pdf", "stlpips_vs_seconds.png"} <= names
    assert "psnr_vs_snr.png" not in names  # one SNR: the steps figures replace it
    assert "flops.md" in names
    from singexp.report import steps_figure

    rows = collect(sweep)
    fig = steps_figure(rows, "psnr", "steps", sweep_info(sweep))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "steps" in ax.get_xlabel()
    assert ax.get_ylabel() == "PSNR (dB)"
    assert any(tuple(line.get_xdata()) == (100, 100) for line in ax.get_lines())  # default
    assert any("default" in t.get_text() for t in ax.texts)
    secs = steps_figure(rows, "psnr", "seconds", sweep_info(sweep)).axes[0]
    assert "seconds per image" in secs.get_xlabel()
    line = next(li for li in secs.get_lines() if len(li.get_xdata()) == 3)
    assert list(line.get_xdata()) == pytest.approx([0.1, 1.0, 10.0])
    flops = (sweep / "report" / "flops.md").read_text()
    assert "| sing_zero | 1000 |" in flops and "TFLOP" in flops


def test_methods_with_their_own_step_counts_are_not_a_steps_sweep(tmp_path: Path) -> None:
    # one point where two methods ran different steps (SING 100, InverseJSCC's 5-step
    # generator): the SNR figures as usual, no steps figures, no FLOPs table
    folder = tmp_path / "baselines" / "p"
    _variant_point(folder, 0.0, "avgpool", 100, shift=0.0)
    point = json.loads((folder / "metrics.json").read_text())
    point["methods"]["inverse_jscc"] = dict(point["methods"]["sing_zero"])
    point["samplers"]["inverse_jscc"] = {"name": "inverse_jscc", "steps": 5}
    (folder / "metrics.json").write_text(json.dumps(point))
    names = {Path(f).name for f in report(tmp_path / "baselines")["files"]}
    assert "psnr_vs_snr.png" in names
    assert not {n for n in names if "_vs_steps" in n or "_vs_seconds" in n or n == "flops.md"}


def test_mismatch_report_has_a_drop_per_method(tmp_path: Path) -> None:
    # +experiment=mismatch: shapes-trained models tested on shapes (matched) and on photos; the
    # report writes each method's drop Δ = mismatched − matched
    sweep = tmp_path / "mismatch"
    values = {  # (data, method) → per-image PSNR of 4 images, ST-LPIPS mean
        ("shapes", "deepjscc"): ([16.0, 17.0, 15.0, 16.0], 0.5),
        ("shapes", "sing_inn"): ([15.0, 16.0, 14.0, 15.0], 0.4),
        ("photos", "deepjscc"): ([14.0, 14.5, 13.5, 14.0], 0.6),
        ("photos", "sing_inn"): ([12.0, 12.0, 12.0, 12.0], 0.7),
    }
    for data in ("shapes", "photos"):
        folder = sweep / f"{data}_snr0"
        folder.mkdir(parents=True)
        methods = {
            m: {"psnr": sum(values[(data, m)][0]) / 4, "stlpips": values[(data, m)][1]}
            | {"images": 4}
            for m in ("deepjscc", "sing_inn")
        }
        point = {
            "task": "restore",
            "dataset": data,
            "channel": "awgn",
            "snr_db": 0.0,
            "bcr": "1/48",
            "methods": methods,
            "trained_on": {"jscc": "shapes", "inn": "shapes"},
        }
        (folder / "metrics.json").write_text(json.dumps(point))
        with (folder / "per_image.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, ["image", "method", "psnr"])
            writer.writeheader()
            for m in ("deepjscc", "sing_inn"):
                for i, v in enumerate(values[(data, m)][0]):
                    writer.writerow({"image": i, "method": m, "psnr": v})
    report(sweep)
    with (sweep / "report" / "drop.csv").open() as f:
        drops = {(r["method"], r["metric"]): r for r in csv.DictReader(f)}
    assert set(drops) == {(m, k) for m in ("deepjscc", "sing_inn") for k in ("psnr", "stlpips")}
    for method in ("deepjscc", "sing_inn"):
        matched = sum(values[("shapes", method)][0]) / 4
        mismatched = sum(values[("photos", method)][0]) / 4
        row = drops[(method, "psnr")]
        assert (row["matched_data"], row["mismatched_data"]) == ("shapes", "photos")
        assert float(row["delta"]) == pytest.approx(mismatched - matched)
        want = values[("photos", method)][1] - values[("shapes", method)][1]
        assert float(drops[(method, "stlpips")]["delta"]) == pytest.approx(want)
    # the gain over DeepJSCC on the same data (the data sets differ in difficulty)
    inn_psnr = drops[("sing_inn", "psnr")]
    assert float(inn_psnr["gain_matched"]) == pytest.approx(15.0 - 16.0)
    assert float(inn_psnr["gain_mismatched"]) == pytest.approx(12.0 - 14.0)
    assert float(drops[("sing_inn", "stlpips")]["gain_mismatched"]) == pytest.approx(0.7 - 0.6)
    assert drops[("deepjscc", "psnr")]["gain_matched"] == ""  # DeepJSCC against itself: none
    table = (sweep / "report" / "drop.md").read_text()
    assert "| 1/48 | 0 | sing_inn | -1.000 → -2.000 | -0.100 → +0.100 |" in table
    assert "shapes → photos" in table
    assert "| 1/48 | 0 | sing_inn | 15.000 → 12.000 (-3.000) | 0.400 → 0.700 (+0.300) |" in table
    # a sweep without a mismatched point (the SNR × BCR grid) writes no drop table
    grid = _sweep(tmp_path)
    report(grid)
    assert not (grid / "report" / "drop.md").exists()


@pytest.mark.parametrize(("size", "scale"), [(256, 1), (32, 4)])
def test_grid_tiles_are_native_resolution_or_a_whole_multiple(
    tmp_path: Path, size: int, scale: int
) -> None:
    """Measured in the saved PNG: a solid tile of one colour spans size × scale pixels each way
    (256 px images 1:1; 32 px magnified 4×, never resampled to a fraction)."""
    import numpy as np
    from PIL import Image

    colour = torch.tensor([-0.6, 0.6, -0.2]).view(1, 3, 1, 1)  # (51, 204, 102) in uint8
    tile = colour.expand(1, 3, size, size)
    other = torch.zeros(1, 3, size, size)
    rows = {"original": torch.cat([other, other]), "sing_inn": torch.cat([other, tile])}
    save_comparison_grid(rows, tmp_path / "grid.png", title="a title")
    with Image.open(tmp_path / "grid.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    mask = (pixels == np.array([51, 204, 102], np.uint8)).all(axis=-1)
    ys, xs = np.nonzero(mask)
    assert ys.max() - ys.min() + 1 == size * scale and xs.max() - xs.min() + 1 == size * scale
    assert mask.sum() == (size * scale) ** 2  # a solid square: no interpolated edge


def test_report_cli_ends_with_a_human_line_and_refuses_an_empty_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "singexp.report", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    for folder in (tmp_path / "missing", tmp_path):  # missing, then empty
        result = cli(str(folder))
        assert result.returncode != 0
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    from singexp.report import summary_line

    line = summary_line(tmp_path, {"points": 2, "files": ["a", "b", "c"], "failed": []})
    assert line == f"report: 2 points, 3 files in {tmp_path / 'report'}, 0 failed"


def _rows(methods: dict[str, float], bcrs: tuple[str, ...] = ("1/768",)) -> list[dict[str, Any]]:
    """Report rows of PSNR: one per BCR, SNR (-5, 5) and method, mean ``methods[m]`` (+ SNR/10)."""
    return [
        {"bcr": b, "snr_db": snr, "method": m, "variant": "", "metric": "psnr"}
        | {"mean": v + (snr / 10 if m != "mean_image" else 0.0), "ci95": 0.2, "images": 4}
        for b in bcrs
        for snr in (-5.0, 5.0)
        for m, v in methods.items()
    ]


def test_one_panel_legend_clear_of_the_title_and_display_names() -> None:
    rows = _rows({"sing_zero": 20.0, "deepjscc": 19.0, "sing_inn": 21.0, "dps_jscc": 18.0})
    info = {"dataset": ["celebahq"], "channel": ["awgn"], "images": [64], "steps": [100]}
    fig = figure(rows, "psnr", info)
    renderer = _draw(fig)
    legend = fig.legends[0].get_window_extent(renderer)
    title = fig._suptitle.get_window_extent(renderer)  # type: ignore[union-attr]
    assert not legend.overlaps(title)
    assert not legend.overlaps(fig.axes[0].get_window_extent(renderer))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["DeepJSCC", "SING-Zero", "SING-INN", "DPS-JSCC"]  # names, in row order


def test_variant_lines_keep_their_suffix_under_display_names() -> None:
    rows = [
        {**r, "variant": v, "method": r["method"], "mean": r["mean"] + i}
        for i, v in enumerate(("A=fitted", "A=avgpool s2"))
        for r in _rows({"sing_zero": 20.0})
    ]
    labels = [t.get_text() for t in figure(rows, "psnr").legends[0].get_texts()]
    assert sorted(labels) == ["SING-Zero · A=avgpool s2", "SING-Zero · A=fitted"]


def test_a_far_mean_image_is_a_labelled_reference_and_the_y_axis_is_the_methods() -> None:
    rows = _rows({"mean_image": 5.0, "deepjscc": 20.0, "sing_zero": 21.0}, ("1/768", "1/192"))
    fig = figure(rows, "psnr")
    _draw(fig)
    low, high = fig.axes[0].get_ylim()
    assert 18.0 < low < 19.5 and 21.5 < high < 23.0  # the methods' range (±CI), not down to 5
    dashed = [ln for ln in fig.axes[0].get_lines() if list(ln.get_ydata()) == [5.0, 5.0]]
    assert dashed and dashed[0].get_linestyle() == "--"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(label.startswith("mean image (trivial): 5") for label in labels)
    assert "DeepJSCC" in labels and "mean image (trivial)" not in labels  # no line of its own
    # within the methods' range: a line like the others
    near = figure(_rows({"mean_image": 20.5, "deepjscc": 20.0, "sing_zero": 21.0}), "psnr")
    labels = [t.get_text() for t in near.legends[0].get_texts()]
    assert labels == ["mean image (trivial)", "DeepJSCC", "SING-Zero"]


def test_results_rows_are_mean_image_deepjscc_then_restorations(tmp_path: Path) -> None:
    from singexp.report import write_tables

    methods = {m: 10.0 for m in ("zz_other", "inverse_jscc", "sing_inn", "mean_image")}
    methods |= {m: 10.0 for m in ("dps_jscc", "sing_zero", "deepjscc", "a_other")}
    write_tables(_rows(methods)[:8], tmp_path)
    with (tmp_path / "results.csv").open() as f:
        order = [r["method"] for r in csv.DictReader(f)]
    assert order == [
        "mean_image",
        "deepjscc",
        "sing_zero",
        "sing_inn",
        "dps_jscc",
        "inverse_jscc",
        "a_other",
        "zz_other",
    ]
    table = (tmp_path / "results.md").read_text()
    assert table.index("| mean_image |") < table.index("| deepjscc |") < table.index("| a_other |")


def test_a_report_of_quick_points_says_its_numbers_are_smoke_test_settings(tmp_path: Path) -> None:
    from singexp.report import QUICK_NOTE

    sweep = _sweep(tmp_path)
    report(sweep)
    assert "smoke-test" not in (sweep / "report" / "results.md").read_text()
    for metrics in sweep.glob("*/metrics.json"):
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "quick": True}))
    report(sweep)
    lines = (sweep / "report" / "results.md").read_text().splitlines()
    assert lines[0] == f"{QUICK_NOTE}." and lines.index(f"{QUICK_NOTE}.") < lines.index(
        next(line for line in lines if line.startswith("| BCR"))
    )
