"""Two sweeps of the same grid paired point by point: the fast preset against the 100-step grid.

    python tools/grid_pairs.py outputs/sweeps/paper_grid outputs/sweeps/paper_grid_fast \\
        --out docs/results/data/grid_fast_paired.json

Both sweeps hold the same points (one subfolder per point, ``bcr<B>_snr<S>``) with the same
images and channel noise, so each sampling method pairs image by image: per point and method
the mean ± 95 % CI of (fast − base) for PSNR, SSIM, ST-LPIPS and the consistency PSNR(A x̃,
A x̂) (:func:`singexp.report.statistics.paired_differences`), ``not_worse`` per measure (the
mean difference in the worse direction ≤ its CI half-width, as ``tools/nfe_front.py``), the
NFE and CPU seconds per image each sweep ran. ``summary``: per method, at how many points the
fast run is not worse on PSNR and ST-LPIPS, and the difference pooled over every image of every
point. A point in only one sweep is listed under ``unpaired``, never dropped silently.
``tools/doc_tables.py`` renders the JSON (kind ``grid_pairs``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nfe_front import DECIDING, PAIRED, _commit, cpu_description, not_worse

from singexp.report.statistics import paired_differences


def _point(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    metrics = json.loads((folder / "metrics.json").read_text())
    with (folder / "per_image.csv").open() as f:
        return metrics, list(csv.DictReader(f))


def _points(sweep: Path) -> dict[str, Path]:
    found = {p.parent.name: p.parent for p in sorted(sweep.glob("*/metrics.json"))}
    if not found:
        raise SystemExit(f"{sweep}: no finished points (*/metrics.json)")
    return found


def pair(base: Path, fast: Path) -> dict[str, Any]:
    """The paired table of ``fast`` against ``base`` (module docstring)."""
    a, b = _points(base), _points(fast)
    rows: list[dict[str, Any]] = []
    # every point's pairs of a method, the image keyed by its point: pooled over the grid
    pooled: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, Any] = {}
    for name in sorted(set(a) & set(b)):
        (ma, ra), (mb, rb) = _point(a[name]), _point(b[name])
        info.setdefault("images", ma["methods"][next(iter(ma["samplers"]))]["images"])
        info.setdefault(
            "precision", [(m.get("evaluate") or {}).get("precision_used") for m in (ma, mb)]
        )
        for method in sorted(set(ma["samplers"]) & set(mb["samplers"])):
            tagged = [{**r, "method": "base"} for r in ra if r["method"] == method] + [
                {**r, "method": "fast"} for r in rb if r["method"] == method
            ]
            diffs = paired_differences(tagged, "base", tuple(PAIRED))
            pooled.setdefault(method, []).extend(
                {**r, "image": f"{name}/{r['image']}"} for r in tagged
            )
            row: dict[str, Any] = {
                "point": name,
                "bcr": ma["bcr"],
                "snr_db": float(ma["snr_db"]),
                "method": method,
                "nfe": {
                    "base": ma["samplers"][method].get("nfe"),
                    "fast": mb["samplers"][method].get("nfe"),
                },
                "cpu_s_per_image": {
                    "base": ma["methods"][method].get("cpu_seconds_per_image"),
                    "fast": mb["methods"][method].get("cpu_seconds_per_image"),
                },
                "mean": {"base": {m: ma["methods"][method].get(m) for m in PAIRED}},
                "paired": {},
                "not_worse": {},
            }
            for m, lower in PAIRED.items():
                if ("fast", m) in diffs:
                    mean, ci, n = diffs[("fast", m)]
                    row["paired"][m] = {"mean": mean, "ci95": ci, "n": n}
                    row["not_worse"][m] = not_worse(mean, ci, lower)
            rows.append(row)
    summary: dict[str, Any] = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {
            "points": len(mine),
            "not_worse_points": {m: sum(bool(r["not_worse"].get(m)) for r in mine) for m in PAIRED},
            "all_not_worse": all(all(r["not_worse"].get(m) for m in DECIDING) for r in mine),
            "pooled": {},
        }
        for (_, m), (mean, ci, n) in paired_differences(
            pooled[method], "base", tuple(PAIRED)
        ).items():
            summary[method]["pooled"][m] = {"mean": mean, "ci95": ci, "n": n}
    return {
        "base": str(base),
        "fast": str(fast),
        "commit": _commit(),
        "cpu": cpu_description(),
        **info,
        "unpaired": sorted(set(a) ^ set(b)),
        "rows": rows,
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("base", type=Path, help="the reference sweep (the 100-step grid)")
    parser.add_argument("fast", type=Path, help="the sweep compared with it (the fast grid)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    data = pair(args.base, args.fast)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps(data["summary"], indent=1), file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
