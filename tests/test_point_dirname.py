"""Sweep point folders: short names that still say the point and never change for a command."""

from __future__ import annotations

from omegaconf import OmegaConf

from singexp.config import CONF_DIR
from singexp.resolvers import MAX_POINT_DIRNAME, point_dirname

LONG = (
    "bcr=1_768,channel.snr_db=5,dataset.batch_size=4,dataset.test_size=4,logger=csv,"
    "methods.sing_inn.progress=false,methods.sing_inn.steps=2,methods.sing_zero.progress=false,"
    "methods.sing_zero.steps=2,paths.root=/very/long/path/to/somewhere/outputs"
)


def test_point_names_are_short_and_say_the_point() -> None:
    name = point_dirname(LONG)
    assert len(name) <= MAX_POINT_DIRNAME and "/" not in name
    assert name.startswith("bcr=1_768,snr_db=5,batch_size=4")
    assert not name.split("-")[0].endswith(",")  # whole items, then the hash
    assert point_dirname(LONG) == name  # the same command finds its points again
    assert point_dirname(LONG.replace("steps=2", "steps=3")) != name  # the hash sees it all


def test_alike_keys_keep_their_parent_and_paths_are_left_out() -> None:
    text = "methods.sing_inn.eta=0.5,methods.sing_zero.eta=1,paths.root=/x"
    assert point_dirname(text) == "sing_inn.eta=0.5,sing_zero.eta=1"
    assert point_dirname("channel.train_snr_range=[-5,5]") == "train_snr_range=[-5,5]"
    assert point_dirname("") == "point"


def test_the_sweep_subdir_uses_it() -> None:
    hydra = OmegaConf.load(CONF_DIR / "hydra" / "default.yaml")
    subdir = OmegaConf.to_container(hydra)["sweep"]["subdir"]  # type: ignore[index]
    assert subdir == "${hydra.job.num}_${singexp.point_dirname:${hydra.job.override_dirname}}"
