"""Issue 41, "nothing misleads, fails late or leaks": non-finite weights refused at load, atomic
result files, one-line errors instead of tracebacks, one-line warnings for silent oddities."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import FAST, run_cli
from singexp.config import ASSETS_DIR
from singexp.errors import ConfigError, SingexpError
from singexp.faults import WriteError, atomic_path

CODEC = ASSETS_DIR / "jscc_shapes32" / "jscc_1_48.safetensors"
INN = ASSETS_DIR / "inn_shapes32" / "inn_1_48.safetensors"
PRIOR = ASSETS_DIR / "prior_shapes32"


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def poisoned(source: Path, target: Path, metadata_from: Path | None = None) -> Path:
    """``source``'s tensors with one value set to NaN (none when ``metadata_from`` is given:
    then the tensors of ``source`` under the metadata of ``metadata_from``), saved at ``target``."""
    meta, tensors = _read(source)
    if metadata_from is None:
        name = sorted(tensors)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[-1] = float("nan")  # one NaN among finite values
    else:
        meta = _read(metadata_from)[0]
    save_file(tensors, str(target), metadata=meta)
    return target


def one_line_error(result: subprocess.CompletedProcess[str], key: str, code: int = 2) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error:")]
    assert len(errors) == 1, out[-3000:]
    assert errors[0].startswith(f"singexp: error: {key}"), errors[0]
    return errors[0]


# ---- 1. NaN weights ---------------------------------------------------------------------------
def test_codec_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    from singexp.models.jscc import load_codec

    path = poisoned(CODEC, tmp_path / "nan.safetensors")
    with pytest.raises(ConfigError, match="non-finite weights") as info:
        load_codec(path)
    assert info.value.key == "jscc.checkpoint" and str(path) in str(info.value)
    load_codec(CODEC)  # the shipped one loads


def test_inn_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    from singexp.models.inn import load_inn

    path = poisoned(INN, tmp_path / "nan_inn.safetensors")
    with pytest.raises(ConfigError, match="non-finite weights") as info:
        load_inn(path)
    assert info.value.key == "inn.checkpoint" and str(path) in str(info.value)


def test_prior_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    from singexp.models.prior import load_prior

    folder = tmp_path / "prior"
    shutil.copytree(PRIOR, folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    poisoned(PRIOR / weights.name, weights)
    with pytest.raises(ConfigError, match="non-finite weights") as info:
        load_prior(str(folder), expected_size=32)
    assert info.value.key == "prior.source" and str(folder) in str(info.value)


def test_nan_during_sampling_names_the_model_file_else_zeta() -> None:
    from types import SimpleNamespace

    from singexp.samplers.loop import SamplingError, _check_finite
    from singexp.weights import remember

    step: Any = SimpleNamespace(index=3, num_steps=10, timestep=torch.tensor(500))
    bad = torch.full((1, 3, 4, 4), float("nan"))
    with pytest.raises(SamplingError, match="zeta"):
        _check_finite(bad, step, "sing_zero")
    net = torch.nn.Linear(2, 2)
    remember(net, "jscc.checkpoint", "/models/codec.safetensors")
    _check_finite(torch.zeros(2), step, "sing_zero")  # finite values: nothing to say
    with pytest.raises(SamplingError, match="zeta"):  # finite weights: still the settings
        _check_finite(bad, step, "sing_zero")
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(SamplingError) as info:
        _check_finite(bad, step, "sing_zero")
    assert "jscc.checkpoint=/models/codec.safetensors" in str(info.value)
    assert "zeta" not in str(info.value)
    del net


@pytest.mark.slow
def test_nan_codec_run_fails_in_one_line_and_writes_no_metrics(tmp_path: Path) -> None:
    codec = poisoned(CODEC, tmp_path / "nan.safetensors")
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=jscc",
        "bcr=1_48",
        f"jscc.checkpoint={codec}",
        "quick=true",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    line = one_line_error(result, "jscc.checkpoint")
    assert str(codec) in line and "non-finite" in line
    assert not (run / "metrics.json").exists()


# ---- 2. atomic writes -------------------------------------------------------------------------
def test_atomic_path_failure_leaves_target_untouched_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(WriteError) as info, atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png"
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(info.value, SingexpError) and info.value.errno == errno.ENOSPC
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def _full_disk(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_per_image_csv_and_grid_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv

    from matplotlib.figure import Figure

    from singexp.modules.restoration import write_per_image_csv
    from singexp.visualize import save_comparison_grid

    monkeypatch.setattr(csv.DictWriter, "writerows", _full_disk)
    with pytest.raises(WriteError, match=r"per_image\.csv: No space left on device"):
        write_per_image_csv([{"image": 0, "psnr": 1.0}], tmp_path / "per_image.csv")
    monkeypatch.setattr(Figure, "savefig", _full_disk)
    images = {"original": torch.rand(2, 3, 8, 8), "deepjscc": torch.rand(2, 3, 8, 8)}
    with pytest.raises(WriteError, match=r"grid\.png: No space left on device"):
        save_comparison_grid(images, tmp_path / "grid.png")
    assert list(tmp_path.iterdir()) == []


def test_codec_and_inn_exports_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import singexp.models.inn as inn
    import singexp.models.jscc as jscc

    codec = jscc.load_codec(CODEC)
    net = inn.load_inn(INN)
    monkeypatch.setattr(jscc, "save_file", _full_disk)
    monkeypatch.setattr(inn, "save_file", _full_disk)
    with pytest.raises(WriteError, match=r"codec\.safetensors: No space left"):
        jscc.export_codec(codec, tmp_path / "codec.safetensors")
    with pytest.raises(WriteError, match=r"inn\.safetensors: No space left"):
        inn.export_inn(net, tmp_path / "inn.safetensors")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    jscc.export_codec(codec, tmp_path / "codec.safetensors")  # and a whole file otherwise
    assert [p.name for p in tmp_path.iterdir()] == ["codec.safetensors"]
    assert jscc.read_hparams(tmp_path / "codec.safetensors")["bcr"] == "1/48"


# ---- 3. tracebacks -> one line ------------------------------------------------------------------
def test_prior_config_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    from singexp.models.prior import prior_config

    folder = tmp_path / "prior"
    shutil.copytree(PRIOR, folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON") as info:
        prior_config(str(folder))
    assert info.value.key == "prior.source" and str(folder / "config.json") in str(info.value)


def test_codec_and_inn_files_with_another_bcrs_tensors_are_one_line(tmp_path: Path) -> None:
    from singexp.models.inn import load_inn
    from singexp.models.jscc import load_codec

    codec = poisoned(
        CODEC,
        tmp_path / "codec.safetensors",
        metadata_from=CODEC.with_name("jscc_1_192.safetensors"),
    )
    with pytest.raises(ConfigError, match="do not fit the network") as info:
        load_codec(codec)
    assert info.value.key == "jscc.checkpoint" and str(codec) in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    net = poisoned(
        INN, tmp_path / "inn.safetensors", metadata_from=INN.with_name("inn_1_192.safetensors")
    )
    with pytest.raises(ConfigError, match="do not fit the network") as info:
        load_inn(net)
    assert info.value.key == "inn.checkpoint" and str(net) in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


def test_a_folder_as_model_file_says_so(tmp_path: Path) -> None:
    from singexp.config import check_model_file
    from singexp.models.inn import resolve_inn_checkpoint

    with pytest.raises(ConfigError, match=r"is a folder; give a model file \(a \.safetensors"):
        check_model_file("jscc.checkpoint", tmp_path)
    with pytest.raises(ConfigError, match="is a folder") as info:
        resolve_inn_checkpoint(str(tmp_path), "1/48", 32)
    assert info.value.key == "inn.checkpoint"
    with pytest.raises(ConfigError, match="no such file"):
        check_model_file("jscc.checkpoint", tmp_path / "absent.safetensors")


REPO = "google/ddpm-ema-celebahq-256"
REPO_DIR = "models--google--ddpm-ema-celebahq-256"


def _hub(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _cached_repo(root: Path, weights: bool = True, ref: bool = True) -> Path:
    commit = "0" * 40
    snapshot = root / REPO_DIR / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(PRIOR / "config.json", snapshot / "config.json")
    if weights:
        (snapshot / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    if ref:
        (root / REPO_DIR / "refs").mkdir()
        (root / REPO_DIR / "refs" / "main").write_text(commit)
    return snapshot


@pytest.mark.parametrize(
    ("layout", "says"),
    [
        ("empty", "no models--google--ddpm-ema-celebahq-256 in it"),
        ("one level up", "set HF_HUB_CACHE={cache}/hub (or HF_HOME={cache})"),
        ("no refs", "has no refs/main"),
        ("no weights", "has config.json but no weights"),
    ],
)
def test_missing_cached_prior_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, says: str
) -> None:
    from singexp.models.prior import prior_config

    cache = tmp_path / "cache"
    cache.mkdir()
    if layout == "one level up":
        _cached_repo(cache / "hub")
    elif layout == "no refs":
        _cached_repo(cache, ref=False)
    elif layout == "no weights":
        _cached_repo(cache, weights=False)
    _hub(monkeypatch, cache)
    with pytest.raises(ConfigError, match="not found locally") as info:
        prior_config("ddpm_ema_celebahq_256")
    text = str(info.value)
    assert f"searched the Hugging Face cache {cache}" in text
    assert says.format(cache=cache) in text, text


# ---- 4. malformed overrides and the CLI ---------------------------------------------------------
@pytest.mark.parametrize(
    ("arg", "says"),
    [("channel.snr_db=[1,", "cannot be parsed"), ("channel.snr_db", "has no '='")],
)
def test_malformed_override_is_one_line(arg: str, says: str) -> None:
    from singexp.cli import check_override_syntax

    with pytest.raises(SingexpError) as info:
        check_override_syntax(["+experiment=jscc", "-m", arg, "--cfg", "job"])
    text = str(info.value)
    assert text.startswith(f"override {arg!r} {says}") and "\n" not in text
    check_override_syntax(["+experiment=jscc", "~channel.snr_db", "a=1,2", "--cfg", "job"])


def test_launcher_without_multirun_is_refused() -> None:
    from singexp.cli import check_launcher_multirun

    with pytest.raises(ConfigError, match=r"applies to multiruns .* add -m") as info:
        check_launcher_multirun(["+experiment=jscc", "launcher=slurm"])
    assert info.value.key == "launcher"
    check_launcher_multirun(["+experiment=jscc", "-m", "launcher=slurm"])
    check_launcher_multirun(["+experiment=paper_grid", "launcher=slurm"])  # a sweep by config
    check_launcher_multirun(["+experiment=paper_grid_fast", "launcher=joblib"])  # inherited
    check_launcher_multirun(["+experiment=jscc", "hydra.mode=MULTIRUN", "launcher=joblib"])
    check_launcher_multirun(["+experiment=jscc"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["channel.snr_db=[1,"], "override 'channel.snr_db=[1,' cannot be parsed"),
        (["channel.snr_db"], "override 'channel.snr_db' has no '='"),
        (["lanucher=joblib"], "lanucher: is neither a config key nor a config group; did you "),
        (["launcher=slurm"], "launcher: slurm applies to multiruns (sweeps) only"),
    ],
)
def test_cli_mistakes_are_one_line_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    result = run_cli("+experiment=jscc", *args, *FAST, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    line = one_line_error(result, "")
    assert line.startswith(f"singexp: error: {says}"), line
    if args == ["lanucher=joblib"]:
        assert "launcher=joblib" in line and "+lanucher" not in line
    assert not (tmp_path / "metrics.json").exists()


def test_ctrl_c_is_not_swallowed_by_a_keyboardinterrupt_handler() -> None:
    """Lightning turns a KeyboardInterrupt into its own sys.exit(1): under sigint_ends_point
    Ctrl-C is an Interrupted, which passes through such a handler."""
    import os
    import signal

    from singexp.faults import Interrupted, sigint_ends_point

    with pytest.raises(Interrupted), sigint_ends_point():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs between bytecodes
                pass
        except KeyboardInterrupt:
            raise SystemExit(1) from None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# sends Ctrl-C to this process once the first point of the sweep has finished
CTRL_C = """
import glob, os, signal, threading, time

