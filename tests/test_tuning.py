"""The tuning protocol: every method tuned with the same budget on validation images,
the chosen values written for the comparison, which scores them on the test images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from singexp import tasks
from singexp.config import CONF_DIR, validate
from singexp.data.shapes import ShapesDataModule
from singexp.errors import ConfigError, SingexpError
from singexp.report import paired_differences
from singexp.tuning import collect, read_sweep, tuned_config, write_tuned

METHODS = ("sing_zero", "sing_inn", "dps_jscc", "inverse_jscc", "diffpir", "ddrm")


def preset(method: str, *overrides: str, hydra: bool = True) -> DictConfig:
    """The tuning preset of ``method`` as Hydra composes it (with Hydra's own node, or as the
    job of one trial sees it)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[f"+experiment=tune_{method}", *overrides],
            return_hydra_config=hydra,
        )


# ---- the presets: one protocol ------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_each_preset_tunes_its_method_on_validation_images(method: str) -> None:
    cfg = preset(method)
    assert cfg.evaluate.split == "val"  # never the test images
    assert list(cfg.methods) == [method]  # only the method it tunes (DeepJSCC always runs)
    assert cfg.optimized_metric == f"methods.{method}.stlpips"
    assert cfg.objective_penalty.value == f"methods.{method}.psnr"
    assert cfg.objective_penalty.floor == "methods.deepjscc.psnr"
    params = cfg.hydra.sweeper.params
    assert params and all(str(k).startswith(f"methods.{method}.") for k in params)
    assert cfg.hydra.sweeper.sampler.seed == cfg.seed  # seeded TPE


def test_every_preset_has_the_same_budget_point_and_objective() -> None:
    def budget(cfg: DictConfig) -> tuple[Any, ...]:
        return (
            cfg.hydra.sweeper.n_trials,
            cfg.hydra.sweeper.sampler.n_startup_trials,
            cfg.evaluate.images,
            cfg.evaluate.split,
            cfg.bcr.ratio,
            cfg.channel.snr_db,
            cfg.dataset.name,
            cfg.objective_penalty.margin,
            cfg.objective_penalty.weight,
        )

    budgets = {budget(preset(m)) for m in METHODS}
    assert len(budgets) == 1, budgets


