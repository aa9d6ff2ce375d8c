"""A model file's architecture must be the config's (the network is built from the file, and
config.yaml records the config): ``inn=light`` runs the shipped light INN, and a shipped or given
INN or DeepJSCC codec of another architecture than the ``inn``/``jscc`` keys is a one-line error
naming the key (the INN's selection and file checks: tests/test_inn.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from conftest import run_cli
from singexp.config import ASSETS_DIR, validate
from singexp.errors import ConfigError
from singexp.preflight import preflight

CODEC_1_48 = ASSETS_DIR / "jscc_shapes32" / "jscc_1_48.safetensors"


@pytest.mark.parametrize(
    ("override", "key", "found"),
    [
        ("jscc.width=32", "jscc.width", "width=64"),
        ("jscc.snr_adaptive=false", "jscc.snr_adaptive", "snr_adaptive=True"),
    ],
)
@pytest.mark.parametrize("checkpoint", ["embedded", str(CODEC_1_48)])
def test_codec_of_another_architecture_is_one_line_error(
    make_cfg: Callable[..., DictConfig], override: str, key: str, found: str, checkpoint: str
) -> None:
    cfg = make_cfg("+experiment=sing_inn", f"jscc.checkpoint={checkpoint}", override)
    with pytest.raises(ConfigError) as error:
        preflight(validate(cfg))
    message = str(error.value)
    assert message.startswith(f"{key}: is ") and "\n" not in message
    assert f"jscc_1_48.safetensors was built with {found}; set {key}=" in message


def test_codec_of_another_downsample_is_one_line_error(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("+experiment=sing_inn", "jscc.downsample=8")
    with pytest.raises(ConfigError) as error:
        preflight(validate(cfg))
    assert str(error.value) == (
        "jscc.checkpoint: jscc_1_48.safetensors was trained for downsample=16 but the config "
        "has jscc.downsample=8; set jscc.downsample=16 or use a matching checkpoint"
    )


def test_the_shipped_models_pass_with_their_own_keys(make_cfg: Callable[..., DictConfig]) -> None:
    for overrides in ([], ["inn=light"], ["inn=light", "bcr=1_24"], ["bcr=1_768"]):
        preflight(validate(make_cfg("+experiment=sing_inn", *overrides)))


def test_inn_light_where_none_is_shipped_is_one_line_error(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg("+experiment=sing_inn", "inn=light", "bcr=1_192")
    with pytest.raises(ConfigError) as error:
        preflight(validate(cfg))
    message = str(error.value)
    assert message.startswith("inn.width: is 16 but no embedded INN for bcr 1/192 has it")
    assert "set inn.width=32" in message and "inn.checkpoint=PATH" in message


@pytest.mark.slow
def test_inn_light_runs_the_light_network(tmp_path: Path) -> None:
    result = run_cli(
        "+experiment=sing_inn",
        "inn=light",
        "quick=true",
        "logger=none",
        "print_config=false",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["inn_checkpoint"].endswith("inn_1_48_w16p2.safetensors")
    ran = results["samplers"]["sing_inn"]["inn_architecture"]  # the network that ran
    assert (ran["width"], ran["pairs"]) == (16, 2)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (config["inn"]["width"], config["inn"]["pairs"]) == (16, 2)  # what config.yaml says