def _watch():
    pattern = os.path.join(os.environ["SINGEXP_TEST_SWEEP"], "*", "metrics.json")
    while not glob.glob(pattern):
        time.sleep(0.02)
    time.sleep(1.5)  # inside the next point's Lightning run, which catches KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=_watch, daemon=True).start()
"""


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_keeps_finished_points_and_says_how_to_resume(tmp_path: Path) -> None:
    import os

    sweep = tmp_path / "sweep"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(CTRL_C)
    path = os.pathsep.join([str(inject), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run_cli(
        "+experiment=jscc",
        *FAST,
        "-m",
        "channel.snr_db=-5,0,5,10",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"PYTHONPATH": path, "SINGEXP_TEST_SWEEP": str(sweep)},
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "finished points are kept" in last and "re-run the same command to resume" in last
    finished = list(sweep.glob("*/metrics.json"))
    assert 1 <= len(finished) < 4


# ---- 5. silently accepted -> one warning line ---------------------------------------------------
def test_snr_far_outside_the_codecs_training_range_is_noted() -> None:
    from singexp.models.jscc import read_hparams, snr_range_note

    assert read_hparams(CODEC)["train_snr"] == [-5.0, 5.0]
    note = snr_range_note(CODEC, 100)
    assert note is not None and "was trained on, [-5, 5] dB" in note
    assert "channel.snr_db=100 dB" in note
    assert snr_range_note(CODEC, -20) is not None
    for near in (-5, 0, 5, 10, -10):  # inside, or within the margin
        assert snr_range_note(CODEC, near) is None, near


@pytest.mark.slow
def test_snr_outside_the_training_range_is_one_warning_line_and_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        "+experiment=jscc",
        "bcr=1_48",
        f"jscc.checkpoint={CODEC}",
        "channel.snr_db=100",
        "quick=true",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if "was trained on, [-5, 5] dB" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), out[-3000:]
    warnings = json.loads((run / "metrics.json").read_text())["warnings"]
    assert [w for w in warnings if "was trained on, [-5, 5] dB" in w]


def test_images_smaller_than_image_size_are_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from PIL import Image

    from singexp.data.folder import ImageFolderDataModule

    root = tmp_path / "tiny"
    root.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 100, 50)).save(root / f"{i:02d}.png")
    with caplog.at_level(logging.INFO, logger="singexp.data"):
        ImageFolderDataModule(root=root, image_size=32).setup()
    found = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "smaller than dataset.image_size" in r.getMessage()
    ]
    assert len(found) == 1, found
    assert "12 images" in found[0] and "native 8x8" in found[0]
    assert "upscaled up to 4x" in found[0]
    caplog.clear()
    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        Image.new("RGB", (40, 32), (20 * i, 100, 50)).save(big / f"{i:02d}.png")
    with caplog.at_level(logging.INFO, logger="singexp.data"):
        ImageFolderDataModule(root=big, image_size=32).setup()
    assert not [r for r in caplog.records if "smaller than" in r.getMessage()]
