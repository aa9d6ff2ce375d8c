"""Results tables in the documentation, generated from committed result files.

A Markdown page (``README.md``, ``docs/**/*.md``) marks each generated table with a pair of
HTML comments::

    <!-- generated: docs/results/data/main_job.json restoration -->
    ...the generated text...
    <!-- /generated -->

The opening marker names the source file (relative to the repository root), the *kind* of
table (a renderer of :data:`KINDS`) and optional ``key=value`` options (a value with spaces is
written with ``+`` for each space). Everything between the markers is what the renderer makes
of the source file; nothing there is written by hand. ``python tools/doc_tables.py`` (``make
docs-tables``) rewrites every block from its source, ``--check`` lists the blocks (and the whole
generated files of :data:`GENERATED_FILES`) that differ and exits with status 1.

Repository tooling, not part of the installed package: it reads ``benchmarks/*.py`` and the
committed result files by path, and imports :mod:`singexp` (installed, or on ``PYTHONPATH``).

Sources:

- a restoration run's ``metrics.json`` (``restoration``): the method × metric table the run
  prints (:mod:`singexp.printing`'s formatting rules, its † mark and its sampler lines);
- a benchmark's JSON (``benchmark``): the table that the benchmark's own ``markdown``/``table``
  function writes into its ``benchmarks/results/*.md``;
- ``experiments/sampler_variants/results.json`` (``sampler_variants``);
- a report of :mod:`singexp.report` (``pivot``, ``select``): a committed ``results.md``-style
  table (BCR, SNR, method, variant, one column per metric), reshaped or filtered, its numbers
  rounded, never recomputed.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

#: ``<!-- generated: SOURCE KIND [key=value ...] -->`` … ``<!-- /generated -->``
BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)",
    re.S,
)
#: a generated file as a whole (page → its source): report output checked like a block
GENERATED_FILES = {"docs/paper_grid/results.md": "docs/paper_grid/results.csv"}

#: row names of a restoration table (metrics.json keys otherwise)
METHOD_NAMES = {
    "mean_image": "trivial baseline: the mean training image",
    "deepjscc": "DeepJSCC",
    "sing_zero": "SING-Zero",
    "sing_inn": "SING-INN",
    "dps_jscc": "DPS-JSCC",
    "inverse_jscc": "InverseJSCC",
    "diffpir": "DiffPIR",
    "ddrm": "DDRM",
    "ddrm_100": "DDRM (100 steps)",
    "diffpir_jscc": "DiffPIR through the chain",
}
#: columns of a restoration table, in this order (those measured for some method)
RESTORATION_COLUMNS = ("psnr", "ssim", "ms_ssim", "stlpips", "lpips", "swd")
CONSISTENCY_COLUMNS = ("psnr_A_xhat", "psnr_A_x")
#: report columns by short name (the metrics by their metrics.json key)
REPORT_KEYS = {"bcr": "BCR", "snr": "SNR (dB)", "method": "method", "variant": "variant"}


@dataclass(frozen=True)
class Block:
    """One generated block of a page: where it is and what makes it."""

    page: Path
    source: str
    kind: str
    options: dict[str, str]
    body: str
    start: int  # offset of the body in the page's text
    end: int

    @property
    def spec(self) -> str:
        """The block as its marker names it."""
        return f"{self.source} {self.kind}"


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``SOURCE KIND key=value ...`` → (source, kind, options); ``+`` in a value is a space."""
    words = spec.split()
    if len(words) < 2:
        raise ValueError(f"generated block needs a source and a kind: {spec!r}")
    options = {}
    for word in words[2:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"option {word!r} of {spec!r} is not key=value")
        options[key] = value.replace("+", " ")
    return words[0], words[1], options


def blocks(page: Path) -> list[Block]:
    """The generated blocks of a Markdown page, in order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        source, kind, options = parse_spec(match["spec"])
        found.append(
            Block(
                page, source, kind, options, match["body"], match.start("body"), match.end("body")
            )
        )
    return found


def strip_blocks(text: str) -> str:
    """``text`` without the bodies of its generated blocks (markers kept)."""
    return BLOCK.sub(lambda m: m["open"] + m["close"], text)


def pages(root: Path) -> list[Path]:
    """Every page the documentation holds: README.md and docs/**/*.md."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").rglob("*.md"))


