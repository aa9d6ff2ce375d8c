"""The experiment presets (docs/results/presets.md): the grid each one expands to, what it fits,
end to end."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import run_cli
from singexp.config import CONF_DIR, embedded_codec
from singexp.instantiate import build
from singexp.models.jscc import load_codec
from singexp.operators import PatchProjection, codec_pairs, operator_from_config

EMBEDDED_BCRS = {"'1_96'", "'1_48'", "'1_24'"}


def sweep_points(*overrides: str) -> tuple[list[dict[str, str]], str]:
    """The points ``python -m singexp OVERRIDES`` runs (the preset's hydra.sweeper.params
    expanded as Hydra's basic sweeper does), and the sweep folder."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # one command, no -m needed
    params: Any = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    points = [dict(item.split("=", 1) for item in point) for point in batch]
    return points, str(cfg.hydra.sweep.dir)


def grid(points: list[dict[str, str]]) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(sorted(p.items())) for p in points}


def product(**axes: list[str]) -> set[tuple[tuple[str, str], ...]]:
    import itertools

    keys = sorted(axes)
    return {
        tuple(zip(keys, values, strict=True))
        for values in itertools.product(*(axes[k] for k in keys))
    }


# ---- operator ablation ---------------------------------------------------------------------
OPERATORS = ["avgpool_s2", "avgpool_s4", "strided_blur", "fitted"]


def test_ablation_operator_grid() -> None:
    points, folder = sweep_points("+experiment=ablation_operator")
    assert len(points) == 4 * 3 * 3
    assert grid(points) == product(
        operator=OPERATORS, **{"channel.snr_db": ["-5", "0", "5"]}, bcr=sorted(EMBEDDED_BCRS)
    )
    assert folder.endswith("sweeps/ablation_operator")


def test_ablation_operator_fast_grid_is_small_and_kept_apart() -> None:
    points, folder = sweep_points("+experiment=ablation_operator", "debug=fast")
    assert grid(points) == product(
        operator=["avgpool_s4", "strided_blur", "fitted"],
        **{"channel.snr_db": ["0"]},
        bcr=["'1_48'"],
    )
    assert folder.endswith("sweeps/ablation_operator_fast")


def test_ablation_point_configs_compose_with_sing_zero_only() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in OPERATORS:
            cfg = compose("config", overrides=["+experiment=ablation_operator", f"operator={name}"])
            assert cfg.sampler.name == "sing_zero"
            assert cfg.operator.name in ("avgpool", "strided_blur", "fitted")
            assert cfg.dataset.test_size == 16


@pytest.fixture(scope="module")
def codec_and_train() -> tuple[Any, Any]:
    codec = load_codec(embedded_codec(Fraction(1, 48), 32), test_snr_db=0.0).eval()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["dataset.train_size=128"])
    datamodule = build(cfg.dataset)
    datamodule.setup()
    return codec, datamodule.train_dataset


def test_fitted_operator_on_the_embedded_codec_is_a_pseudo_inverse_pair(
    codec_and_train: tuple[Any, Any],
) -> None:
    """A fitted to (x, DeepJSCC(x)) pairs: A A† A = A and A†A idempotent, to 1e-5."""
    codec, train = codec_and_train
    node = OmegaConf.load(CONF_DIR / "operator" / "fitted.yaml")
    node.fit_images = 128
    calls: list[int] = []

    def pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(n)
        return codec_pairs(codec, train, n, 0.0, seed=3)

    op = operator_from_config(node, "1/48", 32, pairs=pairs)
    assert calls == [128]
    assert isinstance(op, PatchProjection) and op.scale == 8
    assert 1 <= op.rank <= 192 and op.info["fit_images"] == 128
    # the fit lowers the squared error of P x̂ + (I − P) μ below that of x̂ itself (training)
    assert op.info["fit_mse"] <= op.info["received_mse"] + 1e-12
    x = torch.stack([train[i] for i in range(8)])
    ax = op.A(x)
    torch.testing.assert_close(op.A(op.A_pinv(ax)), ax, rtol=0, atol=1e-5)
    p = op.project(x)
    torch.testing.assert_close(op.project(p), p, rtol=0, atol=1e-5)
    # deterministic: the same pairs give the same A
    again = operator_from_config(node, "1/48", 32, pairs=pairs)
    assert torch.equal(again.matrix, op.matrix)


