"""What a run prints: the results table of a finished run (:func:`print_results`), the method ×
metric table of a restoration run and one line per method saying what ran."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table

from singexp.console import said
from singexp.models.inn import read_inn_metadata
from singexp.points import TRIVIAL
from singexp.report import LABELS, METHOD_NAMES, METRICS, QUICK_NOTE, better
from singexp.samplers.sing_zero import SIGMA_Y_AUTO

#: row names of the printed restoration table (metrics.json keeps the keys; the method lines
#: under it name the samplers by them too): the trivial baseline by its report name
METHOD_LABELS = {TRIVIAL: METHOD_NAMES[TRIVIAL]}
#: column headings of the printed table beyond report.LABELS
COLUMN_LABELS = {"seconds_per_image": "s / image"}


def format_metric(key: str, value: float | None) -> str:
    """A table cell: dB and SWD to 2 decimals, unit-less scores (SSIM, LPIPS) to 4."""
    if value is None:
        return "missing" if key != "seconds_per_image" else "–"
    if key == "seconds_per_image":  # wall time of the method's own call (modules/restoration.py)
        return f"{value:.3g}"
    return f"{value:.2f}" if key.startswith("psnr") or key == "swd" else f"{value:.4f}"


#: the mark of a cell where the trivial baseline beats the method
TRIVIAL_WINS = "†"


def trivial_wins(metric: str, trivial: dict[str, Any], summary: dict[str, Any]) -> bool:
    """Whether the mean image's ``metric`` is better than a method's (both measured; time is
    not a metric of quality)."""
    if metric not in METRICS:
        return False
    a, b = trivial.get(metric), summary.get(metric)
    return a is not None and b is not None and better(metric, float(a), float(b))


def print_method_table(results: dict[str, Any]) -> None:
    """Method × metric table of a restoration run (headings with units: :data:`report.LABELS`;
    MS-SSIM when it was computed; SWD ×10³)."""
    methods: dict[str, dict[str, Any]] = results["methods"]
    keys = [
        k
        for k in (
            "psnr",
            "ssim",
            "ms_ssim",
            "stlpips",
            "lpips",
            "swd",
            "psnr_A_xhat",
            "psnr_A_x",
            "seconds_per_image",
        )
        if any(
            m.get(k) is not None or (k in m and k not in ("ms_ssim", "seconds_per_image"))
            for m in methods.values()
        )
    ]
    title = (
        f"{results['dataset']} · {results['channel']} SNR {results['snr_db']} dB · "
        f"BCR {results['bcr']} · {next(iter(methods.values())).get('images', 0)} images"
    )
    if results.get("evaluated_split", "test") != "test":  # a tuning trial: validation images
        title += f" ({results['evaluated_split']} split)"
    table = Table(title=title, min_width=len(title))  # a title on one line
    table.add_column("method")
    for key in keys:
        table.add_column(COLUMN_LABELS.get(key) or LABELS[key], justify="right")
    trivial = methods.get(TRIVIAL) or {}
    beaten = False
    for name, summary in methods.items():
        cells = []
        for k in keys:
            cell = "–" if k not in summary else format_metric(k, summary[k])
            if name != TRIVIAL and trivial_wins(k, trivial, summary):
                cell, beaten = f"{cell} {TRIVIAL_WINS}", True
            cells.append(cell)
        table.add_row(METHOD_LABELS.get(name, name), *cells)
    # a log or pipe is 80 columns to rich: give the table the width it needs instead
    console = Console()
    Console(width=None if console.is_terminal else 160).print(table)
    if beaten:
        print(
            f"{TRIVIAL_WINS} the mean image (the trivial baseline, which ignores the channel) "
            "beats this method on this metric: that number is no evidence for the method"
        )
    if any(k.startswith("psnr_A") for k in keys):
        operator = results.get("operator") or {}
        print(
            f"consistency through A = {operator.get('name')} (scale {operator.get('scale')}): "
            "PSNR(Ax̃,Ax̂) = agreement with what was received, PSNR(Ax̃,Ax) = with the original"
        )
    for name, record in (results.get("samplers") or {}).items():
        print(f"{name}: {describe_sampler(record)}")


#: SING-INN's ``gradient`` as the method line says it (samplers/sing_inn.py)
GRADIENT_FORMS = {
    "dps": "DPS-form gradient through the UNet (default; docs/guide/methods.md)",
    "autograd": "x0-space gradient (autograd)",
    "constant": "x0-space step with x_inv held constant",
}


def describe_sampler(record: dict[str, Any]) -> str:
    """One line saying which variant, update form and clipping a method ran (metrics.json)."""
    parts: list[str] = []
    if record.get("name") in ("diffpir", "ddrm"):  # deepinv's samplers: no update form or η_t
        return describe_deepinv(record)
    if record.get("name") == "sing_inn":
        variant = record.get("variant")
        every, last = record.get("guidance_every", 1), record.get("guidance_last")
        within = f" within the last {last}" if last is not None else ""
        # ours (samplers/base.py GuidanceSteps): guidance on a subset of the steps
        subset = f"at one step in {every}{within}" if every != 1 or last is not None else ""
        if variant != "algorithm2":
            guided = f", guided {subset}" if subset else ""
            parts.append(
                f"{variant} (not the paper's: DDNM until t < {record.get('switch_t')}, then INN"
                f"{guided})"
            )
        elif subset:
            parts.append(
                f"Algorithm 2's INN guidance {subset} (ours, for few NFE; the paper guides at "
                "every step)"
            )
        else:
            parts.append("Algorithm 2 (INN guidance at every step)")
        gradient = record.get("gradient")
        parts.append(
            f"{GRADIENT_FORMS.get(str(gradient), f'gradient {gradient}')}, ζ {record.get('zeta')} "
            f"({record.get('zeta_schedule')})"
        )
    elif record.get("name") == "dps_jscc":
        parts.append("DPS (Chung et al. 2023) through the DeepJSCC chain")
    elif record.get("name") == "inverse_jscc":
        parts.append(f"InverseJSCC (Erdemir et al. 2023), generator: {record.get('generator')}")
    elif record.get("name") == "sing_zero":
        sigma_y = record.get("sigma_y")
        if sigma_y == SIGMA_Y_AUTO:
            parts.append(f"DDNM+ σ_y auto = {record.get('sigma_y_measured', float('nan')):.4f}")
        else:
            parts.append("DDNM (noise-free)" if not sigma_y else f"DDNM+ σ_y {sigma_y}")
    parts.append(
        f"update {record.get('update')}, η {record.get('eta')}, {record.get('steps')} steps "
        f"({record.get('scheduler')}), clip_x0 {'on' if record.get('clip_x0') else 'off'}"
    )
    if record.get("nfe") is not None:  # samplers/nfe.py
        parts[-1] += (
            f", NFE {record['nfe']} ({record.get('unet_forward')} UNet forward + "
            f"{record.get('unet_backward')} backward)"
        )
    if record.get("name") == "sing_inn":  # samplers/sing_inn.py: always, whatever clip_x0 says
        parts[-1] += ", INN input clipped to [-1,1] each step"
    if record.get("measurement_operator"):
        parts.append(f"A = {record['measurement_operator']}")
    return "; ".join(parts)


def describe_deepinv(record: dict[str, Any]) -> str:
    """The method line of DiffPIR or DDRM (samplers/deepinv_methods.py): the algorithm, its
    parameters, steps and NFE, σ_y as it ran, the physics."""
    if record.get("name") == "diffpir":
        params = f"λ {record.get('lambda_')}, ζ {record.get('zeta')}"
    else:
        params = f"η {record.get('eta')}, η_b {record.get('eta_b')}"
    sigma_y = record.get("sigma_y")
    if sigma_y == SIGMA_Y_AUTO:
        sigma_y = f"auto = {record.get('sigma_y_measured', float('nan')):.4f}"
    return "; ".join(
        [
            str(record.get("algorithm")),
            f"{params}, {record.get('steps')} steps ({record.get('nfe')} NFE), σ_y {sigma_y}",
            f"{record.get('physics')}",
        ]
    )


#: what train_inn's validation metrics mean (``<name>_snr<S>``: at channel SNR S dB)
INN_METRIC_LEGEND = (
    "<metric>_snr<S>: at channel SNR S dB; psnr_c: PSNR (dB) of the INN's coarse part c against "
    "the measurement A x̂; psnr_x: of the inverse f⁻¹(A x̂, d) against x; psnr_jscc: DeepJSCC's "
    "x̂ against x; mse_c: ‖c − A x̂‖²; loss_d: mean ‖d‖²; psnr: psnr_c averaged over the SNRs"
)


def _metric_label(key: str) -> str:
    """A results key as a table row: units where known (``swd`` → ``SWD (×10³) ↓``)."""
    if key in LABELS:
        return LABELS[key]
    if key.startswith("swd_"):
        return f"SWD (×10³) at {key[4:]} px"
    return key


def _inn_snr_range(results: dict[str, Any]) -> str:
    """``trained on SNR -5 … 5 dB`` from the INN's own hyper-parameters (else the SNRs it was
    validated at)."""
    low_high = None
    try:
        hparams = read_inn_metadata(results["inn"])["hparams"]
        low_high = [float(v) for v in hparams["train_snr"]]
    except Exception:  # an older file without them: the validation SNRs
        tags = [re.fullmatch(r".+_snr(-?[\d.]+)", key) for key in results.get("validation") or {}]
        snrs = [float(m.group(1)) for m in tags if m]
        if snrs:
            return f"validated at SNR {', '.join(f'{v:g}' for v in sorted(set(snrs)))} dB"
        return f"SNR {results.get('snr_db')} dB"
    low, high = low_high
    return f"trained on SNR {low:g} dB" if low == high else f"trained on SNR {low:g} … {high:g} dB"


#: the widest note line under a run (longer ones are cut at their first clause)
NOTE_WIDTH = 160


def one_line(text: str, width: int = NOTE_WIDTH) -> str:
    """``text`` on one line of at most ``width`` characters: cut at its first ``; `` clause
    when longer, then with an ellipsis."""
    text = " ".join(text.split())
    if len(text) > width and "; " in text:
        text = text.split("; ", 1)[0] + " (…)"
    return text if len(text) <= width else text[: width - 1] + "…"


def run_notes(results: dict[str, Any]) -> list[str]:
    """The notes and warnings of a finished run, one line each, without those this process
    has shown already (a warning logged while it ran: :func:`singexp.console.said`)."""
    lines = []
    for key, why in results.get("metric_status", {}).items():
        if why != "ok" and not said(why.split(": ", 1)[-1]):
            lines.append(one_line(f"note: {key}: {why}"))
    for warning in results.get("warnings") or []:
        if not said(warning):
            lines.append(one_line(f"warning: {warning}"))
    return list(dict.fromkeys(lines))


def print_results(results: dict[str, Any]) -> None:
    """The finished run's notes and warnings (each once, one line), then its table (a
    restoration run's methods, a prior's folder, a codec's or an INN's metrics): the table and
    its method lines are the last lines of the run."""
    for line in run_notes(results):
        print(line)
    if results.get("quick") and results.get("task") != "prior":  # the line above the table
        print(QUICK_NOTE)
    if "methods" in results:
        print_method_table(results)
    elif results.get("task") == "prior":  # no test metrics: say where the weights went
        exported = f" (also copied to {results['export_to']})" if results.get("export_to") else ""
        print(f"prior · {results.get('dataset')}: EMA weights in {results.get('prior')}{exported}")
    else:
        print_metric_table(results)


def print_metric_table(results: dict[str, Any]) -> None:
    """The metric × value table of a DeepJSCC or INN run, with the mean-image baseline."""
    inn = results.get("task") == "inn"
    snr = _inn_snr_range(results) if inn else f"SNR {results['snr_db']} dB"
    channel = results.get("channel")
    title = (
        f"{results['task']} · {results['dataset']} · "
        + (f"{channel} " if channel else "")
        + f"{snr} · BCR {results['bcr']}"
    )
    table = Table(title=title, min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in (results.get("test") or results.get("validation") or {}).items():
        table.add_row(_metric_label(key), "missing" if value is None else f"{value:.4f}")
    for key, value in results.get("baseline_mean_image", {}).items():
        table.add_row(f"mean-image baseline {_metric_label(key)}", f"{value:.4f}")
    Console().print(table)
    if inn:
        print(INN_METRIC_LEGEND)
