"""Faults a cluster user meets: torn results, colliding runs and sweeps, W&B without a
network, SIGTERM, bad input. Each test reproduces its fault; the slow ones run the real entry
point with tiny settings."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.server
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from conftest import run_cli
from singexp.config import CONF_DIR, EMBEDDED_JSCC_DIR, RunConfig, validate
from singexp.errors import ConfigError
from singexp.faults import (
    Terminated,
    check_launcher,
    check_writable,
    point_lock,
    set_aside_unfinished_wandb,
    sigterm_ends_point,
)
from singexp.loggers import resolve_wandb_mode, server_answers
from singexp.models import jscc as models_jscc
from singexp.models.artifact import ensure
from singexp.models.jscc import codec_artifact_identity, require_codec
from singexp.points import finished_results, identity_hash, read_results, write_json
from singexp.report import report

MakeCfg = Callable[..., DictConfig]
# a DeepJSCC run in seconds: a few batches, no checkpoints, no loggers
JSCC = ["+experiment=jscc", "debug=fast", "logger=none", "callbacks=none", "print_config=false"]
SWEEP = [*JSCC, "-m", "channel.snr_db=-5,5"]
POINT_KEYS = ("task", "snr_db", "bcr")


def _one_line_error(result: subprocess.CompletedProcess[str], key: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("singexp: error:")]
    assert len(errors) == 1, out[-3000:]
    assert errors[0].startswith(f"singexp: error: {key}"), errors[0]


def _points(sweep: Path) -> dict[float, Path]:
    """snr_db → point folder, for points with complete results."""
    found = {}
    for path in sweep.glob("*/metrics.json"):
        data, _ = read_results(path, POINT_KEYS)
        if data is not None:
            found[float(data["snr_db"])] = path.parent
    return found


def _saved_point(folder: Path, make_cfg: MakeCfg, *overrides: str) -> DictConfig:
    """A finished point in ``folder``: its config.yaml and a complete metrics.json."""
    cfg = make_cfg(*JSCC[:1], f"paths.output_dir={folder}", *overrides)
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    point = {"task": "jscc", "dataset": "shapes", "channel": "awgn", "bcr": "1/192", "seed": 0}
    write_json(folder / "metrics.json", {**point, "snr_db": 0.0, "test": {"psnr": 12.0}})
    return cfg


# ---- 1. results that cannot be torn -------------------------------------------------------------
def test_a_failing_write_leaves_the_previous_results_whole(tmp_path: Path) -> None:
    """A write that fails midway (the file-size limit stands in for a full disk: the kernel
    refuses the bytes past it) must leave the old file as it was and no temp file behind."""
    path = tmp_path / "metrics.json"
    write_json(path, {"old": True})
    before = path.read_text()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # SIGXFSZ is ignored by Python
    try:
        with pytest.raises(OSError) as info:
            write_json(path, {"new": "x" * 4096})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert info.value.errno == errno.EFBIG
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_torn_metrics_json_does_not_count_as_finished(tmp_path: Path, make_cfg: MakeCfg) -> None:
    cfg = _saved_point(tmp_path / "p", make_cfg)
    assert finished_results(validate(cfg).plain, tmp_path / "p") is not None
    for torn in ("", '{"task": "jscc", "snr', '{"task": "jscc"}', "[1, 2]"):
        (tmp_path / "p" / "metrics.json").write_text(torn)
        assert finished_results(validate(cfg).plain, tmp_path / "p") is None, torn


def test_a_moved_or_copied_run_folder_is_reused(tmp_path: Path, make_cfg: MakeCfg) -> None:
    """What decides reuse holds no absolute output path (10)."""
    wandb = ("logger=csv_wandb",)  # loggers write under the run folder too
    _saved_point(tmp_path / "a" / "p", make_cfg, *wandb)
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "moved")
    folder = tmp_path / "b" / "moved" / "p"
    cfg = make_cfg(*JSCC[:1], f"paths.output_dir={folder}", "paths.root=/elsewhere", *wandb)
    assert finished_results(validate(cfg).plain, folder) is not None
    other = make_cfg(*JSCC[:1], f"paths.output_dir={folder}", "channel.snr_db=3", *wandb)
    # another config is still another config
    assert finished_results(validate(other).plain, folder) is None


def _fake_point(folder: Path, snr: float) -> None:
    folder.mkdir(parents=True)
    methods = {"deepjscc": {"psnr": 12.0 + snr, "images": 1}}
    point = {"dataset": "shapes", "channel": "awgn", "bcr": "1/768", "snr_db": snr}
    (folder / "metrics.json").write_text(json.dumps({**point, "methods": methods}))


def test_report_names_a_torn_point_in_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _fake_point(sweep / "0", -5.0)
    _fake_point(sweep / "1", 5.0)
    (sweep / "1" / "metrics.json").write_text("")  # a 0-byte file left by a failed write
    summary = report(sweep)
    assert summary["points"] == 1 and summary["failed"] == [str(sweep / "1")]
    assert "unfinished point: 1" in (sweep / "report" / "results.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "singexp.report", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "unfinished point 1" in line]
    assert len(lines) == 1 and "torn" in lines[0]


# a full disk for one file: every write to a metrics.json (or its temp file) of the +5 dB point
# fails with ENOSPC, whichever way it is opened
DISK_FULL = """
import builtins, errno, io, os