# -- Markdown helpers ------------------------------------------------------------------------


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``text`` as rows of {heading: cell}."""
    tables: list[list[dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if (
            lines[i].startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip())
        ):
            headers = split_row(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(headers, split_row(lines[i]), strict=False)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def round_text(cell: str, digits: int) -> str:
    """A number written in a table (``14.905``, ``0.685 ± 0.086``: the mean) to ``digits``
    decimals, half up, as written (no float round trip); other cells as they are."""
    value = cell.split("±")[0].strip()
    try:
        number = Decimal(value)
    except InvalidOperation:
        return cell
    return str(number.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def natural_key(text: str) -> list[Any]:
    """``steps=25`` before ``steps=100``: numbers in a label compare as numbers."""
    return [
        float(p) if re.fullmatch(r"-?\d+(\.\d+)?", p) else p
        for p in re.split(r"(-?\d+(?:\.\d+)?)", text)
    ]


# -- renderers -------------------------------------------------------------------------------


def _fmt(key: str, value: float) -> str:
    """A restoration cell: dB to 2 decimals, SWD (×10³) to 1, unit-less scores to 3."""
    if key.startswith("psnr"):
        return f"{value:.2f}"
    return f"{value:.1f}" if key == "swd" else f"{value:.3f}"


def render_restoration(source: Path, options: dict[str, str]) -> str:
    """A restoration run's ``metrics.json`` as the method × metric table it printed: the
    mean-image row first, the best value of each column among the methods in bold, † where the
    mean image beats a method (:func:`singexp.printing.trivial_wins`), then the run's point and
    one line per sampler saying what ran (:func:`singexp.printing.describe_sampler`)."""
    from singexp.printing import TRIVIAL_WINS, describe_sampler, trivial_wins
    from singexp.report import LABELS, better

    results = json.loads(source.read_text(encoding="utf-8"))
    methods: dict[str, dict[str, Any]] = results["methods"]
    order = ["mean_image"] + [m for m in methods if m != "mean_image"]
    order = [m for m in order if m in methods]
    keys = [
        k
        for k in RESTORATION_COLUMNS + CONSISTENCY_COLUMNS
        if any(methods[m].get(k) is not None for m in order)
    ]
    trivial = methods.get("mean_image") or {}
    shown = {
        m: {k: _fmt(k, methods[m][k]) for k in keys if methods[m].get(k) is not None} for m in order
    }
    best: dict[str, str] = {}
    for k in keys:
        for m in order:
            if m == "mean_image" or k not in shown[m]:
                continue
            if k not in best or better(k, float(shown[m][k]), float(best[k])):
                best[k] = shown[m][k]
    rows = []
    for m in order:
        cells = []
        for k in keys:
            cell = shown[m].get(k, "–")
            if m != "mean_image" and cell == best.get(k):
                cell = f"**{cell}**"
            if m != "mean_image" and trivial_wins(k, trivial, methods[m]):
                cell = f"{cell} {TRIVIAL_WINS}"
            cells.append(cell)
        if options.get("seconds"):  # the time cost: wall seconds per image of each method
            spent = methods[m].get("seconds_per_image")
            cells.append("–" if spent is None else f"{float(spent):.2f}")
        rows.append([METHOD_NAMES.get(m, m), *cells])
    images = next(iter(methods.values())).get("images")
    lines = [
        f"{results['dataset']} {results.get('image_size')} px · {results['channel']} SNR "
        f"{results['snr_db']:g} dB · BCR {results['bcr']} · {images} test images, seed "
        f"{results.get('seed')} (source: `{options.get('name', source.name)}`)",
        "",
        md_table(
            [
                "method",
                *(LABELS[k] for k in keys),
                *(["s / image"] if options.get("seconds") else []),
            ],
            rows,
        ),
        "",
    ]
    missing = [
        k for k, why in (results.get("metric_status") or {}).items() if why.startswith("missing")
    ]
    if missing:
        lines.append(f"Not measured: {', '.join(missing)} (missing weights offline).")
        lines.append("")
    lines += [
        f"- `{name}`: {describe_sampler(record)}"
        for name, record in (results.get("samplers") or {}).items()
    ]
    return "\n".join(lines)


def render_sampler_variants(source: Path, options: dict[str, str]) -> str:
    """``experiments/sampler_variants/results.json``: one row per sampler variant."""
    record = json.loads(source.read_text(encoding="utf-8"))
    rows = []
    for name, r in record["results"].items():
        if name not in record["variants"]:
            continue
        rows.append(
            [
                name,
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.3f}",
                f"{r['stlpips']:.3f}",
                f"{r['swd']:.1f}",
                f"{r['consistency_psnr_A_xhat']:.1f}",
                f"{r['grid_energy_p2']:.3f}",
                f"{r['seconds_per_image']:.2f}",
            ]
        )
    headers = ["variant", "PSNR (dB)", "SSIM", "ST-LPIPS ↓", "SWD (×10³) ↓"]
    headers += ["PSNR(A x̃, A x̂)", "grid p2", "s / image"]
    point = record["point"]
    return (
        f"{point['images']} images, {point['dataset']}, AWGN {point['snr_db']:g} dB, BCR "
        f"{point['bcr']}, {point['operator']}; grid p2 of the originals: "
        f"{record['originals']['grid_energy_p2']:.3f}\n\n" + md_table(headers, rows)
    )


def _load_script(path: Path) -> ModuleType:
    """A benchmark script as a module (its folder on sys.path for its sibling imports)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"_doc_tables_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def render_benchmark(source: Path, options: dict[str, str]) -> str:
    """A benchmark's JSON through the benchmark's own Markdown writer (``script=`` the script,
    by default ``benchmarks/<json stem>.py``; ``function=`` ``markdown`` or ``table``): its
    table (``table=N``: its N-th), and with ``notes=true`` the lines right after it."""
    root = _root_of(source)
    script = root / options.get("script", f"benchmarks/{source.stem}.py")
    module = _load_script(script)
    writer: Callable[[dict[str, Any]], str] = getattr(module, options.get("function", "markdown"))
    text = writer(json.loads(source.read_text(encoding="utf-8")))
    lines = text.splitlines()
    last = 0
    for _ in range(int(options.get("table", "1"))):  # table=N: the N-th table of the page
        first = next(i for i in range(last, len(lines)) if lines[i].startswith("|"))
        last = first
        while last < len(lines) and lines[last].startswith("|"):
            last += 1
    out = lines[first:last]
    if options.get("notes") == "true":
        notes: list[str] = []
        for line in lines[last:]:
            if not line.strip():
                if notes:
                    break
                continue
            notes.append(line)
        out += ["", *notes]
    return "\n".join(out)


