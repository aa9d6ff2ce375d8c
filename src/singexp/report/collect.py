"""Reading a sweep folder: its grid points (one per identity, duplicates named), the report's
rows (one per point, method and metric), paired-difference rows, what the figures' titles say,
failed, torn and unmeasured points, and a hyper-parameter search's trials."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from singexp.points import (
    Point,
    display_value,
    objective,
    point_label,
    read_point,
    read_results,
    varying_keys,
)
from singexp.report.labels import METRICS, _row_order
from singexp.report.statistics import mean_ci, paired_differences

log = logging.getLogger("singexp.report")


#: folders whose metrics.json is not a grid point's (W&B run copies, old results, the report)
NOT_POINTS = frozenset({"report", "wandb", "superseded"})


def _inn_pairs(point: Point) -> int | None:
    """Training pairs of an INN trained for this point (``inn.checkpoint=auto``: the point's
    ``dataset.train_size``, from its config.yaml); None for a given INN file."""
    if str((point.config.get("inn") or {}).get("checkpoint")) != "auto":
        return None
    size = (point.config.get("dataset") or {}).get("train_size")
    return None if size is None else int(size)


def sweep_points(sweep_dir: Path) -> tuple[list[Point], list[tuple[Path, Path]]]:
    """The finished restoration points under ``sweep_dir``, one per identity
    (:func:`singexp.points.identity`), and the (kept, duplicate) folders of points that are the
    same point as another (they differ only in keys that do not change results, such as
    ``threads``): the newest metrics.json is kept, the others are named in the report's notes."""
    by_identity: dict[str, list[Point]] = defaultdict(list)
    for folder in _point_folders(sweep_dir, "metrics.json"):
        point = read_point(folder)
        if point is not None:  # torn, or not a restoration point: failed_points() names the former
            by_identity[json.dumps(point.keys, sort_keys=True, default=str)].append(point)
    kept, duplicates = [], []
    for same in by_identity.values():
        same.sort(key=lambda p: (p.folder / "metrics.json").stat().st_mtime, reverse=True)
        kept.append(same[0])
        duplicates += [(same[0].folder, other.folder) for other in same[1:]]
    return sorted(kept, key=lambda p: str(p.folder)), duplicates


def collect(sweep_dir: Path, points: list[Point] | None = None) -> list[dict[str, Any]]:
    """One row per (grid point, method, metric) with mean, 95% CI and the number of images, and
    the point's ``variant``: its values of every key that differs between the sweep's points
    (:func:`singexp.points.varying_keys`), each also in ``keys``."""
    if points is None:  # the sweep's points, read once by a caller that has them
        points, _ = sweep_points(sweep_dir)
    keys = varying_keys(points)
    # the variant apart from the test data: what a mismatch drop pairs points by
    data_free = [k for k in keys if not k.startswith("dataset.")]
    rows: list[dict[str, Any]] = []
    for point in points:
        results = point.results
        per_image: dict[tuple[str, str], list[float]] = defaultdict(list)
        csv_path = point.folder / "per_image.csv"
        if csv_path.is_file():
            with csv_path.open() as f:
                for r in csv.DictReader(f):
                    for m in METRICS:
                        if r.get(m) not in (None, ""):
                            per_image[(r["method"], m)].append(float(r[m]))
        variant = point_label(point, keys)
        other = point_label(point, data_free)
        values = {k: display_value(point.keys.get(k, "<unset>")) for k in keys}
        for method, summary in results["methods"].items():
            record = (results.get("samplers") or {}).get(method) or {}
            for metric in METRICS:
                measured = per_image.get((method, metric))
                if measured:
                    mean, ci = mean_ci(measured)
                elif summary.get(metric) is not None:
                    mean, ci = float(summary[metric]), float("nan")
                else:
                    continue
                rows.append(
                    {
                        "dataset": results.get("dataset"),
                        "channel": results.get("channel"),
                        "bcr": results.get("bcr"),
                        "snr_db": float(results["snr_db"]),
                        "method": method,
                        "variant": variant,
                        "variant_without_data": other,
                        "keys": values,
                        "point": point.folder.name,
                        "split": results.get("evaluated_split", "test"),
                        "metric": metric,
                        "mean": mean,
                        "ci95": ci,
                        "images": len(measured) if measured else summary.get("images"),
                        # sampler steps of the method (None: DeepJSCC, the mean image) and
                        # its measured wall seconds per image (modules.restoration)
                        "steps": record.get("steps"),
                        "seconds_per_image": summary.get("seconds_per_image"),
                        # whether the models were trained on the tested data (mismatch.yaml)
                        "matched": _matched(results),
                        # a quick=true point: smoke-test settings (results.md says so)
                        "quick": bool(results.get("quick")),
                        # training pairs of the INN a SING-INN row used, when trained for it
                        "inn_pairs": _inn_pairs(point)
                        if record.get("name") == "sing_inn"
                        else None,
                    }
                )
    return sorted(rows, key=_row_order)


def _matched(point: dict[str, Any]) -> bool | None:
    """True when every model with a recorded training set (metrics.json's ``trained_on``) was
    trained on the tested data set, False when one was not, None when nothing is recorded."""
    trained = [v for v in (point.get("trained_on") or {}).values() if v is not None]
    if not trained:
        return None
    tested = point.get("content") or point.get("dataset")  # dataset.content, else the name
    return all(str(v) == str(tested) for v in trained)


