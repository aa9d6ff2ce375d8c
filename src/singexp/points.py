"""What one run is, defined once: a point is its resolved config.

A run's **identity** (:func:`identity`) is its resolved config (the run folder's
``config.yaml``) without the keys that do not change its results (:data:`NOT_IDENTITY`, each
with its reason). That one function decides

- whether a run folder's results are reused (:func:`finished_results`): a finished point moved,
  renamed or run again under another W&B group is the same point;
- how a sweep's report groups and labels its points (:func:`varying_keys`, :func:`point_label`:
  every key whose value differs between the points, nothing from a fixed list);
- the keys the loggers receive (:func:`logger_keys`) and what a point's folder name shows
  (:func:`is_identity_key`, used by :func:`singexp.resolvers.point_dirname`).

A run folder's results live here too: ``metrics.json`` read (:func:`read_results`) and written
whole (:func:`write_json`), set aside when another config runs in the same folder
(:func:`archive_results`); and the content identities of trained models (:func:`identity_hash`,
:func:`file_digest`). Import-light (no torch): the resolvers and the report use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from singexp.bcr import format_ratio
from singexp.faults import atomic_write_text

log = logging.getLogger("singexp")

#: the method names a restoration's results use besides the restorers' own: the DeepJSCC output
#: x̂ every restorer starts from, the originals, and the trivial mean-image baseline
BASELINE = "deepjscc"
ORIGINAL = "original"
TRIVIAL = "mean_image"

#: config keys (dotted; a key covers everything below it) that do not change a run's results,
#: with the reason. Everything else in the resolved config is the run's identity.
NOT_IDENTITY: dict[str, str] = {
    "force": "re-runs a finished point; what it computes is the same",
    "print_config": "what the console shows",
    "paths": "where results are written: a moved or renamed run or sweep folder is the same run",
    "preset": "a preset's grid lists (what a sweep expands to); each point has its own values",
    "logger": "the loggers, their W&B group (named after the sweep folder), project and folders",
    "run_name": "the loggers' name of the run",
    "experiment_name": "the study's name on disk and in W&B",
    "threads": "CPU threads: the same numbers, faster or slower",
    "evaluate.guidance_batch": "images per guided UNet pass: the same numbers, less memory",
    "evaluate.gradient_checkpointing": "recomputed activations: the same numbers, less memory",
    "evaluate.grid_images": "how many test images grid.png shows",
    "evaluate.paired_reference": "what the sweep's report compares against (report only)",
    "optimized_metric": "what a hyper-parameter search reads from the results",
    "objective_penalty": "what a hyper-parameter search reads from the results",
    "min_train_steps": "a warning threshold",
    "dataset.min_train_images": "a warning threshold",
    "dataset.content": "what the images are: the mismatch warning compares it, not the numbers",
    "trainer.enable_model_summary": "what the console shows",
    "trainer.enable_progress_bar": "what the console shows",
    "callbacks.progress_bar": "what the console shows",
    "callbacks.model_summary": "what the console shows",
}

#: keys added to the config after results were written, with the default that reproduces what
#: ran before them: a saved config without such a key equals one with its default
ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "evaluate": {"split": "test", "images": None, "compile": False},
}

#: display names of identity keys in tables and figures (every other key: its dotted name)
DISPLAY: dict[str, str] = {
    "bcr.ratio": "BCR",
    "channel.snr_db": "SNR",
    "dataset.name": "data",
    "operator.name": "A",
    "channel.name": "channel",
    "seed": "seed",
}
#: the keys every report has as columns of their own (the grid's axes), not in a point's label
AXES = ("bcr.ratio", "channel.snr_db")


def is_identity_key(key: str) -> bool:
    """Whether the dotted ``key`` is part of a run's identity (not under :data:`NOT_IDENTITY`)."""
    key = key.lstrip("+~")
    return not any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY)


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's identity: its resolved config without :data:`NOT_IDENTITY`, without the
    :data:`ADDED_DEFAULTS` at their defaults, and with paths inside its own run folder (logger
    and checkpoint folders) written relative to ``<run>``."""
    out = str((config.get("paths") or {}).get("output_dir") or "")

    def strip(value: Any, prefix: str) -> Any:
        if isinstance(value, Mapping):
            added = ADDED_DEFAULTS.get(prefix, {})
            return {
                str(k): strip(v, f"{prefix}.{k}" if prefix else str(k))
                for k, v in value.items()
                if is_identity_key(f"{prefix}.{k}" if prefix else str(k))
                and not (k in added and v == added[k])
            }
        if isinstance(value, list | tuple):
            return [strip(v, prefix) for v in value]
        if isinstance(value, str) and out and (value == out or value.startswith(out + "/")):
            return "<run>" + value[len(out) :]
        return value

    return strip(dict(config), "")


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: value}`` (lists kept whole, as tuples)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flat(value, name))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def same_point(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two resolved configs are the same point (:func:`identity`)."""
    return identity(a) == identity(b)