def _report_table(source: Path, options: dict[str, str]) -> list[dict[str, str]]:
    """The report table of a committed page (``table=N``: the N-th table with a method column,
    counted from 0; tables inside generated blocks are not read)."""
    text = strip_blocks(source.read_text(encoding="utf-8"))
    tables = [t for t in md_tables(text) if t and "method" in t[0]]
    return tables[int(options.get("table", "0"))]


def _column(key: str) -> str:
    """A report table's heading for a short key (``snr``, ``stlpips``, ...; else the heading
    itself)."""
    from singexp.report import LABELS

    return REPORT_KEYS.get(key) or LABELS.get(key) or key


def _cell(row: dict[str, str], metric: str, digits: str | None = None) -> str:
    """A report cell's mean (its ± CI dropped), rounded to ``digits`` decimals if given."""
    cell = row[_column(metric)]
    return round_text(cell, int(digits)) if digits else cell.split("±")[0].strip()


def _order(key: str, value: str) -> list[Any]:
    """Sort key of a report value: a BCR by its ratio (1/96 before 1/24), others naturally."""
    if key == "bcr":
        num, _, den = value.partition("/")
        return [float(num) / float(den or 1)]
    return natural_key(value)


def render_pivot(source: Path, options: dict[str, str]) -> str:
    """A report table reshaped: one row per value of ``rows=`` (short keys, e.g. ``bcr,snr``),
    one column per (method of ``methods=``, value of ``cols=``), each cell the metrics of
    ``cell=`` (e.g. ``stlpips/psnr``) as the report wrote their means (``digits=N``: rounded
    half up to N decimals); ``ref=`` a method shown once per row, first (its numbers do not
    depend on ``cols``)."""
    table = _report_table(source, options)
    row_keys = options["rows"].split(",")
    col_key = options.get("cols", "variant")
    methods = options["methods"].split(",")
    metrics = options.get("cell", "stlpips/psnr").split("/")
    ref = options.get("ref")

    def key_of(row: dict[str, str], keys: list[str]) -> tuple[str, ...]:
        return tuple(row[_column(k)] for k in keys)

    row_values = sorted(
        {key_of(r, row_keys) for r in table},
        key=lambda value: [_order(k, v) for k, v in zip(row_keys, value, strict=True)],
    )
    cols = sorted(
        {r[_column(col_key)] for r in table if r["method"] in methods},
        key=lambda value: _order(col_key, value),
    )
    digits = options.get("digits")
    lookup = {(key_of(r, row_keys), r["method"], r[_column(col_key)]): r for r in table}
    pairs = [(m, c) for m in methods for c in cols if any(k[1:] == (m, c) for k in lookup)]
    headers = [_column(k) for k in row_keys]
    if ref:
        headers.append(METHOD_NAMES.get(ref, ref))
    for method, col in pairs:
        name = METHOD_NAMES.get(method, method)
        if col_key == "method":
            headers.append(name)
        else:
            headers.append(col.split("=", 1)[-1] if len(methods) == 1 else f"{name} {col}")
    rows = []
    for value in row_values:
        cells = list(value)
        if ref:
            first = next(r for (k, m, _), r in lookup.items() if k == value and m == ref)
            cells.append(" / ".join(_cell(first, m, digits) for m in metrics))
        for method, col in pairs:
            row = lookup.get((value, method, col))
            cells.append("—" if row is None else " / ".join(_cell(row, m, digits) for m in metrics))
        rows.append(cells)
    return md_table(headers, rows)