@pytest.mark.slow
def test_ablation_operator_fast_form_end_to_end(tmp_path: Path) -> None:
    """The debug=fast form runs with one command, writes the table with an A column and the
    figures, and a re-run evaluates nothing new."""
    args = ["+experiment=ablation_operator", "debug=fast", "logger=csv", "print_config=false"]
    env: dict[str, str | None] = {"SINGEXP_OUTPUT": None}
    first = run_cli(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "ablation_operator_fast"
    points = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert points == [
        "avgpool4_bcr1_48_snr0",
        "fitted8_bcr1_48_snr0",
        "strided_blur4_bcr1_48_snr0",
    ]
    fitted = json.loads((sweep / "fitted8_bcr1_48_snr0" / "metrics.json").read_text())
    assert fitted["operator"]["name"] == "fitted" and fitted["operator"]["rank"] >= 1
    table = (sweep / "report" / "results.md").read_text()
    # each point labelled by its operator (its scale and keys follow from the name here)
    assert "| variant |" in table and "| A=fitted |" in table and "| A=strided_blur |" in table
    for name in ("stlpips_vs_snr.png", "stlpips_vs_snr.pdf", "psnr_vs_snr.png", "swd_vs_snr.png"):
        assert (sweep / "report" / name).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    again = run_cli(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("reusing them") == 3
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")} == stamps


# ---- NFE–quality–latency curve --------------------------------------------------------------
def test_nfe_curve_grid() -> None:
    points, folder = sweep_points("+experiment=nfe_curve")
    assert [p["nfe"] for p in points] == ["10", "25", "50", "100", "250", "1000"]
    assert folder.endswith("sweeps/nfe_curve")
    fast, fast_folder = sweep_points("+experiment=nfe_curve", "debug=fast")
    assert [p["nfe"] for p in fast] == ["10", "25"]
    assert fast_folder.endswith("sweeps/nfe_curve_fast")


def test_nfe_sets_the_steps_of_both_methods() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=nfe_curve", "nfe=250"])
    assert cfg.methods.sing_zero.steps == 250 and cfg.methods.sing_inn.steps == 250
    assert (cfg.bcr.name, cfg.channel.snr_db) == ("1_48", 0.0)  # the main job's point


@pytest.mark.slow
def test_nfe_curve_fast_form_end_to_end(tmp_path: Path) -> None:
    args = ["+experiment=nfe_curve", "debug=fast", "logger=csv", "print_config=false"]
    env: dict[str, str | None] = {"SINGEXP_OUTPUT": None}
    first = run_cli(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / "nfe_curve_fast"
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == [
        "steps10_bcr1_48_snr0.0",
        "steps25_bcr1_48_snr0.0",
    ]
    report_dir = sweep / "report"
    for name in ("stlpips_vs_steps.png", "stlpips_vs_steps.pdf", "psnr_vs_seconds.png"):
        assert (report_dir / name).is_file(), name
    flops = (report_dir / "flops.md").read_text()
    assert "| sing_inn | 25 |" in flops and "| sing_zero | 10 |" in flops
    again = run_cli(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("reusing them") == 2


# ---- NFE–quality front (issue 40) ----------------------------------------------------------
FRONT_POINTS = {"main": ("1_48", 0.0), "low": ("1_96", -5.0), "high": ("1_24", 5.0)}


def test_nfe_front_grid() -> None:
    points, folder = sweep_points("+experiment=nfe_front")
    assert grid(points) == product(
        **{
            "front.point": list(FRONT_POINTS),
            "nfe": ["5", "10", "15", "25", "35", "50", "100", "ref"],
        }
    )
    assert folder.endswith("sweeps/nfe_front_none")


@pytest.mark.parametrize("budget", [5, 10, 15, 25, 35, 50, 100])
def test_nfe_front_runs_each_method_at_the_most_nfe_within_the_budget(budget: int) -> None:
    """Each method at the most steps (InverseJSCC: iterations) whose NFE fits the budget, at
    the point's BCR and SNR; the default (nfe=ref) is every method's own."""
    from singexp.samplers import check_method
    from singexp.samplers.nfe import method_nfe

    for point, (bcr, snr) in FRONT_POINTS.items():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=["+experiment=nfe_front", f"front.point={point}", f"nfe={budget}"],
            )
        assert (cfg.bcr.name, cfg.channel.snr_db, cfg.dataset.test_size) == (bcr, snr, 64)
        assert Fraction(str(cfg.bcr.ratio)) == Fraction(bcr.replace("_", "/"))
    for name, node in cfg.methods.items():
        raw: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
        nfe = method_nfe(check_method(raw))["nfe"]
        key = "iterations" if name == "inverse_jscc" else "steps"
        more = method_nfe(check_method({**raw, key: raw[key] + 1}))["nfe"]
        least = 10 if name == "inverse_jscc" else 0  # G(inversion) + G(z0): 2 x 5 steps
        assert nfe <= max(budget, least) < more, (name, nfe, more)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        ref = compose("config", overrides=["+experiment=nfe_front", "nfe=ref"])
    assert [ref.methods[m].steps for m in ("sing_zero", "sing_inn", "dps_jscc")] == [100] * 3
    assert ref.methods.inverse_jscc.iterations == 20


def test_fast_presets_use_the_fast_settings_and_the_main_job_keeps_the_papers() -> None:
    """paper_grid_fast / sing_inn_fast: each method's conf/fast/<method>.yaml over its sampler's
    defaults, the grid's 18 points in a folder of their own, no W&B; the main job stays at the
    paper's 100 steps."""
    methods = ("sing_zero", "sing_inn", "dps_jscc", "inverse_jscc")
    fast = {m: OmegaConf.load(CONF_DIR / "fast" / f"{m}.yaml") for m in methods}
    points, folder = sweep_points("+experiment=paper_grid_fast")
    assert len(points) == 18 and folder.endswith("sweeps/paper_grid_fast")
    for preset in ("paper_grid_fast", "sing_inn_fast", "baselines_fast"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"+experiment={preset}"])
        for name in cfg.methods:
            settings = fast[name]
            assert settings and all(cfg.methods[name][k] == v for k, v in settings.items())
            assert cfg.methods[name].name == name
    assert set(cfg.methods) == set(methods)  # baselines_fast: every method
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        main = compose("config", overrides=["+experiment=sing_inn"])
        grid_cfg = compose("config", overrides=["+experiment=paper_grid_fast"])
    assert main.methods.sing_zero.steps == main.methods.sing_inn.steps == 100
    # Algorithm 2 as written: guidance at every step with the default ζ
    assert (main.methods.sing_inn.guidance_every, main.methods.sing_inn.zeta) == (1, 1.0)
    assert grid_cfg.methods.sing_inn.guidance_every > 1
    assert list(grid_cfg.logger) == ["csv"]


# ---- INN training-set size ------------------------------------------------------------------
def test_inn_data_size_grid() -> None:
    points, folder = sweep_points("+experiment=inn_data_size")
    assert grid(points) == product(
        **{
            "dataset.train_size": ["100", "500", "2000", "8192"],
            "channel.snr_db": ["-5", "0", "5"],
            "trainer.max_steps": ["128"],
            "methods.sing_inn.steps": ["100"],
        }
    )
    assert [p["dataset.train_size"] for p in points[:3]] == ["100"] * 3  # N outermost
    assert folder.endswith("sweeps/inn_data_size")
    fast, _ = sweep_points("+experiment=inn_data_size", "debug=fast")
    assert grid(fast) == product(
        **{
            "dataset.train_size": ["32", "64"],
            "channel.snr_db": ["0"],
            "trainer.max_steps": ["2"],
            "methods.sing_inn.steps": ["10"],
        }
    )


def test_inn_artifact_identity_holds_the_training_set_size(tmp_path: Path) -> None:
    """One INN per N (inn.checkpoint=auto): the identity differs by dataset.train_size only, and
    not by the test SNR (one INN serves every SNR of its N)."""
    from singexp.config import validate
    from singexp.models.inn import inn_artifact_identity

    def identity(*overrides: str) -> dict[str, Any]:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=["+experiment=inn_data_size", f"paths.output_dir={tmp_path}", *overrides],
            )
        return inn_artifact_identity(validate(cfg))

    small = identity("dataset.train_size=100")
    assert small["dataset"]["train_size"] == 100
    assert small != identity("dataset.train_size=500")
    assert small == identity("dataset.train_size=100", "channel.snr_db=5")
    assert small == identity("dataset.train_size=100", "dataset.test_size=4")


# ---- SNR generalisation of the INN ----------------------------------------------------------
def test_snr_generalisation_grid_and_point_folders(tmp_path: Path) -> None:
    points, folder = sweep_points("+experiment=snr_generalisation")
    snrs = ["-5", "-3", "-1", "0", "1", "3", "5"]
    assert grid(points) == product(
        **{
            "inn.train_snr_range": ["[0,5]", "[-5,5]"],
            "channel.snr_db": snrs,
            "trainer.max_steps": ["128"],
            "methods.sing_inn.steps": ["100"],
        }
    )
    assert folder.endswith("sweeps/snr_generalisation")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "+experiment=snr_generalisation",
                "inn.train_snr_range=[0,5]",
                "channel.snr_db=-3",
                f"paths.output_dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweep.subdir == "train0_5_snr-3"
    assert cfg.inn.checkpoint == "auto" and list(cfg.methods) == ["sing_inn"]


def test_report_names_the_varied_inn_settings(tmp_path: Path) -> None:
    from singexp.points import Point, flat, identity, point_label, varying_keys

    def point(n: int, low: int) -> Point:
        config = {"inn": {"checkpoint": "auto", "train_snr_range": [low, 5]}}
        config = {**config, "dataset": {"train_size": n}, "bcr": {"ratio": "1/48"}}
        return Point(tmp_path, {}, config, flat(identity(config)))

    points = [point(100, 0), point(500, 0), point(100, -5)]
    keys = varying_keys(points)
    assert keys == ["inn.train_snr_range", "dataset.train_size"]
    assert point_label(points[2], keys) == "inn.train_snr_range=[-5, 5], dataset.train_size=100"


# ---- distribution mismatch ------------------------------------------------------------------
def test_mismatch_grid() -> None:
    points, folder = sweep_points("+experiment=mismatch")
    assert grid(points) == product(
        **{
            "dataset": ["shapes", "photos"],
            "channel.snr_db": ["-5", "0", "5"],
            "methods.sing_zero.steps": ["100"],
            "methods.sing_inn.steps": ["100"],
            "methods.dps_jscc.steps": ["100"],
            "methods.diffpir.steps": ["100"],
            "methods.ddrm.steps": ["100"],
        }
    )
    assert folder.endswith("sweeps/mismatch")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=mismatch", "dataset=photos"])
    # the shapes-trained models of the main job, whatever the test data
    assert (cfg.jscc.checkpoint, cfg.inn.checkpoint, cfg.prior.source) == (
        "embedded",
        "embedded",
        "embedded",
    )
    assert cfg.dataset.test_size == 16 and cfg.bcr.name == "1_48"
    # all seven methods, the baselines with their tuned values as in the comparison
    methods = ["sing_zero", "sing_inn", "dps_jscc", "inverse_jscc", "diffpir", "ddrm"]
    assert list(cfg.methods) == methods
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        comparison = compose("config", overrides=["+experiment=comparison"])
    assert cfg.methods == comparison.methods


# ---- every preset's fast form, end to end ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "points", "figure"),
    [
        ("inn_data_size", 2, "stlpips_vs_inn_pairs.png"),
        ("snr_generalisation", 4, "stlpips_vs_snr.png"),
        ("mismatch", 2, "stlpips_vs_snr.png"),
    ],
)
def test_fast_form_end_to_end(tmp_path: Path, preset: str, points: int, figure: str) -> None:
    """``+experiment=PRESET debug=fast``: one command, its table with a variant column and its
    figures; the same command again evaluates nothing new."""
    args = [f"+experiment={preset}", "debug=fast", "logger=csv", "print_config=false"]
    env: dict[str, str | None] = {"SINGEXP_OUTPUT": None}
    first = run_cli(*args, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "outputs" / "sweeps" / f"{preset}_fast"
    assert len(list(sweep.glob("*/metrics.json"))) == points
    assert "| variant |" in (sweep / "report" / "results.md").read_text()
    assert (sweep / "report" / figure).is_file()
    if preset == "mismatch":  # the drop of all five methods
        drop = (sweep / "report" / "drop.md").read_text()
        for method in (
            "deepjscc",
            "sing_zero",
            "sing_inn",
            "dps_jscc",
            "inverse_jscc",
            "diffpir",
            "ddrm",
        ):
            assert f"| {method} |" in drop, method
    again = run_cli(*args, cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("reusing them") == points


def test_editing_a_presets_grid_list_keeps_finished_points_reusable() -> None:
    # each point's config.yaml carries the preset's grid lists; adding an SNR to the list must
    # not make the finished points differ from themselves (points.NOT_IDENTITY)
    from singexp.points import identity as comparable_config

    point = {"seed": 0, "channel": {"snr_db": 0.0}, "preset": {"grid": {"snr_db": "-5,0,5"}}}
    edited = {**point, "preset": {"grid": {"snr_db": "-5,0,5,10"}}}
    assert comparable_config(point) == comparable_config(edited)
    assert comparable_config({**point, "seed": 1}) != comparable_config(point)