# ---- a run folder's results ------------------------------------------------------------------
#: the keys every point's metrics.json has (:func:`describe`), and per task its results key
RESULT_KEYS = ("task", "dataset", "channel", "snr_db", "bcr", "seed")
TASK_RESULT_KEY = {"jscc": "test", "restore": "methods", "prior": "prior", "inn": "inn"}
#: what a finished run leaves in its folder besides checkpoints and logger folders
RESULT_FILES = ("metrics.json", "config.yaml", "per_image.csv", "grid.png")


def required_result_keys(task: str) -> tuple[str, ...]:
    """What a finished run of ``task`` has in its metrics.json."""
    extra = TASK_RESULT_KEY.get(task)
    return (*RESULT_KEYS, extra) if extra else RESULT_KEYS


def read_results(path: Path, required: Iterable[str] = ()) -> tuple[dict[str, Any] | None, str]:
    """``(results, "")`` when ``path`` parses as a JSON object holding every ``required`` key;
    else ``(None, why)``: missing, torn (unparsable) or incomplete."""
    path = Path(path)
    if not path.is_file():
        return None, "no metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"{path.name} is torn or unreadable ({type(error).__name__}: {error})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    missing = [key for key in required if key not in data]
    if missing:
        return None, f"{path.name} is incomplete (no {', '.join(missing)})"
    return data, ""


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


