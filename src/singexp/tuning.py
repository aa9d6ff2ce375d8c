"""The tuned settings the comparison reads: collected from the tuning sweeps.

Each method is tuned by its own preset (``+experiment=tune_<method>``, the protocol of
``conf/experiment/tuning.yaml``): Hydra's Optuna sweeper writes ``optimization_results.yaml``
(the best parameters) into the sweep folder, one ``trial_<n>`` run folder per trial.
:func:`collect` reads those folders and refuses a sweep that broke the protocol — a trial scored
on anything but the validation split (``evaluated_split`` in its metrics.json), or sweeps with
different budgets (trials, validation images, seed) — and :func:`write_tuned` writes
the chosen values as a config (``conf/tuned/<name>.yaml``) that ``+experiment=comparison``
composes over every method's defaults.

    python -m singexp.tuning outputs/tuning --out src/singexp/conf/tuned/embedded.yaml
    python -m singexp.tuning outputs/tuning/tune_ddrm --out ... --add   # one method added
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from singexp.errors import SingexpError
from singexp.points import read_results

#: what the optimiser writes into a finished Optuna sweep folder
RESULTS_FILE = "optimization_results.yaml"


@dataclass
class TunedMethod:
    """One method's tuning sweep: where, the chosen values, and the budget it used."""

    method: str
    sweep: Path
    best_params: dict[str, Any]
    best_value: float
    trials: int
    images: int
    split: str
    seed: int
    objective: str