def render_select(source: Path, options: dict[str, str]) -> str:
    """The rows of a report table whose method is in ``methods=``, the columns of ``columns=``
    (short keys, or the start of a heading), cells as the report wrote them."""
    table = _report_table(source, options)
    headings = list(table[0])
    columns = [
        next((h for h in headings if h == _column(k)), None)
        or next(h for h in headings if h.startswith(k))
        for k in options["columns"].split(",")
    ]
    methods = options["methods"].split(",")
    rows = [[r[c] for c in columns] for r in table if r["method"] in methods]
    return md_table(columns, rows)


def render_paper_scale_flops(source: Path, options: dict[str, str]) -> str:
    """FLOPs per image of one UNet call and of 100 steps (``benchmarks/paper_scale.json``)."""
    flops = json.loads(source.read_text(encoding="utf-8"))["gflop_per_image"]
    steps = int(options.get("steps", "100"))
    rows = [
        [
            "SING-Zero (forward)",
            f"{flops['forward']:.1f} GFLOP",
            f"{flops['forward'] * steps / 1000:.1f} TFLOP",
        ],
        [
            "SING-INN `gradient=dps` (forward + backward to x_t)",
            f"{flops['forward_backward']:.1f} GFLOP",
            f"{flops['forward_backward'] * steps / 1000:.1f} TFLOP",
        ],
    ]
    return md_table(["", "per UNet call", f"{steps} steps"], rows)


def render_metric_table(source: Path, options: dict[str, str]) -> str:
    """A DeepJSCC run's ``metrics.json``: its test metrics beside the mean-image baseline."""
    from singexp.report import LABELS

    results = json.loads(source.read_text(encoding="utf-8"))
    test = results.get("test") or {}
    baseline = results.get("baseline_mean_image") or {}
    keys = [k for k in RESTORATION_COLUMNS if test.get(k) is not None]
    rows = [
        ["DeepJSCC", *(_fmt(k, float(test[k])) for k in keys)],
        [
            METHOD_NAMES["mean_image"],
            *(_fmt(k, float(baseline[k])) if k in baseline else "—" for k in keys),
        ],
    ]
    return (
        f"{results['dataset']} · {results.get('channel')} SNR {results['snr_db']:g} dB · BCR "
        f"{results['bcr']} · seed {results.get('seed')}\n\n"
        + md_table(["receiver", *(LABELS[k] for k in keys)], rows)
    )