# ---- tuning never reads a test image ------------------------------------------------------------
def test_a_tuning_trial_reads_no_test_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial of the tuning preset, run through the task layer with a data module that records
    every image it hands out, by split: the scored images are validation images, and no test
    image is ever read."""
    read: list[str] = []
    make_split = ShapesDataModule.make_split

    class Recorded(torch.utils.data.Dataset):
        def __init__(self, inner: Any, split: str) -> None:
            self.inner, self.split = inner, split

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int) -> Any:
            read.append(self.split)
            return self.inner[i]

    def recording(self: ShapesDataModule, split: str) -> Any:
        return Recorded(make_split(self, split), split)

    monkeypatch.setattr(ShapesDataModule, "make_split", recording)
    # run() sets torch's thread count for the process; keep this pytest process's own
    monkeypatch.setattr(tasks, "apply_thread_policy", lambda setting: torch.get_num_threads())
    cfg = preset(
        "sing_zero",
        f"paths.output_dir={tmp_path}",
        "evaluate.images=4",
        "methods.sing_zero.steps=2",
        "logger=none",
        "print_config=false",
        hydra=False,  # one trial, as the sweeper's job runs it
    )
    results = tasks.run(cfg)
    assert results["evaluated_split"] == "val"
    assert results["methods"]["sing_zero"]["images"] == 4
    assert "val" in read and "test" not in read, sorted(set(read))


def test_evaluate_split_other_than_test_or_val_is_one_line(make_cfg: Callable[..., Any]) -> None:
    from singexp.preflight import preflight

    with pytest.raises(ConfigError, match=r"^evaluate\.split: must be one of \['test', 'val'\]"):
        preflight(validate(make_cfg("+experiment=sing_zero", "evaluate.split=train")))


# ---- collecting the sweeps ----------------------------------------------------------------------
def fake_sweep(
    root: Path, method: str, params: dict[str, Any], split: str = "val", trials: int = 3
) -> Path:
    sweep = root / f"tune_{method}"
    sweep.mkdir(parents=True)
    best = {"name": "optuna", "best_params": params, "best_value": 0.4}
    (sweep / "optimization_results.yaml").write_text(yaml.safe_dump(best))
    for n in range(trials):
        trial = sweep / f"trial_{n}"
        trial.mkdir()
        (trial / "config.yaml").write_text(
            yaml.safe_dump({"seed": 0, "optimized_metric": f"methods.{method}.stlpips"})
        )
        results = {
            "task": "restore",
            "seed": 0,
            "evaluated_split": split,
            "methods": {"deepjscc": {"images": 32}, method: {"images": 32}},
        }
        (trial / "metrics.json").write_text(json.dumps(results))
    return sweep


def test_a_sweep_scored_on_test_images_is_refused(tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path, "sing_inn", {"methods.sing_inn.zeta": 0.5}, split="test")
    with pytest.raises(SingexpError, match=r"trial_0: scored on the test split"):
        read_sweep(sweep)


def test_sweeps_of_different_budgets_are_refused(tmp_path: Path) -> None:
    fake_sweep(tmp_path, "sing_inn", {"methods.sing_inn.zeta": 0.5}, trials=3)
    fake_sweep(tmp_path, "dps_jscc", {"methods.dps_jscc.zeta": 0.2}, trials=2)
    with pytest.raises(SingexpError, match=r"different budgets"):
        collect([tmp_path])


def test_the_tuned_config_sets_the_chosen_values_over_the_defaults(tmp_path: Path) -> None:
    fake_sweep(
        tmp_path,
        "sing_inn",
        {"methods.sing_inn.zeta": 0.5, "methods.sing_inn.zeta_schedule": "constant"},
    )
    fake_sweep(tmp_path, "dps_jscc", {"methods.dps_jscc.zeta": 0.2})
    tuned = collect([tmp_path])
    text = tuned_config(tuned)
    assert text.startswith("# @package _global_\n")
    assert "3 trials per method" in text and "32 val images" in text
    values = yaml.safe_load(text)
    assert values == {
        "methods": {
            "dps_jscc": {"zeta": 0.2},
            "sing_inn": {"zeta": 0.5, "zeta_schedule": "constant"},
        }
    }
    base = OmegaConf.create({"methods": {"sing_inn": {"zeta": 1.0, "eta": 0.85}}})
    merged = OmegaConf.merge(base, OmegaConf.create(values))
    assert merged.methods.sing_inn == {"zeta": 0.5, "eta": 0.85, "zeta_schedule": "constant"}


def test_add_keeps_the_methods_tuned_before_and_refuses_another_budget(tmp_path: Path) -> None:
    out = tmp_path / "tuned.yaml"
    write_tuned([fake_sweep(tmp_path / "a", "sing_inn", {"methods.sing_inn.zeta": 0.5})], out)
    ddrm = fake_sweep(tmp_path / "b", "ddrm", {"methods.ddrm.eta": 0.7})
    write_tuned([ddrm], out, add=True)
    assert yaml.safe_load(out.read_text()) == {
        "methods": {"ddrm": {"eta": 0.7}, "sing_inn": {"zeta": 0.5}}
    }
    assert "#   sing_inn: best objective 0.4000 (tune_sing_inn)" in out.read_text()
    write_tuned([ddrm], out)  # without --add: the sweeps alone
    assert yaml.safe_load(out.read_text()) == {"methods": {"ddrm": {"eta": 0.7}}}
    write_tuned([fake_sweep(tmp_path / "c", "sing_inn", {"methods.sing_inn.zeta": 1.0})], out)
    other = fake_sweep(tmp_path / "d", "dps_jscc", {"methods.dps_jscc.zeta": 0.2}, trials=2)
    with pytest.raises(SingexpError, match=r"every method gets the same budget"):
        write_tuned([other], out, add=True)


# ---- paired differences -------------------------------------------------------------------------
def test_paired_differences_pair_by_image() -> None:
    rows = [
        {"image": "0", "method": "sing_inn", "psnr": "10", "stlpips": "0.5"},
        {"image": "1", "method": "sing_inn", "psnr": "12", "stlpips": "0.4"},
        {"image": "2", "method": "sing_inn", "psnr": "11", "stlpips": "0.3"},
        {"image": "0", "method": "dps_jscc", "psnr": "9", "stlpips": "0.2"},
        {"image": "1", "method": "dps_jscc", "psnr": "12.5", "stlpips": "0.3"},
        {"image": "2", "method": "dps_jscc", "psnr": "9", "stlpips": ""},
    ]
    got = paired_differences(rows, "sing_inn", ("psnr", "stlpips"))
    diffs = [9 - 10, 12.5 - 12, 9 - 11]
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    assert got[("dps_jscc", "psnr")] == pytest.approx((mean, 1.959964 * sd / 3**0.5, 3))
    # ST-LPIPS of image 2 is missing for DPS-JSCC: two pairs, not three
    stl = got[("dps_jscc", "stlpips")]
    assert stl[2] == 2 and stl[0] == pytest.approx(((0.2 - 0.5) + (0.3 - 0.4)) / 2)
    assert ("sing_inn", "psnr") not in got  # the reference against itself


def test_the_report_writes_paired_differences_where_a_point_names_its_reference(
    tmp_path: Path,
) -> None:
    from singexp.report import report

    sweep = tmp_path / "sweep"
    for snr, reference in ((0.0, "sing_inn"), (5.0, None)):
        point = sweep / f"snr{snr}"
        point.mkdir(parents=True)
        (point / "config.yaml").write_text(
            yaml.safe_dump({"evaluate": {"paired_reference": reference}})
        )
        methods = {m: {"psnr": 10.0, "images": 2} for m in ("deepjscc", "sing_inn", "dps_jscc")}
        results = {"dataset": "shapes", "channel": "awgn", "bcr": "1/48", "snr_db": snr}
        (point / "metrics.json").write_text(json.dumps({**results, "methods": methods}))
        lines = ["image,method,psnr"]
        lines += [f"{i},sing_inn,{10 + i}" for i in range(2)]
        lines += [f"{i},dps_jscc,{9 + 2 * i}" for i in range(2)]
        lines += [f"{i},deepjscc,{11}" for i in range(2)]
        (point / "per_image.csv").write_text("\n".join(lines) + "\n")
    summary = report(sweep)
    paired = (sweep / "report" / "paired.md").read_text()
    # dps − sing_inn per image: 9 − 10 = −1 and 11 − 11 = 0 → mean −0.5, only at 0 dB
    assert "| 1/48 | 0 | dps_jscc − sing_inn | -0.500 ± 0.980 |" in paired
    assert "deepjscc − sing_inn | +0.500 ± 0.980 |" in paired
    assert "| 5 |" not in paired  # that point names no reference
    assert str(sweep / "report" / "paired_psnr_vs_snr.png") in summary["files"]


def test_the_sing_inn_optuna_preset_tunes_on_validation_images_too() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["+experiment=sing_inn", "+hparams_search=sing_inn_optuna"]
        )
    assert cfg.evaluate.split == "val"


# ---- the comparison -----------------------------------------------------------------------------
def test_the_comparison_reads_the_tuned_values_and_scores_test_images() -> None:
    tuned = OmegaConf.load(CONF_DIR / "tuned" / "embedded.yaml")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=comparison"])
    assert cfg.evaluate.split == "test" and cfg.evaluate.paired_reference == "sing_inn"
    assert list(cfg.methods) == list(METHODS)
    for method, values in tuned.methods.items():
        for key, value in values.items():
            assert cfg.methods[method][key] == value, (method, key)


@pytest.mark.slow
def test_the_comparison_is_one_command_and_regenerates_identically(tmp_path: Path) -> None:
    from conftest import run_cli

    args = [
        "+experiment=comparison",
        "debug=fast",
        "dataset.test_size=4",
        "dataset.batch_size=4",
        "methods.inverse_jscc.iterations=2",
        "logger=csv",
        "print_config=false",
    ]
    reports = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        done = run_cli(*args, cwd=tmp_path / name, env={"SINGEXP_OUTPUT": None})
        assert done.returncode == 0, done.stderr[-3000:]
        reports.append(tmp_path / name / "outputs" / "sweeps" / "comparison_fast" / "report")
    for file in ("results.md", "paired.md"):
        assert (reports[0] / file).read_text() == (reports[1] / file).read_text(), file
    paired = (reports[0] / "paired.md").read_text()
    for method in ("deepjscc", "sing_zero", "dps_jscc", "inverse_jscc", "diffpir", "ddrm"):
        assert f"| {method} − sing_inn |" in paired, method
    assert (reports[0] / "paired_stlpips_vs_snr.png").is_file()


def test_results_saved_before_the_evaluate_keys_existed_are_still_reused() -> None:
    from singexp.points import identity as comparable_config

    before = {"seed": 0, "evaluate": {"grid_images": 8, "precision": "fp32"}}
    now = {
        "seed": 0,
        "evaluate": {
            "grid_images": 8,
            "precision": "fp32",
            "split": "test",
            "images": None,
            "paired_reference": None,
        },
    }
    assert comparable_config(before) == comparable_config(now)
    tuning = {**now, "evaluate": {**now["evaluate"], "split": "val"}}
    assert comparable_config(tuning) != comparable_config(before)  # another config
