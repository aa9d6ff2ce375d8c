import json
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from omegaconf import DictConfig

from conftest import run_cli
from singexp.config import embedded_codec, validate
from singexp.models.artifact import ensure
from singexp.models.inn import inn_artifact_identity
from singexp.models.prior import prior_artifact_identity
from singexp.points import identity_hash


def test_ensure_builds_once_per_identity(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> Path:
        calls.append(folder)
        path = folder / "model.bin"
        path.write_bytes(b"x")
        return path

    a = ensure(tmp_path, "jscc", {"bcr": "1/768", "seed": 0}, build)
    b = ensure(tmp_path, "jscc", {"seed": 0, "bcr": "1/768"}, build)  # key order is irrelevant
    c = ensure(tmp_path, "jscc", {"bcr": "1/192", "seed": 0}, build)
    assert a == b != c and len(calls) == 2
    assert identity_hash({"a": 1}) == identity_hash({"a": 1}) != identity_hash({"a": 2})
    a.unlink()  # a lost file is rebuilt
    assert ensure(tmp_path, "jscc", {"bcr": "1/768", "seed": 0}, build) == a and len(calls) == 3


def test_ensure_reuses_a_folder_artifact(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> Path:
        calls.append(folder)
        (folder / "prior").mkdir()
        (folder / "prior" / "config.json").write_text("{}")
        return folder / "prior"

    first = ensure(tmp_path, "prior", {"lr": 1e-3}, build)
    again = ensure(tmp_path, "prior", {"lr": 1e-3}, build)
    assert first == again and first.is_dir() and len(calls) == 1


def _inn_hash(make_cfg: Callable[..., DictConfig], *overrides: str) -> str:
    cfg = make_cfg("+experiment=sing_inn", "logger=none", *overrides)
    return identity_hash(inn_artifact_identity(validate(cfg)))


def _prior_hash(make_cfg: Callable[..., DictConfig], *overrides: str) -> str:
    return identity_hash(prior_artifact_identity(validate(make_cfg("logger=none", *overrides))))


def test_auto_inn_identity_follows_training_keys_and_codec_content(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    base = _inn_hash(make_cfg)
    # evaluation settings and where things are written do not make another INN
    for same in (
        "channel.snr_db=3",
        "dataset.batch_size=4",
        "dataset.test_size=8",
        "inn.checkpoint=auto",
    ):
        assert _inn_hash(make_cfg, same) == base, same
    for other in ("inn.lambda_d=0.1", "inn.width=8", "dataset.train_size=64", "seed=1"):
        assert _inn_hash(make_cfg, other) != base, other
    # the codec counts by its content: a copy elsewhere is the same, another BCR's is not
    codec = embedded_codec(Fraction(1, 48), 32)  # the main job's BCR
    copy = tmp_path / "elsewhere.safetensors"
    shutil.copy(codec, copy)
    assert _inn_hash(make_cfg, f"jscc.checkpoint={copy}") == base
    assert _inn_hash(make_cfg, "bcr=1_192") != base


def test_auto_prior_identity_follows_training_keys_only(
    make_cfg: Callable[..., DictConfig],
) -> None:
    base = _prior_hash(make_cfg)
    for same in ("prior.grid_size=0", "prior.val_every=null", "prior.source=auto"):
        assert _prior_hash(make_cfg, same) == base, same
    for other in ("prior.lr=0.01", "prior.max_steps=2", "dataset.image_size=16"):
        assert _prior_hash(make_cfg, other) != base, other
    # with prior.batch_size=null the dataset's batch size is the one training uses
    unbatched = _prior_hash(make_cfg, "prior.batch_size=null")
    assert _prior_hash(make_cfg, "prior.batch_size=null", "dataset.batch_size=4") != unbatched


@pytest.mark.slow
def test_auto_inn_and_prior_are_trained_once_then_reused(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    base = [
        "+experiment=sing_inn",
        "inn.checkpoint=auto",
        "prior.source=auto",
        "debug=fast",
        "inn.width=8",
        "prior.max_steps=2",
        "prior.batch_size=8",
        "prior.val_every=null",
        "prior.grid_size=0",
        "prior.save_grids=false",
        "methods.sing_zero.steps=2",
        "methods.sing_inn.steps=2",
        "methods.sing_zero.progress=false",
        "methods.sing_inn.progress=false",
        "dataset.test_size=4",
        "logger=none",
        "print_config=false",
        f"paths.artifacts={art}",
    ]
    texts = []
    for snr in (-3, 3):
        result = run_cli(
            *base, f"channel.snr_db={snr}", f"hydra.run.dir={tmp_path / str(snr)}", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
        texts.append(result.stdout + result.stderr)
    first, second = texts
    assert "training inn artifact" in first and "training prior artifact" in first
    assert "reusing inn artifact" in second and "reusing prior artifact" in second
    assert "training" not in " ".join(line for line in second.splitlines() if "artifact" in line)
    (inn_folder,) = (art / "inn").iterdir()
    (prior_folder,) = (art / "prior").iterdir()
    assert (prior_folder / "prior" / "config.json").is_file()
    for snr in (-3, 3):
        metrics = json.loads((tmp_path / str(snr) / "metrics.json").read_text())
        assert metrics["inn_checkpoint"] == str(inn_folder / "inn.safetensors")
        assert metrics["prior_source"] == str(prior_folder / "prior")
        assert set(metrics["methods"]) >= {"sing_zero", "sing_inn"}