def paired_rows(sweep_dir: Path, points: list[Point] | None = None) -> list[dict[str, Any]]:
    """Rows like :func:`collect`'s for the points whose config names
    ``evaluate.paired_reference`` (``+experiment=comparison``): each other method minus the
    reference, per metric, from the point's ``per_image.csv`` (SWD is one value per set: no
    paired difference), labelled by the keys that tell the sweep's points apart."""
    if points is None:  # the sweep's points, read once by a caller that has them
        points, _ = sweep_points(sweep_dir)
    keys = varying_keys(points)
    rows: list[dict[str, Any]] = []
    for point in points:
        reference = (point.config.get("evaluate") or {}).get("paired_reference")
        csv_path = point.folder / "per_image.csv"
        if not reference or not csv_path.is_file():
            continue
        with csv_path.open() as f:
            per_image = list(csv.DictReader(f))
        results = point.results
        for (method, metric), (mean, ci, n) in paired_differences(per_image, reference).items():
            rows.append(
                {
                    "dataset": results.get("dataset"),
                    "channel": results.get("channel"),
                    "bcr": results.get("bcr"),
                    "snr_db": float(results["snr_db"]),
                    "method": f"{method} − {reference}",
                    "variant": point_label(point, keys),
                    "keys": {k: display_value(point.keys.get(k, "<unset>")) for k in keys},
                    "metric": metric,
                    "mean": mean,
                    "ci95": ci,
                    "images": n,
                }
            )
    return sorted(rows, key=_row_order)


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """What the figures' title says: data set, channel, the images scored (``split``: test, or
    val for a search's trials), their number and sampler steps of the points (each a sorted
    list of the distinct values found)."""
    found: dict[str, set[Any]] = defaultdict(set)
    for folder in _point_folders(sweep_dir, "metrics.json"):
        point, _ = read_results(folder / "metrics.json", ("methods",))
        if point is None:
            continue
        for key in ("dataset", "channel"):
            if point.get(key) is not None:
                found[key].add(str(point[key]))
        found["split"].add(str(point.get("evaluated_split") or "test"))
        for summary in point["methods"].values():
            if isinstance(summary, dict) and summary.get("images") is not None:
                found["images"].add(int(summary["images"]))
        for record in (point.get("samplers") or {}).values():
            if isinstance(record, dict) and record.get("steps") is not None:
                found["steps"].add(int(record["steps"]))
    return {key: sorted(values) for key, values in found.items()}


def _point_folders(sweep_dir: Path, name: str) -> list[Path]:
    """Folders under ``sweep_dir`` holding ``name`` that are grid points (not W&B copies, old
    results or the report)."""
    return [
        path.parent
        for path in sorted(sweep_dir.rglob(name))
        if not NOT_POINTS.intersection(path.relative_to(sweep_dir).parts[:-1])
    ]


def torn_points(sweep_dir: Path) -> dict[Path, str]:
    """Points whose ``metrics.json`` does not parse (a torn write), with why: unfinished."""
    torn = {}
    for folder in _point_folders(sweep_dir, "metrics.json"):
        data, why = read_results(folder / "metrics.json")
        if data is None:
            torn[folder] = why
    return torn


def failed_points(sweep_dir: Path) -> list[Path]:
    """Points whose job failed (``error.txt`` without a valid ``metrics.json``) or whose
    ``metrics.json`` is torn; each said in one line."""
    torn = torn_points(sweep_dir)
    for folder, why in torn.items():
        log.error("unfinished point %s: %s (a re-run recomputes it)", folder.name, why)
    errored = [
        p
        for p in _point_folders(sweep_dir, "error.txt")
        if p not in torn and read_results(p / "metrics.json")[0] is None
    ]
    for folder in errored:
        log.error("grid point failed: %s (see %s)", folder.name, folder / "error.txt")
    return sorted({*torn, *errored})


def unmeasured(sweep_dir: Path) -> dict[str, str]:
    """Table metrics some point could not measure, with the reason it gave (e.g. LPIPS without
    its AlexNet weights offline)."""
    reasons: dict[str, str] = {}
    for folder in _point_folders(sweep_dir, "metrics.json"):
        data, _ = read_results(folder / "metrics.json")
        status = (data or {}).get("metric_status") or {}
        for metric in METRICS:
            if metric in status and status[metric] != "ok":
                reasons.setdefault(metric, str(status[metric]))
    return reasons


def search_direction(sweep_dir: Path) -> str:
    """``minimize`` or ``maximize``: the sweeper's direction in the sweep's ``multirun.yaml``
    (Hydra's Optuna sweeper), minimise without one."""
    saved = sweep_dir / "multirun.yaml"
    try:
        value = OmegaConf.select(OmegaConf.load(saved), "hydra.sweeper.direction", default=None)
    except Exception:  # no multirun.yaml, or one that does not parse
        value = None
    return "maximize" if str(value).lower() == "maximize" else "minimize"


def trial_rows(points: list[Point], direction: str = "minimize") -> list[dict[str, Any]]:
    """A hyper-parameter search's trials (the points whose config has ``optimized_metric``),
    best first: each point's objective (:func:`singexp.points.objective`, as the sweeper got
    it), its values of the keys the trials differ in, and ``best`` for the first."""
    scored = [p for p in points if p.config.get("optimized_metric")]
    keys = varying_keys(scored)
    rows = []
    for point in scored:
        try:
            value, how = objective(point.config, point.results)
        except Exception as error:  # a trial whose metrics.json lacks the metric: said, kept
            value, how = float("nan"), str(error)
        rows.append(
            {
                "trial": point.folder.name,
                "objective": value,
                "how": how,
                "split": point.results.get("evaluated_split", "test"),
                **{k: display_value(point.keys.get(k, "<unset>")) for k in keys},
            }
        )
    sign = -1.0 if direction == "maximize" else 1.0
    rows.sort(key=lambda r: (math.isnan(r["objective"]), sign * r["objective"]))
    for i, r in enumerate(rows):
        r["best"] = i == 0 and not math.isnan(r["objective"])
    return rows
