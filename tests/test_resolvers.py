"""The config resolvers: one W&B group per sweep, safe sweep folder names."""

from pathlib import Path

from omegaconf import OmegaConf

import singexp  # noqa: F401  (registers the resolvers)
from singexp.resolvers import MAX_DIRNAME, run_group, safe_dirname, sweep_group


def test_safe_dirname_drops_quotes_and_separators() -> None:
    assert safe_dirname("bcr='1_768',channel.snr_db=-5") == "bcr=1_768,channel.snr_db=-5"
    assert safe_dirname("jscc.checkpoint=/a/b c.ckpt") == "jscc.checkpoint=_a_b_c.ckpt"
    assert safe_dirname("") == "run"


def test_safe_dirname_bounds_length_and_keeps_names_distinct() -> None:
    a = safe_dirname("x=" + "1" * 300)
    b = safe_dirname("x=" + "1" * 299 + "2")
    assert len(a) == len(b) == MAX_DIRNAME and a != b
    assert a.startswith("x=111")


def test_one_group_per_sweep() -> None:
    assert sweep_group("sing_inn", "outputs/sing_inn/multiruns/2026-11-25_07-00-00") == (
        "sing_inn-2026-11-25_07-00-00"
    )
    assert sweep_group("paper_grid", Path("outputs/sweeps/paper_grid")) == "paper_grid"
    assert sweep_group("a", "x/s1") != sweep_group("a", "x/s2")
    long = [sweep_group("a", "x/" + "y" * 300 + end) for end in "12"]
    assert all(len(g) <= 128 for g in long) and long[0] != long[1]  # W&B's limit, still distinct


def test_group_resolver_reads_the_run_mode() -> None:
    single = OmegaConf.create({"hydra": {"mode": "RUN"}, "g": "${singexp.group:exp}"})
    sweep = OmegaConf.create(
        {"hydra": {"mode": "MULTIRUN", "sweep": {"dir": "/o/s7"}}, "g": "${singexp.group:exp}"}
    )
    assert single.g == "exp" and sweep.g == "exp-s7"
    assert run_group("exp") == "exp"  # no Hydra at all: a plain run


def test_dirname_resolver_in_a_config() -> None:
    cfg = OmegaConf.create({"d": "bcr='1_768',p=/x/y", "s": "${singexp.dirname:${d}}"})
    assert cfg.s == "bcr=1_768,p=_x_y"


def test_sweep_dirname_is_shared_by_the_jobs_of_a_sweep() -> None:
    """Hydra resolves the sweep folder in the sweep's config, then copies the resolver cache
    into each job's config (whose own override_dirname differs): all get the sweep's folder."""
    node = "${singexp.sweep_dirname:${overrides}}"
    sweep = OmegaConf.create({"overrides": "bcr='1_768',snr=-5,5", "dir": node})
    assert sweep.dir == "bcr=1_768,snr=-5,5"
    job = OmegaConf.create({"overrides": "bcr='1_768',snr=-5", "dir": node})
    OmegaConf.copy_cache(from_config=sweep, to_config=job)
    assert job.dir == sweep.dir
    assert OmegaConf.create({"overrides": "", "dir": node}).dir == "sweep"
