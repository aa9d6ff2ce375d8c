"""The documentation's results tables cannot drift from the result files they come from.

(a) every generated block of README.md and docs/**/*.md equals what its committed source file
generates (``python tools/doc_tables.py``), and so does every whole generated file;
(b) the marker parsing and regeneration on a small page of a temporary repository;
(c) every results table (a Markdown table with a cell that is a number) outside a generated
block is listed below with the reason it is not generated.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` (repository tooling, not in the installed package) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


doc_tables = _load_tool("doc_tables")
GENERATED_FILES = doc_tables.GENERATED_FILES
blocks = doc_tables.blocks
md_tables = doc_tables.md_tables
pages = doc_tables.pages
parse_spec = doc_tables.parse_spec
regenerate = doc_tables.regenerate
render_report_file = doc_tables.render_report_file
strip_blocks = doc_tables.strip_blocks
PAGES = pages(REPO)

#: (page, the table's heading row) → why the table is written by hand
ALLOWED_TABLES: dict[tuple[str, str], str] = {
    (
        "docs/guide/methods.md",
        "| key (`methods.sing_inn.*`) | default | options |",
    ): "configuration reference: defaults of the sampler group, not results",
    (
        "docs/results/main_job.md",
        "| cores … | wall | ratio to idle (passive) | ratio to idle (spin) |",
    ): "one-off wall times of four main-job runs read off the terminal; no result file was kept",
    (
        "docs/results/baselines.md",
        "| method | assumes | PSNR (dB) | SSIM | ST-LPIPS ↓ | SWD (×10³) ↓ | PSNR(Ax̃,Ax̂) | "
        "PSNR(Ax̃,Ax) | s / image |",
    ): "the baselines' runs (outputs/baselines_full, outputs/baselines_sing_timing) are not "
    "committed; their quality rows for DeepJSCC and SING equal the generated main-job table",
    (
        "docs/results/presets.md",
        "| BCR | −5 dB | 0 dB | 5 dB | Δ ST-LPIPS vs avgpool s4 (−5 / 0 / 5 dB) |",
    ): "the rank-12 fitted-A sweep (outputs/sweeps/ablation_fitted_r12) and its paired "
    "differences are not committed",
    (
        "docs/results/presets.md",
        "| prior | GFLOP per UNet call | with input gradient (SING-INN) | SING-Zero, 100 steps | "
        "SING-INN, 100 steps | 1000 steps (Zero / INN) |",
    ): "FLOP counts of the networks' architecture (python -m singexp.flops), not measurements; "
    "the same counts are in the generated flops table of docs/presets/nfe_curve.md",
    (
        "docs/results/presets.md",
        "| SNR (dB) | Δ ST-LPIPS, 100 − 8192 | 500 − 8192 | 2000 − 8192 |",
    ): "paired differences over per-image results of the inn_data_size sweep, not committed",
    (
        "docs/results/presets.md",
        "| SNR (dB) | Δ ST-LPIPS | Δ PSNR (dB) |",
    ): "paired differences over per-image results of the snr_generalisation sweep, not committed",
    (
        "docs/results/nfe_front.md",
        "| method | fast setting | NFE (default → fast) | not worse than its default "
        "(PSNR, ST-LPIPS) at |",
    ): "the settings of conf/fast/*.yaml and their NFE (samplers/nfe.py), pointing at the "
    "generated nfe_front / nfe_fast tables that hold the evidence",
    (
        "docs/results/nfe_front.md",
        "| SING-INN, 32 validation images | NFE | CPU s / image | Δ PSNR (dB) | Δ ST-LPIPS ↓ |",
    ): "a validation-split exploration (32 validation images) that chose the candidates; its runs "
    "are not committed, and the generated front tables of the candidates are the evidence",
}
#: pages whose every table is allowed, and why
ALLOWED_PAGES: dict[str, str] = {
    "docs/presets/ablation_operator.md": "committed output of `python -m singexp.report` (the "
    "sweep folder's results.csv is not committed): the source of the generated digests",
    "docs/presets/nfe_curve.md": "committed report output (results.md, flops.md)",
    "docs/presets/inn_data_size.md": "committed report output (results.md)",
    "docs/presets/snr_generalisation.md": "committed report output (results.md)",
    "docs/presets/mismatch.md": "committed report output (drop.md, results.md)",
    "docs/presets/mismatch_five.md": "committed report output (drop.md, results.md)",
    "docs/presets/comparison_grid.md": "committed report output (results.md, paired.md)",
    "docs/research/prior_samples.md": "research notes kept by the prior-samples work; its "
    "numbers come from docs/research/prior_samples/quality.json (not generated blocks yet)",
    "docs/research/prior_samples/quality.md": "written by docs/research/prior_samples' "
    "quality script beside its quality.json",
}


def rel(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


# -- (a) committed pages equal what their sources generate ----------------------------------


def test_the_documentation_has_generated_blocks() -> None:
    found = {rel(p): len(blocks(p)) for p in PAGES if blocks(p)}
    assert found.get("README.md", 0) >= 1, "the README's main-job table is generated"
    assert sum(found.values()) >= 15, found


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=rel)
def test_generated_blocks_equal_their_sources(page: Path) -> None:
    _, changed = regenerate(page, REPO)
    assert not changed, (
        f"{rel(page)}: {', '.join(b.spec for b in changed)} differ from what the source "
        "generates; run `make docs-tables` (python tools/doc_tables.py), never edit by hand"
    )


@pytest.mark.parametrize("page", sorted(GENERATED_FILES))
def test_generated_files_equal_their_sources(page: str) -> None:
    table = render_report_file(REPO / GENERATED_FILES[page])
    assert (REPO / page).read_text(encoding="utf-8").startswith(table), page


def test_check_command_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert doc_tables.main(["--check", "--root", str(REPO)]) == 0, capsys.readouterr().out


# -- (b) marker parsing and regeneration on a small page -------------------------------------

METRICS = {
    "task": "restore",
    "dataset": "shapes",
    "image_size": 32,
    "channel": "awgn",
    "snr_db": 0.0,
    "bcr": "1/48",
    "seed": 0,
    "methods": {
        "deepjscc": {"psnr": 16.18083, "ssim": 0.39431, "stlpips": 0.54025, "images": 4},
        "sing_zero": {"psnr": 15.8957, "ssim": 0.34106, "stlpips": 0.44489, "images": 4},
        "mean_image": {"psnr": 11.7474, "ssim": 0.30815, "stlpips": 1.01816, "images": 4},
    },
    "metric_status": {"psnr": "ok"},
    "samplers": {},
}
REPORT = """| BCR | SNR (dB) | method | variant | PSNR (dB) | ST-LPIPS ↓ |
|---|---|---|---|---|---|
| 1/96 | -5 | deepjscc | A=s2 | 12.982 ± 0.881 | 0.685 ± 0.086 |
| 1/96 | -5 | sing_zero | A=s2 | 12.977 ± 0.880 | 0.666 ± 0.086 |
| 1/96 | -5 | sing_zero | A=s4 | 12.902 ± 0.873 | 0.580 ± 0.086 |
"""


def small_repo(tmp_path: Path) -> Path:
    """A repository with one result file, one report and a page of two generated blocks."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "docs" / "data").mkdir(parents=True)
    (tmp_path / "docs" / "data" / "run.json").write_text(json.dumps(METRICS))
    (tmp_path / "docs" / "report.md").write_text(REPORT)
    (tmp_path / "README.md").write_text(
        "# x\n\nText before.\n\n"
        "<!-- generated: docs/data/run.json restoration -->\nstale\n<!-- /generated -->\n\n"
        "Between.\n\n"
        "<!-- generated: docs/report.md pivot rows=bcr,snr methods=sing_zero ref=deepjscc "
        "digits=2 -->\n<!-- /generated -->\n\nAfter.\n"
    )
    return tmp_path


