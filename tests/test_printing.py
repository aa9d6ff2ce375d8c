"""The tables a run prints: units, channel, the INN's training SNRs and a metric legend."""

from __future__ import annotations

from typing import Any

import pytest

from singexp.printing import print_results

RUN = {"dataset": "shapes", "channel": "awgn", "snr_db": -5.0, "bcr": "1/768", "seed": 0}


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_restoration_table_has_units_ms_ssim_and_swd_scale(capsys: Any) -> None:
    methods = {
        m: {"psnr": 20.0, "ssim": 0.5, "ms_ssim": 0.7, "stlpips": 0.3, "lpips": None, "swd": 40.0}
        for m in ("deepjscc", "sing_zero")
    }
    print_results({**RUN, "task": "restore", "methods": methods})
    out = capsys.readouterr().out
    for heading in ("PSNR (dB)", "MS-SSIM", "ST-LPIPS ↓", "SWD (×10³) ↓", "awgn SNR -5.0 dB"):
        assert heading in out, out
    assert "missing" in out  # LPIPS without weights


def test_ms_ssim_column_only_when_computed(capsys: Any) -> None:
    methods = {"deepjscc": {"psnr": 20.0, "ssim": 0.5, "ms_ssim": None}}
    print_results({**RUN, "task": "restore", "methods": methods})
    assert "MS-SSIM" not in capsys.readouterr().out


def test_jscc_title_names_the_channel(capsys: Any) -> None:
    run = {**RUN, "channel": "rayleigh"}
    print_results({**run, "task": "jscc", "test": {"psnr": 21.0, "swd": 30.0, "swd_16": 20.0}})
    out = capsys.readouterr().out
    assert "jscc · shapes · rayleigh SNR -5.0 dB · BCR 1/768" in out
    assert "SWD (×10³) ↓" in out and "SWD (×10³) at 16 px" in out


def test_train_inn_title_says_its_snrs_and_explains_the_metric_names(capsys: Any) -> None:
    validation = {"psnr_c_snr-5": 30.0, "psnr_c_snr0": 31.0, "psnr_c_snr5": 32.0, "psnr": 31.0}
    # no readable INN file: the validation SNRs are what it can say
    print_results({**RUN, "task": "inn", "inn": "/nonexistent.ckpt", "validation": validation})
    out = capsys.readouterr().out
    assert "validated at SNR -5, 0, 5 dB" in out and "SNR -5.0 dB" not in out
    assert "psnr_c: PSNR (dB) of the INN's coarse part" in out and "loss_d" in out


def test_train_inn_title_reads_the_training_range(monkeypatch: Any, capsys: Any) -> None:
    import singexp.printing as printing

    monkeypatch.setattr(
        printing, "read_inn_metadata", lambda path: {"hparams": {"train_snr": [-5.0, 5.0]}}
    )
    print_results({**RUN, "task": "inn", "inn": "x.safetensors", "validation": {"psnr": 31.0}})
    assert "inn · shapes · awgn trained on SNR -5 … 5 dB · BCR 1/768" in capsys.readouterr().out


def test_time_per_image_column_and_baseline_lines(capsys: Any) -> None:
    methods = {
        "deepjscc": {"psnr": 16.0, "seconds_per_image": 0.0239},
        "dps_jscc": {"psnr": 14.5, "seconds_per_image": 10.06},
        "mean_image": {"psnr": 11.7, "seconds_per_image": None},
    }
    samplers = {
        "dps_jscc": {"name": "dps_jscc", "steps": 100, "eta": 1.0},
        "inverse_jscc": {"name": "inverse_jscc", "generator": "the prior's DDIM map"},
    }
    print_results({**RUN, "task": "restore", "methods": methods, "samplers": samplers})
    out = capsys.readouterr().out
    assert "s / image" in out and "10.1" in out and "0.0239" in out, out
    assert "dps_jscc: DPS (Chung et al. 2023) through the DeepJSCC chain" in out
    assert "inverse_jscc: InverseJSCC (Erdemir et al. 2023), generator: the prior's DDIM" in out


