"""``+hparams_search=sing_inn_optuna``: Hydra's Optuna sweeper over SING-INN's ζ, η and
SING-Zero's η, minimising ST-LPIPS with a PSNR constraint (``singexp.__main__.objective``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import run_cli
from singexp.__main__ import objective
from singexp.config import CONF_DIR
from singexp.errors import ConfigError

PRESET = ["+experiment=sing_inn", "+hparams_search=sing_inn_optuna"]
PARAMS = ("methods.sing_inn.zeta", "methods.sing_inn.eta", "methods.sing_zero.eta")


def _results(inn_psnr: float, stlpips: float = 0.3) -> dict:
    return {
        "methods": {
            "deepjscc": {"psnr": 20.0, "stlpips": 0.5},
            "sing_inn": {"psnr": inn_psnr, "stlpips": stlpips},
        }
    }


def test_preset_composes_an_optuna_search_over_existing_keys() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=PRESET, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"
    assert set(sweeper.params) == set(PARAMS)
    for key in PARAMS:  # every searched key is a key of the experiment
        assert OmegaConf.select(cfg, key) is not None, key
    assert cfg.optimized_metric == "methods.sing_inn.stlpips"


def test_objective_is_stlpips_plus_psnr_shortfall() -> None:
    cfg = OmegaConf.create(
        {
            "optimized_metric": "methods.sing_inn.stlpips",
            "objective_penalty": {
                "value": "methods.sing_inn.psnr",
                "floor": "methods.deepjscc.psnr",
                "margin": 1.5,
                "weight": 10.0,
            },
        }
    )
    assert objective(cfg, _results(19.0)) == pytest.approx(0.3)  # within 1.5 dB: no penalty
    assert objective(cfg, _results(17.5)) == pytest.approx(0.3 + 10 * 1.0)
    cfg.objective_penalty = None
    assert objective(cfg, _results(10.0)) == pytest.approx(0.3)
    cfg.optimized_metric = "methods.sing_inn.lpips"
    with pytest.raises(ConfigError, match="optimized_metric"):
        objective(cfg, _results(19.0))


@pytest.mark.slow
def test_optuna_preset_runs_four_quick_trials_and_writes_the_best(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        *PRESET,
        "quick=true",
        "logger=none",
        "print_config=false",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={sweep}",
        "-m",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = sorted(sweep.glob("trial_*/metrics.json"))
    assert len(trials) == 4
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=PRESET)
    values = [objective(cfg, json.loads(t.read_text())) for t in trials]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(best.best_params) == set(PARAMS)
    assert best.best_value == pytest.approx(min(values))
    params = [json.loads(t.read_text())["samplers"] for t in trials]
    assert len({p["sing_inn"]["zeta"] for p in params}) == 4  # four different trials
    assert all(p["sing_inn"]["steps"] == 10 for p in params)  # quick mode
    # the report: a trials table best first, the best marked, scored on val, and
    # one row per trial and method in results.csv, told apart by the searched keys
    table = (sweep / "report" / "results.md").read_text()
    assert "Trials of the search, scored on the val split (4 trials" in table
    assert "over val images" in table and "test images" not in table
    with (sweep / "report" / "trials.csv").open() as f:
        ranked = list(csv.DictReader(f))
    assert [r["best"] for r in ranked] == ["True", "False", "False", "False"]
    assert float(ranked[0]["objective"]) == pytest.approx(min(values), abs=1e-9)
    assert [float(r["objective"]) for r in ranked] == sorted(float(r["objective"]) for r in ranked)
    best_row = next(line for line in table.splitlines() if line.startswith("| 1 ★ |"))
    assert ranked[0]["trial"] in best_row
    with (sweep / "report" / "results.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "psnr"]
    assert len(rows) == len({(r["method"], r["variant"]) for r in rows})  # no duplicates
    assert len({r["variant"] for r in rows}) == 4  # one per trial
    assert all("methods.sing_inn.zeta=" in r["variant"] for r in rows)