def sweep_folders(paths: list[Path]) -> list[Path]:
    """The tuning sweep folders of ``paths`` (a sweep folder, or a folder of them)."""
    found: list[Path] = []
    for path in paths:
        if (path / RESULTS_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{RESULTS_FILE}")))
    if not found:
        names = ", ".join(str(p) for p in paths)
        raise SingexpError(
            f"no finished tuning sweep ({RESULTS_FILE}) in {names}; run e.g. "
            "`python -m singexp +experiment=tune_sing_inn` first"
        )
    return found


def read_sweep(sweep: Path) -> TunedMethod:
    """One sweep's chosen values and budget; a trial that scored anything but validation
    images (or did not finish) is a one-line error: its values cannot be used."""
    best = OmegaConf.to_container(OmegaConf.load(sweep / RESULTS_FILE))
    assert isinstance(best, dict)
    params = {str(k): v for k, v in (best.get("best_params") or {}).items()}
    methods = {key.split(".")[1] for key in params if key.startswith("methods.")}
    if len(methods) != 1 or len(params) == 0:
        raise SingexpError(f"{sweep}: expected the parameters of one method, got {sorted(params)}")
    trials = sorted(sweep.glob("trial_*"), key=lambda p: int(p.name.split("_")[1]))
    splits: set[str] = set()
    images: set[int] = set()
    seeds: set[int] = set()
    objectives: set[str] = set()
    for trial in trials:
        results, why = read_results(trial / "metrics.json", ("methods",))
        if results is None:
            raise SingexpError(f"{trial}: unfinished trial ({why}); re-run the tuning command")
        config = OmegaConf.to_container(OmegaConf.load(trial / "config.yaml"), resolve=False)
        assert isinstance(config, dict)
        split = str(results.get("evaluated_split", "test"))  # older runs: the test split
        if split != "val":
            raise SingexpError(
                f"{trial}: scored on the {split} split; tuning must read validation images only "
                "(evaluate.split=val, the tune_<method> presets): its values cannot be used"
            )
        splits.add(split)
        first = next(iter(results["methods"].values()))
        images.add(int(first.get("images", 0)))
        seeds.add(int(results["seed"] if "seed" in results else config.get("seed", 0)))
        objectives.add(str(config.get("optimized_metric")))
    if not trials:
        raise SingexpError(f"{sweep}: no trial_* run folders")
    if len(images) != 1 or len(seeds) != 1:
        raise SingexpError(
            f"{sweep}: trials differ in images ({sorted(images)}) or seed ({sorted(seeds)})"
        )
    return TunedMethod(
        method=methods.pop(),
        sweep=sweep,
        best_params=params,
        best_value=float(best["best_value"]),
        trials=len(trials),
        images=images.pop(),
        split=splits.pop(),
        seed=seeds.pop(),
        objective=objectives.pop(),
    )


def collect(paths: list[Path]) -> list[TunedMethod]:
    """Every sweep of ``paths`` (:func:`read_sweep`), checked to share one budget: the same
    number of trials on the same validation images with the same seed."""
    tuned = [read_sweep(sweep) for sweep in sweep_folders(paths)]
    budgets = {(t.trials, t.images, t.seed) for t in tuned}
    if len(budgets) > 1:
        lines = "; ".join(f"{t.method}: {t.trials} trials, {t.images} images" for t in tuned)
        raise SingexpError(
            f"the tuning sweeps used different budgets ({lines}); every method gets the same "
            "trials and images (tuning.trials, evaluate.images): finish or re-run them"
        )
    seen: set[str] = set()
    for t in tuned:
        if t.method in seen:
            raise SingexpError(f"two tuning sweeps for {t.method}; give one folder per method")
        seen.add(t.method)
    return tuned


#: the budget line of a tuned file's header (:func:`tuned_config`)
BUDGET_LINE = re.compile(
    r"^# (\d+) trials per method \(seeded TPE, seed (\d+)\) on the first (\d+) (\w+) images,$"
)
#: a method's line of a tuned file's header
METHOD_LINE = re.compile(r"^#   (\w+): best objective ([-\d.eE+]+) \((.+)\)$")


def earlier(out: Path, budget: tuple[int, int, int]) -> list[TunedMethod]:
    """The methods an existing tuned file ``out`` holds (``--add``), checked to have been tuned
    with ``budget`` (trials, images, seed) as its header says: a method tuned before keeps its
    values when a new method's sweep is added, and every method still shares one budget."""
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    found = next((m for line in header if (m := BUDGET_LINE.match(line))), None)
    if found is None:
        raise SingexpError(f"{out}: no budget line in its header; write it from all the sweeps")
    trials, seed, images, split = int(found[1]), int(found[2]), int(found[3]), found[4]
    if (trials, images, seed) != budget:
        raise SingexpError(
            f"{out} was tuned with {trials} trials on {images} images (seed {seed}), the new "
            f"sweeps with {budget[0]} on {budget[1]} (seed {budget[2]}): every method gets the "
            "same budget (tuning.trials, evaluate.images)"
        )
    values = OmegaConf.to_container(OmegaConf.load(out))
    assert isinstance(values, dict)
    methods = values.get("methods") or {}
    kept = []
    for line in header:
        if (m := METHOD_LINE.match(line)) is None or m[1] not in methods:
            continue
        params = {f"methods.{m[1]}.{k}": v for k, v in methods[m[1]].items()}
        kept.append(
            TunedMethod(m[1], Path(m[3]), params, float(m[2]), trials, images, split, seed, "")
        )
    return kept


def tuned_config(tuned: list[TunedMethod]) -> str:
    """The ``tuned`` config file: a header saying where each value comes from, then the values
    under ``methods.<name>``."""
    tuned = sorted(tuned, key=lambda t: t.method)
    nested: dict[str, Any] = {}
    for t in tuned:
        for key, value in sorted(t.best_params.items()):
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    first = tuned[0]
    lines = [
        "# @package _global_",
        "# Generated by `python -m singexp.tuning` from the tuning sweeps below: do not edit by",
        "# hand (re-run the tuning, then this command). The protocol:",
        "# conf/experiment/tuning.yaml,",
        f"# {first.trials} trials per method (seeded TPE, seed {first.seed}) on the first "
        f"{first.images} {first.split} images,",
        "# objective = the method's ST-LPIPS + 10 × every dB of PSNR lost beyond 1.5 dB below "
        "DeepJSCC.",
    ]
    for t in tuned:
        lines.append(f"#   {t.method}: best objective {t.best_value:.4f} ({t.sweep.name})")
    body = OmegaConf.to_yaml(OmegaConf.create(nested))
    return "\n".join(lines) + "\n" + body


def write_tuned(paths: list[Path], out: Path, add: bool = False) -> list[TunedMethod]:
    """Collect the sweeps of ``paths`` and write their chosen values to ``out``; ``add``: keep
    the methods ``out`` already holds that the sweeps do not tune (:func:`earlier`)."""
    tuned = collect(paths)
    if add and out.is_file():
        new = {t.method for t in tuned}
        budget = (tuned[0].trials, tuned[0].images, tuned[0].seed)
        tuned += [t for t in earlier(out, budget) if t.method not in new]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tuned_config(tuned))
    return tuned


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m singexp.tuning",
        description="Write the tuned settings of the tuning sweeps for +experiment=comparison.",
    )
    parser.add_argument(
        "sweeps", nargs="+", type=Path, help="tuning sweep folders (or their parent)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the tuned config file to write")
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the methods --out already holds (same budget) that these sweeps do not tune",
    )
    args = parser.parse_args(argv)
    try:
        tuned = write_tuned(args.sweeps, args.out, add=args.add)
    except SingexpError as error:
        print(f"singexp: error: {error}", file=sys.stderr)
        sys.exit(2)
    for t in tuned:
        values = ", ".join(f"{k.split('.')[-1]} {_short(v)}" for k, v in t.best_params.items())
        print(f"{t.method}: {values} (objective {t.best_value:.4f}, {t.trials} trials)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