def test_no_time_column_without_timings(capsys: Any) -> None:
    print_results({**RUN, "task": "restore", "methods": {"deepjscc": {"psnr": 16.0}}})
    assert "s / image" not in capsys.readouterr().out


def test_sing_inn_line_says_its_gradient_form_and_the_inn_input_clipping() -> None:
    from singexp.printing import describe_sampler

    record = {
        "name": "sing_inn",
        "variant": "algorithm2",
        "gradient": "dps",
        "zeta": 1.0,
        "zeta_schedule": "sqrt_alpha_bar",
        "update": "posterior",
        "eta": 0.85,
        "steps": 100,
        "scheduler": "ddim",
        "clip_x0": False,
    }
    line = describe_sampler(record)
    assert "\n" not in line
    assert line.startswith(
        "Algorithm 2 (INN guidance at every step); DPS-form gradient through the UNet "
        "(default; docs/guide/methods.md), ζ 1.0"
    )
    assert "clip_x0 off, INN input clipped to [-1,1] each step" in line
    assert "x0-space gradient (autograd)" in describe_sampler({**record, "gradient": "autograd"})
    zero = describe_sampler({**record, "name": "sing_zero", "sigma_y": 0})
    assert "INN input" not in zero


def test_the_line_says_the_scheduler_and_nfe_of_what_ran() -> None:
    """Issue 40: every method's line says its scheduler and NFE (UNet forward + backward), as
    method_record writes them into metrics.json."""
    from singexp.assembly import method_record
    from singexp.printing import describe_sampler
    from singexp.samplers import check_method

    raw = {"name": "sing_inn", "scheduler": "dpmsolver++", "eta": 0.0, "steps": 10}
    line = describe_sampler(method_record(check_method(raw), None, None, None))
    assert "10 steps (dpmsolver++)" in line
    assert "NFE 19 (10 UNet forward + 9 backward)" in line
    every = {**raw, "guidance_every": 2}
    line = describe_sampler(method_record(check_method(every), None, None, None))
    assert "NFE 15 (10 UNet forward + 5 backward)" in line
    assert "guidance at one step in 2 (ours" in line and "at every step" not in line.split(";")[0]
    last = describe_sampler(
        method_record(check_method({**every, "guidance_last": 4}), None, None, None)
    )
    assert "at one step in 2 within the last 4 (ours" in last
    two_phase = {**every, "variant": "two_phase"}
    line = describe_sampler(method_record(check_method(two_phase), None, None, None))
    assert "then INN, guided at one step in 2)" in line  # the subset is said for every variant
    zero = method_record(check_method({"name": "sing_zero"}), None, None, None)
    assert (zero["nfe"], zero["scheduler"]) == (100, "ddim")


def test_a_quick_run_says_above_its_table_that_its_numbers_measure_nothing(capsys: Any) -> None:
    from singexp.report import QUICK_NOTE

    methods = {"sing_inn": {"psnr": 8.6}, "mean_image": {"psnr": 11.5}}
    print_results({**RUN, "task": "restore", "methods": methods, "quick": True})
    lines = capsys.readouterr().out.splitlines()
    assert QUICK_NOTE in lines and "smoke-test" in QUICK_NOTE and "do not measure" in QUICK_NOTE
    title = next(i for i, line in enumerate(lines) if "shapes · awgn" in line)
    assert lines.index(QUICK_NOTE) < title  # one line, above the table
    print_results({**RUN, "task": "restore", "methods": methods})  # a full run: no such line
    assert "smoke-test" not in capsys.readouterr().out
    print_results({**RUN, "task": "jscc", "test": {"psnr": 20.0}, "quick": True})
    assert QUICK_NOTE in capsys.readouterr().out.splitlines()