def render_paired(source: Path, options: dict[str, str]) -> str:
    """A report's ``paired.csv`` (``+experiment=comparison``) as its ``paired.md`` says it."""
    from singexp.report import paired_markdown, read_paired

    return paired_markdown(read_paired(source))


def render_drop(source: Path, options: dict[str, str]) -> str:
    """A report's ``drop.csv`` (``+experiment=mismatch``) as its ``drop.md`` says it."""
    from singexp.report.tables import drop_markdown, read_drop

    return drop_markdown(read_drop(source))


def render_tuned(source: Path, options: dict[str, str]) -> str:
    """A ``conf/tuned`` file (``python -m singexp.tuning``): one row per method and key, its
    header's provenance lines under the table."""
    from omegaconf import OmegaConf

    text = source.read_text(encoding="utf-8")
    values: Any = OmegaConf.to_container(OmegaConf.load(source)) or {}
    rows = [
        [
            METHOD_NAMES.get(method, method),
            key,
            f"{value:.4g}" if isinstance(value, float) else str(value),
        ]
        for method, settings in (values.get("methods") or {}).items()
        for key, value in settings.items()
    ]
    said = [
        line[2:] for line in text.splitlines() if line.startswith("# ") and "@package" not in line
    ]
    return md_table(["method", "key", "tuned value"], rows) + "\n\n" + "\n".join(said)


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def render_nfe_front(source: Path, options: dict[str, str]) -> str:
    """``tools/nfe_front.py``'s JSON: per method and NFE budget at one point (``point=``: main,
    low, high), the NFE run, CPU s/image and the paired differences against the method's ref
    (mean ± 95 % CI; ✓: not worse beyond the CI)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    point = options.get("point", "main")
    rows = [r for r in data["rows"] if r["point"] == point]
    methods = [m for m in METHOD_NAMES if any(r["method"] == m for r in rows)]
    rows.sort(
        key=lambda r: (
            methods.index(r["method"]),
            math.inf if r["budget"] == "ref" else float(r["budget"]),
        )
    )
    digits = {"psnr": 2, "ssim": 3, "stlpips": 3, "psnr_A_xhat": 2}

    def itself(r: dict[str, Any]) -> bool:  # the default's own row (a lever's ref is paired)
        return bool(r["budget"] == "ref" and r.get("reference_itself", True))

    def label(r: dict[str, Any]) -> str:
        if r["budget"] != "ref":
            return str(r["budget"])
        return "default" if itself(r) else f"{data.get('lever')} (default steps)"

    def paired(r: dict[str, Any], m: str) -> str:
        if itself(r):
            return f"{r['mean'][m]:.{digits[m]}f}" if r["mean"].get(m) is not None else "–"
        p = r["paired"].get(m)
        if p is None:
            return "–"
        mark = " ✓" if r["not_worse"].get(m) else ""
        return f"{_signed(p['mean'], digits[m])} ± {p['ci95']:.{digits[m]}f}{mark}"

    table = [
        [
            METHOD_NAMES.get(r["method"], r["method"]),
            label(r),
            str(r["nfe"]),
            f"{r['cpu_s_per_image']:.3f}" if r["cpu_s_per_image"] is not None else "–",
            paired(r, "psnr"),
            paired(r, "ssim"),
            paired(r, "stlpips"),
            (f"{r['mean']['swd']:.1f}" if itself(r) else _signed(r["swd_delta"], 1))
            if r["mean"].get("swd") is not None
            else "–",
            paired(r, "psnr_A_xhat"),
        ]
        for r in rows
    ]
    first = rows[0]
    head = (
        f"BCR {first['bcr']}, {first['snr_db']:g} dB · {data.get('images')} test images · "
        f"{data.get('precision')}, {data.get('threads')} thread(s) · {data['cpu']['model']} "
        f"({', '.join(data['cpu']['flags'])}) · CPU seconds per image (process time)"
    )
    headers = [
        "method",
        "NFE budget",
        "NFE",
        "CPU s / image",
        "Δ PSNR (dB)",
        "Δ SSIM",
        "Δ ST-LPIPS ↓",
        "Δ SWD ↓",
        "Δ PSNR(A x̃, A x̂)",
    ]
    return head + "\n\n" + md_table(headers, table)


def render_nfe_fast(source: Path, options: dict[str, str]) -> str:
    """``tools/nfe_front.py``'s JSON: per method the fewest NFE not worse than its default on
    PSNR and ST-LPIPS at every point (paired CI; and by the looser reading, within the
    default's own CI)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    fast = data["fast"]
    rows = []
    for method in METHOD_NAMES:
        strict, loose = fast["not_worse"].get(method), fast["within_ref_ci"].get(method)
        if strict is None:
            continue

        def said(pick: dict[str, Any] | None) -> str:
            if pick is None:
                return "–"
            nfe = "/".join(map(str, pick["nfe"]))
            if pick["budget"] != "ref":
                return f"{pick['budget']} (NFE {nfe})"
            lever = data.get("lever") or "none"  # a lever's sweep: its settings at the default
            return "the default" if lever == "none" else f"{lever} (NFE {nfe})"

        rows.append([METHOD_NAMES[method], said(strict), said(loose), str(strict["points"])])
    headers = [
        "method",
        "fewest NFE not worse beyond the paired 95 % CI",
        "fewest NFE with its Δ within the default's own 95 % CI (either way)",
        "points measured",
    ]
    return md_table(headers, rows)


def render_grid_pairs(source: Path, options: dict[str, str]) -> str:
    """``tools/grid_pairs.py``'s JSON: the fast grid against the 100-step grid. ``summary=1``:
    per method, the points not worse on each measure and the pooled Δ; otherwise per point and
    method the paired Δ PSNR, SSIM, ST-LPIPS (mean ± 95 % CI; ✓: not worse beyond the CI)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    digits = {"psnr": 2, "ssim": 3, "stlpips": 3, "psnr_A_xhat": 2}

    def cell(p: dict[str, Any] | None, m: str, ok: bool | None = None) -> str:
        if p is None:
            return "–"
        mark = " ✓" if ok else ""
        return f"{_signed(p['mean'], digits[m])} ± {p['ci95']:.{digits[m]}f}{mark}"

    if options.get("summary"):
        rows = []
        for method, s in data["summary"].items():
            nfe = sorted(
                {
                    (r["nfe"]["base"], r["nfe"]["fast"])
                    for r in data["rows"]
                    if r["method"] == method
                }
            )
            n = s["points"]
            rows.append(
                [
                    METHOD_NAMES.get(method, method),
                    ", ".join(f"{a} → {b}" for a, b in nfe),
                    f"{s['not_worse_points']['psnr']} of {n}",
                    f"{s['not_worse_points']['stlpips']} of {n}",
                    cell(s["pooled"].get("psnr"), "psnr"),
                    cell(s["pooled"].get("stlpips"), "stlpips"),
                    str(s["pooled"].get("psnr", {}).get("n", "–")),
                ]
            )
        headers = [
            "method",
            "NFE 100-step → fast",
            "points not worse: PSNR",
            "points not worse: ST-LPIPS",
            "pooled Δ PSNR (dB)",
            "pooled Δ ST-LPIPS ↓",
            "image pairs",
        ]
        return md_table(headers, rows)
    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    rows = []
    for r in sorted(
        data["rows"],
        key=lambda r: (Fraction(str(r["bcr"])), r["snr_db"], order.get(r["method"], 99)),
    ):
        rows.append(
            [
                r["bcr"],
                f"{r['snr_db']:g}",
                METHOD_NAMES.get(r["method"], r["method"]),
                f"{r['nfe']['base']} → {r['nfe']['fast']}",
                *(
                    cell(r["paired"].get(m), m, r["not_worse"].get(m))
                    for m in ("psnr", "ssim", "stlpips")
                ),
            ]
        )
    headers = ["BCR", "SNR (dB)", "method", "NFE", "Δ PSNR (dB)", "Δ SSIM", "Δ ST-LPIPS ↓"]
    unpaired = data.get("unpaired") or []
    note = f"\n\nIn one sweep only (not paired): {', '.join(unpaired)}" if unpaired else ""
    return md_table(headers, rows) + note


#: kind → renderer(source file, options) → Markdown
KINDS: dict[str, Callable[[Path, dict[str, str]], str]] = {
    "restoration": render_restoration,
    "sampler_variants": render_sampler_variants,
    "benchmark": render_benchmark,
    "pivot": render_pivot,
    "select": render_select,
    "paper_scale_flops": render_paper_scale_flops,
    "metric_table": render_metric_table,
    "paired": render_paired,
    "drop": render_drop,
    "tuned": render_tuned,
    "nfe_front": render_nfe_front,
    "grid_pairs": render_grid_pairs,
    "nfe_fast": render_nfe_fast,
}


def _root_of(path: Path) -> Path:
    """The repository root above ``path`` (the folder holding pyproject.toml)."""
    for parent in path.resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def render(root: Path, block: Block) -> str:
    """The body a block should have: a blank line, the renderer's text, a blank line."""
    if block.kind not in KINDS:
        raise ValueError(f"{block.page}: unknown kind {block.kind!r} (one of {', '.join(KINDS)})")
    source = root / block.source
    if not source.is_file():
        raise FileNotFoundError(f"{block.page}: source {block.source} does not exist")
    return "\n" + KINDS[block.kind](source, block.options).strip("\n") + "\n\n"


def regenerate(page: Path, root: Path) -> tuple[str, list[Block]]:
    """The page's text with every block regenerated, and the blocks that differed."""
    text = page.read_text(encoding="utf-8")
    changed = []
    pieces = []
    at = 0
    for block in blocks(page):
        body = render(root, block)
        if body != block.body:
            changed.append(block)
        pieces += [text[at : block.start], body]
        at = block.end
    pieces.append(text[at:])
    return "".join(pieces), changed


def report_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a report's ``results.csv``, typed as :func:`singexp.report.write_tables`
    takes them."""
    rows = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            typed: dict[str, Any] = dict(row)
            typed["snr_db"] = float(row["snr_db"])
            typed["mean"] = float(row["mean"])
            typed["ci95"] = float(row["ci95"]) if row["ci95"] else math.nan
            rows.append(typed)
    return rows


def render_report_file(csv_path: Path) -> str:
    """``results.md`` as :func:`singexp.report.write_tables` writes it from ``results.csv``."""
    from singexp.report import write_tables

    with tempfile.TemporaryDirectory() as tmp:
        _, md_path = write_tables(report_rows(csv_path), Path(tmp))
        return md_path.read_text(encoding="utf-8")


def _report_notes(text: str) -> str:
    """The notes a report writes under its table (metrics not measured, failed points: what
    ``results.csv`` does not hold), kept as the page has them."""
    lines = text.splitlines(keepends=True)
    last = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines) - 1)
    return "".join(lines[last + 1 :])


def stale(root: Path) -> Iterator[tuple[Path, str, str]]:
    """(page, what, new text) for every generated block or file that differs from its source."""
    for page in pages(root):
        new, changed = regenerate(page, root)
        for block in changed:
            yield page, f"block {block.spec}", new
    for page_name, source in GENERATED_FILES.items():
        page = root / page_name
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        new = render_report_file(root / source) + _report_notes(text)
        if text != new:
            yield page, f"file from {source}", new


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated blocks (``--check``: list the stale ones, exit 1 if any)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list stale blocks, change nothing")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository root")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    found = list(stale(root))
    for page, what, new in found:
        where = page.relative_to(root)
        if args.check:
            print(f"{where}: {what} differs from what its source generates")
        else:
            page.write_text(new, encoding="utf-8")
            print(f"{where}: {what} regenerated")
    if args.check and found:
        print("run `python tools/doc_tables.py` (make docs-tables) to regenerate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