def test_parse_spec_reads_source_kind_and_options() -> None:
    assert parse_spec("docs/a.json restoration") == ("docs/a.json", "restoration", {})
    source, kind, options = parse_spec("r.md select columns=snr,seconds+/+image table=1")
    assert (source, kind) == ("r.md", "select")
    assert options == {"columns": "snr,seconds / image", "table": "1"}
    with pytest.raises(ValueError, match="source and a kind"):
        parse_spec("only-a-source.json")
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("a.json restoration loose")


def test_regeneration_of_a_small_page(tmp_path: Path) -> None:
    root = small_repo(tmp_path)
    readme = root / "README.md"
    found = blocks(readme)
    assert [(b.source, b.kind) for b in found] == [
        ("docs/data/run.json", "restoration"),
        ("docs/report.md", "pivot"),
    ]
    assert found[1].options == {
        "rows": "bcr,snr",
        "methods": "sing_zero",
        "ref": "deepjscc",
        "digits": "2",
    }
    assert doc_tables.main(["--check", "--root", str(root)]) == 1  # both blocks are stale
    assert doc_tables.main(["--root", str(root)]) == 0  # rewrite
    text = readme.read_text()
    assert doc_tables.main(["--check", "--root", str(root)]) == 0
    # the text outside the blocks is untouched, the stale body is gone
    assert text.startswith("# x\n\nText before.\n\n<!-- generated: docs/data/run.json")
    assert "Between.\n\n" in text and text.endswith("<!-- /generated -->\n\nAfter.\n")
    assert "stale" not in text
    # the restoration table: mean image first, the best method value in bold
    assert "| trivial baseline: the mean training image | 11.75 | 0.308 | 1.018 |" in text
    assert "| DeepJSCC | **16.18** | **0.394** | 0.540 |" in text
    assert "| SING-Zero | 15.90 | 0.341 | **0.445** |" in text
    # the pivot: one row per (BCR, SNR), DeepJSCC first, one column per variant, rounded half up
    assert "| BCR | SNR (dB) | DeepJSCC | s2 | s4 |" in text
    assert "| 1/96 | -5 | 0.69 / 12.98 | 0.67 / 12.98 | 0.58 / 12.90 |" in text
    # a hand edit inside a block is found, and only that block
    readme.write_text(text.replace("| 15.90 |", "| 15.91 |"))
    _, changed = regenerate(readme, root)
    assert [b.kind for b in changed] == ["restoration"]
    assert doc_tables.main(["--check", "--root", str(root)]) == 1


