"""OmegaConf resolvers used by ``conf/`` (registered on ``import singexp``).

- ``${singexp.group:NAME}`` — the W&B group of a run: ``NAME`` for a single run, one group per
  sweep in a multirun (:func:`sweep_group`), so that dashboards can tell sweeps apart.
- ``${singexp.dirname:TEXT}`` — ``TEXT`` (Hydra's ``override_dirname``) made into one safe folder
  name: no quotes, no path separators, bounded length.
- ``${singexp.sweep_dirname:}`` — the sweep's own command-line overrides as a folder name, so
  that the same sweep command always writes to (and resumes in) the same folder.
- ``${singexp.point_dirname:TEXT}`` — a grid point's overrides as a short folder name (keys by
  their last part, ``channel.snr_db=-5`` → ``snr_db=-5``; paths left to the sweep's name; at most
  :data:`MAX_POINT_DIRNAME` characters): ``hydra.sweep.subdir`` is ``<job number>_<this>``.
- ``${singexp.pid:}`` — the process id, in ``hydra.run.dir``: two runs started in the same
  second never share a run folder.
- ``${singexp.operator_scale:SCALE,RATIO,SIZE}`` — ``operator.scale`` resolved to a number
  (``auto`` by the BCR rule): ``inn.scale``'s default, so SING-INN and SING-Zero measure alike.

They live in a light module imported by the package itself, so that launcher worker processes
(joblib, submitit), which resolve ``hydra.sweep.subdir`` before running a job, know them too.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from singexp.points import is_identity_key

MAX_DIRNAME = 180  # characters; file systems allow 255 bytes per name
MAX_GROUP = 120  # characters; W&B allows 128
MAX_POINT_DIRNAME = 64  # characters; the job number in front keeps point folders apart
#: override keys a point's folder name leaves out (the sweep folder's name has them), besides
#: the keys that are not the point's identity (singexp.points.NOT_IDENTITY: paths, loggers, ...)
_POINT_SKIPPED = ("hydra.",)


def sweep_group(name: str, sweep_dir: str | Path) -> str:
    """One group per sweep: ``NAME`` when the sweep folder is named after the experiment (as
    ``paper_grid``'s fixed folder is), else ``NAME-<sweep folder>`` (a timestamp by default)."""
    folder = Path(str(sweep_dir)).name
    group = name if folder in ("", name) else f"{name}-{folder}"
    if len(group) > MAX_GROUP:  # W&B limits group names to 128 characters
        digest = hashlib.sha256(group.encode()).hexdigest()[:8]
        group = f"{group[: MAX_GROUP - 9]}-{digest}"
    return group


def run_group(name: str, *, _root_: Any = None) -> str:
    """``name`` for a single run; :func:`sweep_group` of the current sweep in a multirun.

    Reads the ``hydra`` node of the config when it has one (the sweep's own config, as Hydra
    callbacks see it), else Hydra's job config (a job's config has no ``hydra`` node)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = _root_.get("hydra") if _root_ is not None else None
    if hydra_cfg is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
    mode = None if hydra_cfg is None else hydra_cfg.get("mode")
    if getattr(mode, "name", mode) != RunMode.MULTIRUN.name:
        return str(name)
    assert hydra_cfg is not None  # a multirun mode was read from it
    return sweep_group(str(name), hydra_cfg.sweep.dir)


def safe_dirname(text: str) -> str:
    """``text`` as a single folder name: quotes dropped, ``/``, ``\\`` and spaces replaced by
    ``_``; names longer than :data:`MAX_DIRNAME` are cut and end in a hash of the full text."""
    name = re.sub(r"[/\\\s]+", "_", str(text).replace("'", "").replace('"', ""))
    name = name.strip("._") or "run"
    if len(name) > MAX_DIRNAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_DIRNAME - 9]}-{digest}"
    return name


def sweep_dirname(text: str) -> str:
    """The sweep's overrides (Hydra's ``override_dirname`` of the sweep's config, e.g.
    ``bcr=1_768,1_192,channel.snr_db=-5,5``) as a folder name; ``sweep`` when there are none.

    Registered with a cache, which OmegaConf keys by the argument's text, not its value: Hydra
    resolves ``hydra.sweep.dir`` in the sweep's config first and copies the cache into every
    job's config (as for ``${now:}``), so all jobs share the sweep's folder although each job's
    own ``override_dirname`` differs."""
    return safe_dirname(text) if text else "sweep"


def point_dirname(text: str) -> str:
    """A grid point's ``override_dirname`` (``bcr=1_768,channel.snr_db=-5,...``) as a short
    folder name: each key by its last dotted part (two parts where two keys would read alike:
    ``sing_zero.steps=2,sing_inn.steps=2``), ``hydra.*`` and the keys that are not the point's
    identity (:func:`singexp.points.is_identity_key`: ``paths.*``, loggers, threads) left out, then
    :func:`safe_dirname` cut at :data:`MAX_POINT_DIRNAME` characters (with a hash of the
    whole). The same overrides always give the same name (a re-run finds its points)."""
    items = [i for i in re.split(r",(?=[+~]*[\w.@/-]+=)", str(text)) if "=" in i]
    pairs = [i.split("=", 1) for i in items]
    pairs = [
        (k.lstrip("+~"), v)
        for k, v in pairs
        if not k.lstrip("+~").startswith(_POINT_SKIPPED) and is_identity_key(k)
    ]

    def short(key: str, parts: int) -> str:
        return ".".join(key.split(".")[-parts:])

    names = [short(k, 1) for k, _ in pairs]
    names = [
        short(k, 2) if names.count(n) > 1 else n for (k, _), n in zip(pairs, names, strict=True)
    ]
    if not pairs:
        return "point"
    items = [safe_dirname(f"{n}={v}") for n, (_, v) in zip(names, pairs, strict=True)]
    name = ",".join(items)
    if len(name) > MAX_POINT_DIRNAME:  # whole items that fit, then a hash of all of them
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        kept = ""
        for item in items:
            if len(kept) + len(item) + 1 > MAX_POINT_DIRNAME - 9:
                break
            kept = f"{kept},{item}" if kept else item
        name = f"{kept or items[0][: MAX_POINT_DIRNAME - 9]}-{digest}"
    return name


def operator_scale(scale: Any, ratio: Any, image_size: Any) -> int:
    """``operator.scale`` as a number (``auto``: the BCR rule of
    :func:`singexp.operators.scale_for_bcr`), so the INN measures with SING-Zero's A."""
    from singexp.operators import build_operator

    op = build_operator("avgpool", scale, ratio, int(image_size))
    return int(op.scale)  # type: ignore[attr-defined]


def process_id() -> str:
    """This process's id: with the start time, a run folder that no other job on the host has
    (``hydra.run.dir``)."""
    return str(os.getpid())


def register() -> None:
    """Register the resolvers (idempotent)."""
    OmegaConf.register_new_resolver("singexp.pid", process_id, replace=True)
    OmegaConf.register_new_resolver("singexp.operator_scale", operator_scale, replace=True)
    OmegaConf.register_new_resolver("singexp.group", run_group, replace=True)
    OmegaConf.register_new_resolver("singexp.dirname", safe_dirname, replace=True)
    OmegaConf.register_new_resolver("singexp.point_dirname", point_dirname, replace=True)
    OmegaConf.register_new_resolver(
        "singexp.sweep_dirname", sweep_dirname, replace=True, use_cache=True
    )
