"""``quick=true`` wins over the experiment's own settings, never over the command line's keys,
and what it sets or leaves is validated; the short config print."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import run_cli
from singexp.config import CONF_DIR, validate
from singexp.config_print import config_summary, show_config
from singexp.errors import ConfigError
from singexp.quick import apply_quick, command_line_keys

QUICK = OmegaConf.load(CONF_DIR / "quick.yaml")
STEPS = int(QUICK.sampler_steps)
TEST_IMAGES = int(QUICK.set.dataset.test_size)


def _quick(make_cfg: Callable[..., DictConfig], *overrides: str) -> tuple[DictConfig, DictConfig]:
    """The config as composed, and as the run sees it after :func:`apply_quick`."""
    plain = make_cfg(*overrides, "quick=true")
    cfg = make_cfg(*overrides, "quick=true")
    assert apply_quick(cfg)
    return plain, cfg


def test_quick_wins_over_sing_zero(make_cfg: Callable[..., DictConfig]) -> None:
    plain, cfg = _quick(make_cfg, "+experiment=sing_zero")
    assert plain.sampler.steps != STEPS and plain.dataset.test_size != TEST_IMAGES
    assert cfg.sampler.steps == STEPS
    assert cfg.dataset.test_size == TEST_IMAGES
    assert cfg.dataset.batch_size == QUICK.set.dataset.batch_size


def test_quick_wins_over_every_method_of_sing_inn(make_cfg: Callable[..., DictConfig]) -> None:
    plain, cfg = _quick(make_cfg, "+experiment=sing_inn")
    assert plain.methods.sing_inn.steps != STEPS
    assert {name: node.steps for name, node in cfg.methods.items()} == {
        "sing_zero": STEPS,
        "sing_inn": STEPS,
    }
    assert cfg.dataset.test_size == TEST_IMAGES


def test_quick_keeps_the_command_lines_keys(make_cfg: Callable[..., DictConfig]) -> None:
    given = ["+experiment=sing_inn", "methods.sing_inn.steps=50", "dataset.test_size=4"]
    cfg = make_cfg(*given, "quick=true")
    quick = apply_quick(cfg, overrides=[*given, "quick=true"])
    assert quick and cfg.methods.sing_inn.steps == 50 and cfg.dataset.test_size == 4
    assert cfg.methods.sing_zero.steps == STEPS  # what the user left unset, quick sets
    assert cfg.dataset.batch_size == QUICK.set.dataset.batch_size
    assert set(quick.kept) == {"methods.sing_inn.steps", "dataset.test_size"}
    assert f"dataset.batch_size={QUICK.set.dataset.batch_size}" in quick.set
    assert not any(s.startswith("dataset.test_size") for s in quick.set)
    assert f"{STEPS} steps for methods.sing_zero" in quick.set


def test_command_line_keys_are_values_not_group_choices() -> None:
    keys = command_line_keys(
        [
            "+experiment=sing_zero",
            "dataset=shapes",
            "bcr='1_96'",
            "dataset.test_size=4",
            "++trainer.max_epochs=2",
            "~prior.source",
            "hydra.run.dir=x",
            "quick=true",
        ]
    )
    assert keys == {"dataset.test_size", "trainer.max_epochs", "prior.source", "quick"}


@pytest.mark.parametrize(
    ("override", "key"),
    [("dataset.batch_size=abc", "dataset.batch_size"), ("sampler.steps=0", "sampler.steps")],
)
def test_quick_leaves_a_bad_value_to_validation(
    make_cfg: Callable[..., DictConfig], override: str, key: str
) -> None:
    given = ["+experiment=sing_zero", "quick=true", override]
    cfg = make_cfg(*given)
    apply_quick(cfg, overrides=given)
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        validate(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dataset.batch_size=abc", "dataset.batch_size"),
        ("sampler.steps=0", "sampler.steps"),
        ("operator.scale=3", "operator.scale"),  # an interpolation (inn.scale) that fails
    ],
)
def test_bad_value_with_quick_is_one_line_error(tmp_path: Path, override: str, key: str) -> None:
    experiment = "sing_inn" if key.startswith("operator") else "sing_zero"
    result = run_cli(
        f"+experiment={experiment}",
        "quick=true",
        override,
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"singexp: error: {key}: "), result.stderr
    assert not (tmp_path / "config.yaml").exists()  # before anything is written


def test_quick_caps_inverse_jscc_iterations(make_cfg: Callable[..., DictConfig]) -> None:
    plain, cfg = _quick(make_cfg, "+experiment=baselines")
    assert plain.methods.inverse_jscc.iterations > QUICK.sampler_iterations
    assert cfg.methods.inverse_jscc.iterations == QUICK.sampler_iterations
    assert cfg.methods.dps_jscc.steps == STEPS


def test_quick_wins_over_train_inn_epochs(make_cfg: Callable[..., DictConfig]) -> None:
    plain, cfg = _quick(make_cfg, "+experiment=embedded_inn")  # 4 epochs of 2048 images
    assert plain.trainer.max_epochs != QUICK.set.trainer.max_epochs
    for key, value in QUICK.set.trainer.items():
        assert cfg.trainer[key] == value, key
    assert cfg.dataset.train_size == QUICK.set.dataset.train_size
    _, cfg = _quick(make_cfg, "+experiment=train_inn")
    assert cfg.trainer.max_epochs == QUICK.set.trainer.max_epochs
    assert cfg.trainer.limit_train_batches == QUICK.set.trainer.limit_train_batches


def test_quick_adds_keys_only_to_target_nodes(tmp_path: Path) -> None:
    (tmp_path / "quick.yaml").write_text(
        "set:\n  trainer: {limit_train_batches: 2}\n  prior: {max_steps: 4, new_key: 1}\n"
        "sampler_steps: 3\n"
    )
    cfg = OmegaConf.create(
        {
            "quick": True,
            "trainer": {"_target_": "lightning.Trainer"},
            "prior": {"max_steps": 3000},
            "methods": {"a": {"steps": 100}, "b": {"name": "none"}},
        }
    )
    OmegaConf.set_struct(cfg, True)
    assert apply_quick(cfg, conf_dir=tmp_path)
    assert cfg.trainer.limit_train_batches == 2  # a third-party signature takes new keys
    assert cfg.prior == {"max_steps": 4}  # a schema-checked group does not
    assert cfg.methods.a.steps == 3 and "steps" not in cfg.methods.b


def test_quick_off_changes_nothing(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("+experiment=sing_zero")
    before = OmegaConf.to_container(cfg)
    assert not apply_quick(cfg)
    assert OmegaConf.to_container(cfg) == before


def test_quick_not_a_boolean_is_one_line_error(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="quick"):
        apply_quick(make_cfg("quick=maybe"))


@pytest.mark.slow
def test_sing_zero_quick_runs_the_small_form(tmp_path: Path) -> None:
    # "under a minute" is what the small form buys (README); a wall-time assertion would flake on
    # a loaded machine, so the test pins the small form itself: steps and images
    result = run_cli(
        "+experiment=sing_zero",
        "quick=true",
        "dataset.test_size=4",  # the command line's value: quick keeps it
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        env={"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["quick"] is True
    assert results["threads"] >= 1  # what threads=auto chose (src/singexp/threads.py)
    assert results["omp_wait_policy"] == "OMP_WAIT_POLICY=PASSIVE"  # set by the command line
    assert results["samplers"]["sing_zero"]["steps"] == STEPS
    with (tmp_path / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * len(results["methods"])
    assert {summary["images"] for summary in results["methods"].values()} == {4}
    assert "quick: true (set " in result.stdout
    assert f"{STEPS} steps for sampler" in result.stdout
    assert "kept the command line's dataset.test_size" in result.stdout


# --- the config print: short by default, print_config=full, print_config=false ---


def test_config_print_is_short_by_default(
    make_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_cfg("+experiment=sing_inn", "channel.snr_db=1")
    assert cfg.print_config == "short"
    show_config(cfg, ["+experiment=sing_inn", "channel.snr_db=1"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 12
    assert "overrides: +experiment=sing_inn channel.snr_db=1" in out
    assert "experiment_name: sing_inn" in out
    assert "snr_db 1" in out and "bcr: 1/48" in out
    assert "sing_zero (100 steps), sing_inn (100 steps)" in out


@pytest.mark.parametrize(("mode", "full"), [("full", True), ("false", False)])
def test_config_print_full_or_nothing(
    make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
    mode: str,
    full: bool,
) -> None:
    cfg = make_cfg("+experiment=sing_zero", f"print_config={mode}")
    show_config(cfg, [])
    out = capsys.readouterr().out
    if full:
        assert out.strip() == OmegaConf.to_yaml(cfg, resolve=True).strip()
        assert len(out.splitlines()) > 50
    else:
        assert out == ""


def test_config_print_bad_mode_is_one_line_error(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match="print_config"):
        show_config(make_cfg("print_config=long"), [])


def test_config_summary_says_what_quick_set(make_cfg: Callable[..., DictConfig]) -> None:
    given = ["+experiment=sing_zero", "quick=true", "dataset.test_size=4"]
    cfg = make_cfg(*given)
    text = config_summary(cfg, given, apply_quick(cfg, overrides=given))
    line = next(line for line in text.splitlines() if "quick:" in line)
    assert line.startswith("  quick: true (set min_train_steps=0, dataset.min_train_images=0")
    assert f"{STEPS} steps for sampler" in line
    assert "kept the command line's dataset.test_size" in line


def test_config_summary_of_training_task_names_epochs(
    make_cfg: Callable[..., DictConfig],
) -> None:
    text = config_summary(make_cfg("+experiment=jscc"), [])
    assert "trainer.max_epochs: 6" in text and "methods" not in text