def read_config(folder: Path) -> dict[str, Any]:
    """A run folder's saved ``config.yaml`` as a dict ({} without one, or unreadable)."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a torn config.yaml is no config
        return {}
    return {str(k): v for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def finished_results(config: Mapping[str, Any], out: Path) -> dict[str, Any] | None:
    """The results of an earlier run of the same point (:func:`identity` of ``config``, the
    run's resolved config) in ``out``, unless ``force``; a ``metrics.json`` that does not parse
    or is incomplete (a torn write) does not count."""
    done, saved = out / "metrics.json", out / "config.yaml"
    if config.get("force", False) or not done.is_file() or not saved.is_file():
        return None
    results, why = read_results(done, required_result_keys(str(config.get("task"))))
    if results is None:
        log.warning("%s: %s; the run counts as unfinished and runs again", out, why)
        return None
    before = read_config(out)
    return results if before and same_point(config, before) else None


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


# ---- what a run says about itself ------------------------------------------------------------
def describe(
    task: str,
    dataset: str,
    image_size: int,
    channel: str,
    snr_db: float,
    ratio: Fraction,
    seed: int,
) -> dict[str, Any]:
    """The top of every metrics.json (:data:`RESULT_KEYS`): a point's grid coordinates."""
    return {
        "task": task,
        "dataset": dataset,
        "image_size": image_size,
        "channel": channel,
        "snr_db": snr_db,
        "bcr": format_ratio(ratio),
        "bcr_value": float(ratio),
        "seed": seed,
    }


def logger_keys(
    plain: Mapping[str, Any], described: Mapping[str, Any], methods: list[str]
) -> dict[str, Any]:
    """What the loggers receive as the run's hyper-parameters: the grid coordinates at the top
    level (``dataset``, ``channel``, ``snr_db``, ``bcr``: dashboards group, filter and plot by
    them), the methods, and the run's :func:`identity` as dotted keys (``sampler.eta``: the
    same keys the report tells points apart by)."""
    keys = {k: list(v) if isinstance(v, tuple) else v for k, v in flat(identity(plain)).items()}
    return {**keys, **described, "method": methods or [BASELINE]}


# ---- a sweep's points --------------------------------------------------------------------------
@dataclass
class Point:
    """One finished point of a sweep: its folder, results, saved config and identity keys."""

    folder: Path
    results: dict[str, Any]
    config: dict[str, Any]
    #: the flat :func:`identity` (config.yaml's, over what metrics.json records)
    keys: dict[str, Any]
    #: the keys given on the point's command line (Hydra's ``.hydra/overrides.yaml``)
    overrides: list[str] = field(default_factory=list)

    @property
    def bcr(self) -> str:
        return str(self.results.get("bcr"))

    @property
    def snr_db(self) -> float:
        return float(self.results.get("snr_db"))  # type: ignore[arg-type]


def _keys_from_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The identity keys a metrics.json alone tells (a point without config.yaml)."""
    keys: dict[str, Any] = {
        "task": results.get("task"),
        "dataset.name": results.get("dataset"),
        "channel.name": results.get("channel"),
        "channel.snr_db": results.get("snr_db"),
        "bcr.ratio": results.get("bcr"),
        "seed": results.get("seed"),
        "evaluate.split": results.get("evaluated_split", "test"),
    }
    operator = results.get("operator")
    if isinstance(operator, Mapping):
        keys.update({f"operator.{k}": operator.get(k) for k in ("name", "scale")})
    for method, record in (results.get("samplers") or {}).items():
        if isinstance(record, Mapping) and record.get("steps") is not None:
            keys[f"methods.{method}.steps"] = record.get("steps")
    return keys


def _overrides(folder: Path) -> list[str]:
    """The dotted keys of the point's command-line overrides (``.hydra/overrides.yaml``)."""
    path = folder / ".hydra" / "overrides.yaml"
    try:
        items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    except Exception:
        items = []
    keys = []
    for item in items if isinstance(items, list) else []:
        key = str(item).partition("=")[0].lstrip("+~")
        keys.append(f"{key}.name" if "." not in key else key)  # dataset=photos → dataset.name
    return keys


def read_point(folder: Path) -> Point | None:
    """The finished restoration point in ``folder``, or None (unfinished, torn, another task)."""
    results, _ = read_results(folder / "metrics.json", ("methods", "bcr", "snr_db"))
    if results is None:
        return None
    config = read_config(folder)
    # the grid coordinates metrics.json records, then the saved config (which wins)
    keys = {**_keys_from_results(results), **flat(identity(config))}
    return Point(folder, results, config, keys, _overrides(folder))


def _value(keys: Mapping[str, Any], key: str) -> str:
    return json.dumps(keys.get(key, "<unset>"), sort_keys=True, default=str)


def varying_keys(points: list[Point]) -> list[str]:
    """The identity keys whose value differs between ``points``, besides the grid's
    :data:`AXES`: the keys a sweep's rows are told apart by. A key the points' command lines
    set is always kept; one that follows from the others (``bcr.name`` from ``bcr.ratio``, a
    data set's keys from ``dataset.name``) only where it tells points apart that the kept keys
    do not. Ordered: :data:`DISPLAY` keys, command-line keys, then the config's order."""
    every: dict[str, None] = {}
    for point in points:
        every.update(dict.fromkeys(point.keys))
    differ = [k for k in every if len({_value(p.keys, k) for p in points}) > 1]
    given = {k for p in points for k in p.overrides}
    order = [k for k in DISPLAY if k in differ]
    order += [k for k in differ if k in given and k not in order]
    order += [k for k in differ if k not in order]
    kept = [k for k in order if k not in AXES and (k in given or k in DISPLAY)]

    def groups(keys: list[str]) -> int:
        return len({tuple(_value(p.keys, k) for k in [*AXES, *keys]) for p in points})

    for key in order:
        if key in AXES or key in kept:
            continue
        if groups([*kept, key]) > groups(kept):  # it tells apart points the others do not
            kept.append(key)
    return [k for k in order if k in kept]


def display_value(value: Any) -> str:
    """A config value as a label shows it: ``0.5``, ``avgpool``, ``[-5, 5]``."""
    if isinstance(value, tuple | list):
        return "[" + ", ".join(display_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def point_label(point: Point, keys: list[str]) -> str:
    """``A=fitted, methods.sing_inn.zeta=0.5``: the point's values of ``keys`` (display names of
    :data:`DISPLAY`); '' without keys."""
    return ", ".join(
        f"{DISPLAY.get(k, k)}={display_value(point.keys.get(k, '<unset>'))}" for k in keys
    )


def identity_hash(identity: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able training identity."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (a model's content identity, whatever its path)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- a hyper-parameter search's trials -------------------------------------------------------
def _result(results: Mapping[str, Any], key: str, config_key: str) -> float:
    """The number at the dotted ``key`` of a run's results (metrics.json), e.g.
    ``methods.sing_inn.stlpips``; a missing or null one is a one-line error naming
    ``config_key``."""
    from singexp.errors import ConfigError

    value: Any = results
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(config_key, f"{key!r} is not a number in this run's metrics.json")
    return float(value)


def objective(config: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[float, str]:
    """What a hyper-parameter search (``hparams_search``, Hydra's Optuna sweeper) optimises,
    and how it was made: ``optimized_metric`` (a dotted key of metrics.json) plus, with
    ``objective_penalty``, ``weight × max(0, floor − margin − value)``: e.g. ST-LPIPS of
    SING-INN, penalised when its PSNR falls more than ``margin`` dB below DeepJSCC's."""
    from singexp.errors import ConfigError

    key = str(config.get("optimized_metric"))
    total = metric = _result(results, key, "optimized_metric")
    line = f"{key} {metric:.4f}"
    penalty = config.get("objective_penalty")
    if penalty:
        missing = [k for k in ("value", "floor", "margin", "weight") if penalty.get(k) is None]
        if missing:
            raise ConfigError(f"objective_penalty.{missing[0]}", "must be set")
        value = _result(results, str(penalty["value"]), "objective_penalty.value")
        floor = _result(results, str(penalty["floor"]), "objective_penalty.floor")
        shortfall = max(0.0, floor - float(penalty["margin"]) - value)
        total += float(penalty["weight"]) * shortfall
        weight = float(penalty["weight"])
        line += f" + {weight:g} × {shortfall:.4f} ({penalty['value']} below floor)"
    return total, f"{line} = {total:.4f}"


def json_ready(value: Any) -> Any:
    """A JSON-ready copy of a config value: mappings with string keys, lists, scalars."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