def test_a_missing_source_or_kind_is_an_error(tmp_path: Path) -> None:
    root = small_repo(tmp_path)
    page = root / "docs" / "bad.md"
    page.write_text("<!-- generated: docs/nothing.json restoration -->\n<!-- /generated -->\n")
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        regenerate(page, root)
    page.write_text("<!-- generated: docs/data/run.json nokind -->\n<!-- /generated -->\n")
    with pytest.raises(ValueError, match="unknown kind"):
        regenerate(page, root)


# -- (c) every results table is generated or allowed -----------------------------------------


#: a cell that is a number (``16.18``, ``**0.394**``, ``−5``, ``2:47``): a results table has one
NUMBER = re.compile(r"^[*_]*[−+\-]?\d")


def hand_tables(page: Path) -> list[str]:
    """The heading rows of the tables with numbers outside the page's generated blocks."""
    text = strip_blocks(page.read_text(encoding="utf-8"))
    headings = [line for line in text.splitlines() if line.startswith("|")]
    found = []
    for table in md_tables(text):
        if not table:
            continue
        heading = "| " + " | ".join(table[0]) + " |"
        cells = [c for row in table for c in row.values()]
        if any(NUMBER.match(c) for c in cells):
            found.append(next((h for h in headings if split(h) == list(table[0])), heading))
    return found


def split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_results_table_is_generated_or_allowed(page: Path) -> None:
    name = rel(page)
    if name in GENERATED_FILES or name in ALLOWED_PAGES:
        return
    unexplained = [h for h in hand_tables(page) if (name, h) not in ALLOWED_TABLES]
    assert not unexplained, (
        f"{name}: tables with numbers written by hand: {unexplained}; generate them from a "
        "committed result file (tools/doc_tables.py) or allow them in tests/test_doc_tables.py "
        "with the reason"
    )


def test_the_allowlist_names_tables_that_exist() -> None:
    for (name, heading), reason in ALLOWED_TABLES.items():
        assert reason
        assert heading in hand_tables(REPO / name), (name, heading)
    for name in ALLOWED_PAGES:
        assert (REPO / name).is_file(), name


def test_a_drop_block_renders_the_reports_drop_md_from_its_csv(tmp_path: Path) -> None:
    """``drop.csv`` read back gives the report's own ``drop.md`` (the mismatch page's source)."""
    from singexp.report.statistics import drop_rows
    from singexp.report.tables import write_drop

    rows = []
    for data, matched in (("shapes", True), ("photos", False)):
        for method, psnr in (("deepjscc", 15.0), ("sing_inn", 14.5)):
            rows.append(
                {
                    "dataset": data,
                    "bcr": "1/48",
                    "snr_db": 0.0,
                    "method": method,
                    "variant": f"dataset={data}",
                    "variant_without_data": "",
                    "metric": "psnr",
                    "mean": psnr + (0.0 if matched else 5.25),
                    "matched": matched,
                }
            )
    assert drop_rows(rows)
    csv_path, md_path = write_drop(rows, tmp_path)
    page = tmp_path / "page.md"
    page.write_text(f"<!-- generated: {csv_path.name} drop -->\nstale\n<!-- /generated -->\n")
    new, changed = regenerate(page, tmp_path)
    assert changed and md_path.read_text() in new
    assert "15.000 → 20.250 (+5.250)" in new and "-0.500 → -0.500" in new