_open = io.open


class _Full:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _full_open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    name = os.fspath(file) if not isinstance(file, int) else ""
    if "w" in mode and "metrics.json" in os.path.basename(name) and "snr_db=5" in name:
        return _Full(f)
    return f


builtins.open = io.open = _full_open
"""


@pytest.mark.slow
def test_sweep_with_a_failed_write_exits_nonzero_and_a_rerun_completes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(DISK_FULL)
    args = [*SWEEP, f"hydra.sweep.dir={sweep}"]
    path = os.pathsep.join([str(inject), *filter(None, [os.environ.get("PYTHONPATH")])])
    full = run_cli(*args, cwd=tmp_path, env={"PYTHONPATH": path}, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]  # the sweep says a point failed
    assert "1 grid point(s) failed" in full.stderr.splitlines()[-1]
    assert list(_points(sweep)) == [-5.0]
    (failed,) = [p for p in sweep.iterdir() if "snr_db=5" in p.name]
    assert not (failed / "metrics.json").exists()  # nothing torn: absent
    assert not list(failed.glob(".metrics.json.*"))  # and no temp file left
    assert "No space left" in (failed / "error.txt").read_text()
    # the same command again (disk freed): the failed point runs, the finished one is reused
    again = run_cli(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("reusing them") == 1
    assert sorted(_points(sweep)) == [-5.0, 5.0]


@pytest.mark.slow
def test_torn_point_is_recomputed_and_a_moved_sweep_is_reused(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = run_cli(*SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    done = _points(sweep)
    (done[5.0] / "metrics.json").write_text("")  # torn, as an old in-place write left it
    rerun = run_cli(*SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert out.count("reusing them") == 1 and out.count("results written to") == 1
    assert sorted(_points(sweep)) == [-5.0, 5.0]
    # 10. a moved copy of the finished sweep is reused, not recomputed
    moved = tmp_path / "elsewhere" / "sweep"
    shutil.copytree(sweep, moved)
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in _points(moved).values()}
    again = run_cli(*SWEEP, f"hydra.sweep.dir={moved}", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("reusing them") == 2
    assert {p: (p / "metrics.json").stat().st_mtime_ns for p in _points(moved).values()} == stamps


def test_a_torn_shared_model_record_is_rebuilt_not_a_traceback(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(folder: Path) -> Path:
        builds.append(folder)
        (folder / "model.bin").write_bytes(b"x")
        return folder / "model.bin"

    first = ensure(tmp_path, "jscc", {"bcr": "1/768"}, build)
    (first.parent / "artifact.json").write_text('{"pa')  # a job killed while writing it
    assert ensure(tmp_path, "jscc", {"bcr": "1/768"}, build) == first and len(builds) == 2
    assert ensure(tmp_path, "jscc", {"bcr": "1/768"}, build) == first and len(builds) == 2


# ---- 2. run folders unique per process ---------------------------------------------------------
def test_run_folder_differs_between_processes_started_in_the_same_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra" / "default.yaml"))
    # both started in the same second: ${now:...} gives the same text
    same_second = re.sub(r"\$\{now:[^}]*\}", "2026-01-01_00-00-00", raw["run"]["dir"])
    node = OmegaConf.create(
        {"paths": {"root": "out"}, "experiment_name": "x", "run": {"dir": same_second}}
    )
    dirs = set()
    for pid in (1234, 1235):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        dirs.add(OmegaConf.to_container(node, resolve=True)["run"]["dir"])
    assert len(dirs) == 2
    assert all(d.startswith("out/x/runs/2026-01-01_00-00-00") for d in dirs)


@pytest.mark.slow
def test_two_runs_started_together_keep_their_own_folders(tmp_path: Path) -> None:
    env = {**os.environ, "SINGEXP_OUTPUT": str(tmp_path / "outputs"), "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "singexp", *JSCC, f"channel.snr_db={snr}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for snr in (-5, 5)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    runs = sorted((tmp_path / "outputs" / "jscc" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:  # each folder's config and results are of the same run
        saved = OmegaConf.load(run / "config.yaml").channel.snr_db
        assert json.loads((run / "metrics.json").read_text())["snr_db"] == saved


# ---- 3. two copies of one sweep --------------------------------------------------------------
def test_point_lock_makes_a_second_job_wait(tmp_path: Path) -> None:
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with point_lock(tmp_path):
            inside.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with point_lock(tmp_path):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


@pytest.mark.slow
def test_two_copies_of_a_sweep_compute_each_point_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "singexp", *SWEEP, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    text = "".join(outs)
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    assert text.count("results written to") == 2  # each point computed once in all
    assert text.count("reusing them") == 2  # and reused by the other copy
    assert not list(sweep.glob("*/error.txt"))
    assert sorted(_points(sweep)) == [-5.0, 5.0]


# ---- 4. W&B that cannot hang -------------------------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):  # the accept timeout: look at `stop` again
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Answers a plain request, stalls W&B's API calls (a proxy that lets pings through)."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.end_headers()

    do_GET = do_HEAD

    def do_POST(self) -> None:
        time.sleep(120)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_that_accepts_and_never_answers_is_not_reachable(
    silent_server: str, stalling_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    start = time.monotonic()
    assert not server_answers(silent_server, timeout=1.0)
    assert time.monotonic() - start < 5
    assert server_answers(stalling_server, timeout=5.0)
    # auto mode with a well-formed key: offline, within seconds, saying why
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    start = time.monotonic()
    mode, why = resolve_wandb_mode("auto")
    assert (mode, time.monotonic() - start < 10) == ("offline", True)
    assert "does not answer" in why


def test_online_without_credentials_falls_back_to_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    mode, why = resolve_wandb_mode("auto")
    assert mode == "offline" and "WANDB_MODE=online" in why and "no W&B credentials" in why


def test_credentials_are_found_where_wandb_login_stores_them(tmp_path: Path) -> None:
    """`wandb login` (0.31) writes the key with wandb's own netrc writer under its server's
    host; the check must find exactly that entry."""
    code = (
        "from singexp.loggers import has_wandb_credentials, wandb_base_url\n"
        "print('before', has_wandb_credentials())\n"
        "from wandb.sdk.lib import wbauth\n"
        "wbauth.write_netrc_auth(host=wandb_base_url(), api_key='b' * 40)\n"
        "print('after', has_wandb_credentials())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"NETRC": str(tmp_path / "netrc"), "HOME": os.environ.get("HOME", str(tmp_path))})
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "before False" in result.stdout and "after True" in result.stdout
    assert "machine api." in (tmp_path / "netrc").read_text()


@pytest.mark.slow
def test_wandb_online_with_a_stalling_server_falls_back_and_keeps_results(
    stalling_server: str, tmp_path: Path
) -> None:
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "a" * 40,
        "WANDB_BASE_URL": stalling_server,
        "WANDB_SILENT": "true",
    }
    start = time.monotonic()
    result = run_cli(
        *JSCC,
        "logger=wandb",
        "logger.wandb.init_timeout=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    elapsed = time.monotonic() - start
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if "W&B runs offline" in x]
    assert "wandb.init failed within 3 s" in line
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert json.loads((run / "files" / "metrics.json").read_text()) == metrics
    assert elapsed < 90  # wandb's own init timeout alone is 90 s


# ---- 5. one codec per SNR sweep ----------------------------------------------------------------
def test_auto_codec_identity_does_not_follow_the_test_snr(make_cfg: MakeCfg) -> None:
    def codec_hash(*overrides: str) -> str:
        cfg = make_cfg("+experiment=sing_zero", "jscc.checkpoint=auto", *overrides)
        return identity_hash(codec_artifact_identity(validate(cfg)))

    default = {codec_hash(f"channel.snr_db={snr}") for snr in (-5, -1, 3, 5)}
    assert len(default) == 1  # one codec for the whole SNR sweep
    fixed = {codec_hash(f"channel.snr_db={snr}", "channel.train_snr_db=3") for snr in (-5, 5)}
    assert len(fixed) == 1 and fixed != default
    cfg = make_cfg("+experiment=sing_zero", "jscc.checkpoint=auto", "channel.snr_db=2")
    assert validate(cfg).channel.shared_train_range() == (-5.0, 5.0)  # what it trains on


def test_an_snr_sweep_trains_one_auto_codec_on_the_shared_range(
    make_cfg: MakeCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[tuple[float, float]] = []

    def fake_jscc_task(sub: RunConfig, loggers: list, state: object = None) -> dict:
        trained.append(sub.channel.train_range())
        Path(str(sub.jscc.export)).write_bytes(b"codec")
        return {}

    monkeypatch.setattr(models_jscc, "codec_job", fake_jscc_task)
    codecs = set()
    for snr in (-5, 0, 5):
        cfg = make_cfg(
            "+experiment=sing_zero",
            "jscc.checkpoint=auto",
            f"channel.snr_db={snr}",
            f"paths.artifacts={tmp_path / 'artifacts'}",
        )
        v = validate(cfg)
        codecs.add(require_codec(v, "restoration"))
        assert v.jscc.checkpoint == "auto"  # the run's config is left as it was (frozen)
    assert trained == [(-5.0, 5.0)] and len(codecs) == 1  # one codec, not one per SNR


# ---- 6. SIGTERM --------------------------------------------------------------------------------
def test_sigterm_ends_the_current_point() -> None:
    with pytest.raises(Terminated), sigterm_ends_point():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_handler_of_a_framework_is_left_alone() -> None:
    """submitit handles SIGTERM itself (and requeues on its own signal): not overridden."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with sigterm_ends_point():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]


