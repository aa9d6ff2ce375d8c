"""A run folder's results: ``metrics.json`` written whole (:func:`write_json`), reused when the
same config runs again (:func:`finished_results`), set aside when another config runs in the same
folder (:func:`archive_results`)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from singexp.faults import atomic_write_text, read_results, required_result_keys

log = logging.getLogger("singexp")

#: the method names a restoration's results use besides the restorers' own: the DeepJSCC output
#: x̂ every restorer starts from, the originals, and the trivial mean-image baseline
BASELINE = "deepjscc"
ORIGINAL = "original"
TRIVIAL = "mean_image"


def _jsonable(value: Any) -> Any:
    """Replace NaN/inf by None so that metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (temp file + rename): ``path`` is never left torn."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


#: config keys that do not change a run's results: how it prints, and where things are written
#: (``paths``: a moved or copied run or sweep folder is reused, not recomputed), and a preset's
#: grid lists (``preset``: what the sweep expands to; each point's own keys are compared)
REUSE_IGNORED = ("force", "print_config", "paths", "preset")


#: keys added to the config after results were written, with the default that reproduces what
#: ran before them: a saved config without such a key equals one with its default (issue 31)
ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "evaluate": {"split": "test", "images": None, "paired_reference": None, "compile": False},
}


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as reuse compares it: without :data:`REUSE_IGNORED`, without the
    :data:`ADDED_DEFAULTS` at their defaults, and with paths inside its own run folder (logger
    and checkpoint folders) written relative to ``<run>``."""
    out = str((config.get("paths") or {}).get("output_dir") or "")
    config = dict(config)
    for group, defaults in ADDED_DEFAULTS.items():
        if isinstance(config.get(group), dict):
            config[group] = {
                k: v for k, v in config[group].items() if k not in defaults or v != defaults[k]
            }

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str) and out and (value == out or value.startswith(out + "/")):
            return "<run>" + value[len(out) :]
        return value

    return {k: strip(v) for k, v in config.items() if k not in REUSE_IGNORED}


def finished_results(config: Mapping[str, Any], out: Path) -> dict[str, Any] | None:
    """The results of an earlier run of exactly ``config`` (the run's resolved config:
    ``RunConfig.plain``) in ``out``, unless ``force``; a ``metrics.json`` that does not parse or
    is incomplete (a torn write) does not count."""
    done, saved = out / "metrics.json", out / "config.yaml"
    if config.get("force", False) or not done.is_file() or not saved.is_file():
        return None
    results, why = read_results(done, required_result_keys(str(config.get("task"))))
    if results is None:
        log.warning("%s: %s; the run counts as unfinished and runs again", out, why)
        return None
    try:
        before = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.load(saved)))
    except Exception:  # a config.yaml that does not parse is not this config's
        return None
    return results if comparable_config(dict(config)) == comparable_config(before) else None


#: what a finished run leaves in its folder besides checkpoints and logger folders
RESULT_FILES = ("metrics.json", "config.yaml", "per_image.csv", "grid.png")


def archive_results(out: Path) -> Path | None:
    """Move the results of an earlier run of another config (or a forced re-run) in ``out`` to
    ``out/superseded/<time of its metrics.json>/`` so that nothing is overwritten; checkpoints
    stay (training resumes from them)."""
    done = out / "metrics.json"
    if not done.is_file():
        return None
    stamp = datetime.fromtimestamp(done.stat().st_mtime).strftime("%Y-%m-%d_%H-%M-%S")
    target = out / "superseded" / stamp
    target.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (out / name).is_file():
            shutil.move(out / name, target / name)
    log.warning(
        "%s held results that are not this config's (another config, force=true or a torn "
        "metrics.json): moved to %s",
        out,
        target,
    )
    return target
