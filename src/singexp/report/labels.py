"""What a report's rows are: the metrics it knows, their column headings and direction
(higher or lower is better), and the order of its rows (BCR, SNR, method, variant, metric)."""

from __future__ import annotations

from typing import Any

METRICS = ("psnr", "ssim", "ms_ssim", "stlpips", "lpips", "swd", "psnr_A_xhat", "psnr_A_x")


#: column headings of printed and written tables (SWD is stored ×10³: metrics.swd)
LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "stlpips": "ST-LPIPS ↓",
    "lpips": "LPIPS ↓",
    "swd": "SWD (×10³) ↓",
    # consistency through SING-Zero's A (singexp.modules.restoration): with what was received,
    # and with the original
    "psnr_A_xhat": "PSNR(Ax̃,Ax̂) (dB)",
    "psnr_A_x": "PSNR(Ax̃,Ax) (dB)",
}


#: the line above the results table of a ``quick=true`` run or report (metrics.json ``quick``)
QUICK_NOTE = (
    "quick=true: smoke-test settings (few images, few sampler steps): these numbers show that "
    "the run works; they do not measure the methods"
)


#: metrics where lower is better (the ↓ of LABELS); the others: higher is better
LOWER_IS_BETTER = frozenset({"stlpips", "lpips", "swd"})


def short_name(metric: str) -> str:
    """``PSNR``, ``ST-LPIPS``, ``SWD``: a metric's name without unit or direction."""
    return LABELS.get(metric, metric.upper()).split(" ")[0]


#: methods as readers know them (figure legends, printed tables); a metrics.json key otherwise
METHOD_NAMES = {
    "mean_image": "mean image (trivial)",
    "deepjscc": "DeepJSCC",
    "sing_zero": "SING-Zero",
    "sing_inn": "SING-INN",
    "dps_jscc": "DPS-JSCC",
    "inverse_jscc": "InverseJSCC",
    "diffpir": "DiffPIR",
    "ddrm": "DDRM",
}

#: the order of a report's methods: the trivial baseline, the codec, SING-Zero, SING-INN, the
#: baselines; any other method after them, alphabetically
METHOD_ORDER = (
    "mean_image",
    "deepjscc",
    "sing_zero",
    "sing_inn",
    "dps_jscc",
    "inverse_jscc",
    "diffpir",
    "ddrm",
)


def display_name(method: str) -> str:
    """``SING-Zero · A=fitted`` for the line ``sing_zero · A=fitted``: the method's name as
    readers know it (:data:`METHOD_NAMES`), its ``· variant`` suffix kept."""
    base, sep, variant = str(method).partition(" · ")
    return METHOD_NAMES.get(base, base) + sep + variant


def method_order(method: str) -> tuple[int, str]:
    """Sort key of a method (or a ``method · variant`` line): :data:`METHOD_ORDER`, then any
    other method alphabetically; the one ordering of tables and figures."""
    base = str(method).partition(" · ")[0]
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (rank, base)


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """(BCR, SNR, method, variant, metric): the order of ``results.csv`` and the Markdown
    table; methods in :func:`method_order`."""
    metric = METRICS.index(row["metric"]) if row["metric"] in METRICS else len(METRICS)
    values = list((row.get("keys") or {}).values()) or [str(row.get("variant") or "")]
    variant = tuple(_sortable(v) for v in values)  # numbers by value: seed=2 before seed=10
    method = method_order(row["method"])
    return (_bcr_value(row["bcr"]), row["snr_db"], method, str(row["method"]), variant, metric)


def _sortable(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _bcr_value(bcr: str) -> float:
    num, _, den = str(bcr).partition("/")
    return float(num) / float(den) if den else float(num)