@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_the_rerun_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "singexp", *SWEEP, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list(sweep.glob("0_*/config.yaml")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 20
    assert proc.returncode == 143, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("singexp:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0], err[-3000:]
    assert not _points(sweep)  # the point stopped unfinished, the next never started
    assert not list(sweep.glob("1_*"))
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (rerun.stdout + rerun.stderr).count("results written to") == 2
    assert sorted(_points(sweep)) == [-5.0, 5.0]


# ---- 7, 8. bad input: one line, exit status 2 --------------------------------------------------
def _bad_files(folder: Path) -> dict[str, Path]:
    """Checkpoint files a user might pass by mistake."""
    folder.mkdir(parents=True, exist_ok=True)
    good = EMBEDDED_JSCC_DIR
    data = (good / "jscc_1_192.safetensors").read_bytes()
    files = {
        "truncated.safetensors": data[: len(data) // 2],
        "text.safetensors": b"not a model\n",
        "text.ckpt": b"not a checkpoint\n",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, folder / "whole.ckpt")
    whole = (folder / "whole.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    torch.save({"weights": [1, 2]}, folder / "foreign.ckpt")  # a torch file, not Lightning's
    return {p.name: p for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("seed=abc", "seed"),
        ("seed=-1", "seed"),
        ("seed=1e12", "seed"),
        ("channel.snr_db=-1000", "channel.snr_db"),
        ("channel.snr_db=1e9", "channel.snr_db"),
        ("channel.train_snr_db=500", "channel.train_snr_db"),
        ("channel.train_snr_range=[-200,5]", "channel.train_snr_range[0]"),
        ("bcr.ratio=1e-6", "bcr.ratio"),
    ],
)
def test_out_of_range_values_are_refused_up_front(
    make_cfg: MakeCfg, override: str, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*JSCC[:1], override))
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["jscc.checkpoint", "inn.checkpoint"])
@pytest.mark.parametrize(
    "name",
    ["truncated.safetensors", "text.safetensors", "text.ckpt", "truncated.ckpt", "foreign.ckpt"],
)
def test_unreadable_checkpoints_are_one_line_errors(
    make_cfg: MakeCfg, tmp_path: Path, key: str, name: str
) -> None:
    path = _bad_files(tmp_path / "files")[name]
    with pytest.raises(ConfigError) as info:
        validate(make_cfg(*JSCC[:1], f"{key}={path}"))
    assert str(info.value).startswith(f"{key}:") and "\n" not in str(info.value)
    validate(make_cfg(*JSCC[:1], f"{key}={tmp_path / 'files' / 'whole.ckpt'}"))  # a whole one


def test_unwritable_output_and_missing_slurm_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^hydra\.run\.dir: cannot write to"):
        check_writable("hydra.run.dir", tmp_path / "file" / "run")
    check_writable("hydra.run.dir", tmp_path / "ok" / "run")
    assert (tmp_path / "ok" / "run").is_dir() and not list((tmp_path / "ok" / "run").iterdir())
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    with pytest.raises(ConfigError, match=r"^launcher: slurm needs Slurm"):
        check_launcher(slurm)
    check_launcher({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"})


def _without_dac_override() -> None:
    """Root writes anywhere (CAP_DAC_OVERRIDE); without it a 0555 folder is read-only to root too,
    as it is to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.slow
def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    files = _bad_files(tmp_path / "files")
    cases = [
        (["seed=abc"], "seed"),
        (["channel.snr_db=-1000"], "channel.snr_db"),
        (["bcr.ratio=1e-6"], "bcr.ratio"),
        ([f"jscc.checkpoint={files['truncated.ckpt']}"], "jscc.checkpoint"),
        ([f"jscc.checkpoint={files['text.safetensors']}"], "jscc.checkpoint"),
        ([f"inn.checkpoint={files['truncated.safetensors']}"], "inn.checkpoint"),
        ([f"inn.checkpoint={files['text.ckpt']}"], "inn.checkpoint"),
        (["-m", "channel.snr_db=-5,5", "launcher=slurm"], "launcher"),
    ]
    for args, key in cases:
        env = {"PATH": os.path.dirname(sys.executable)} if key == "launcher" else {}  # no sbatch
        result = run_cli(*JSCC, *args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, env=env)
        _one_line_error(result, key)


@pytest.mark.slow
def test_read_only_output_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "singexp", *JSCC, f"hydra.run.dir={tmp_path / 'ro' / 'run'}"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as error:  # root without CAP_SETPCAP: cannot drop it
        pytest.skip(f"cannot make a folder read-only to root here: {error}")
    finally:
        (tmp_path / "ro").chmod(0o755)
    _one_line_error(result, "hydra.run.dir")
    assert "Permission denied" in result.stderr


# ---- 9. a killed point's W&B run is not synced as a duplicate -----------------------------------
def _sync_candidates(root: Path) -> list[Path]:
    """What `make sync-wandb` uploads: `find ROOT -type d -name 'offline-run-*'`."""
    found = subprocess.run(
        ["find", str(root), "-type", "d", "-name", "offline-run-*"],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(Path(line) for line in found.stdout.split())


def test_unfinished_wandb_runs_are_set_aside(tmp_path: Path) -> None:
    killed = tmp_path / "wandb" / "offline-run-20260101_000000-killed"
    finished = tmp_path / "wandb" / "offline-run-20260101_000100-done"
    (killed / "files").mkdir(parents=True)
    (finished / "files").mkdir(parents=True)
    (finished / "files" / "metrics.json").write_text("{}")
    moved = set_aside_unfinished_wandb(tmp_path)
    assert [p.name for p in moved] == [f"aborted-{killed.name}"]
    assert _sync_candidates(tmp_path) == [finished]


@pytest.mark.slow
def test_a_rerun_point_leaves_one_syncable_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    partial = run_dir / "wandb" / "offline-run-20260101_000000-killed1"
    (partial / "files").mkdir(parents=True)  # what a killed attempt leaves
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run_cli(*JSCC, "logger=wandb", f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _sync_candidates(tmp_path)
    assert (run / "files" / "metrics.json").is_file()
    assert (run_dir / "wandb" / f"aborted-{partial.name}").is_dir()
