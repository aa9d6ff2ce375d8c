"""Every SING sampler variant at one operating point, on the same received images.

    .venv/bin/python experiments/sampler_variants/run.py            # the main job's point
    .venv/bin/python experiments/sampler_variants/run.py --images 16 --steps 50 channel.snr_db=0
    .venv/bin/python experiments/sampler_variants/run.py bcr=1_768   # the committed results' point

A thin script over the project's own pipeline: :meth:`SingPipeline.from_config` of the main job
(``+experiment=sing_inn`` plus any overrides) loads the codec, INN, prior, operator and data as
the main job does; the variants are a :class:`~singexp.pipeline.SingPipeline` built from those
objects and the variants' sampler configs, restoring with the evaluation's own pass
(:func:`singexp.evaluation.evaluate_batch`: the same channel and sampler noise, so its defaults
reproduce the main job's numbers) and scored by :func:`singexp.evaluation.score_batch`. Writes
``results.json`` and ``results.md`` (PSNR, SSIM, ST-LPIPS, SWD, consistency, grid-pattern energy,
seconds per image) and ``grid.png`` beside this file (or ``--out``). The committed results were
made at BCR 1/768 (the main job's point then; ``bcr=1_768`` now) on 2 threads.
"""

from __future__ import annotations

# first, before torch loads: the OpenMP wait policy the command line sets (singexp.threads)
from singexp.threads import set_wait_policy

set_wait_policy()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from singexp.assembly import needs_sigma_y  # noqa: E402
from singexp.config import CONF_DIR  # noqa: E402
from singexp.data.base import indexed_data  # noqa: E402
from singexp.evaluation import score_batch, scored_outputs  # noqa: E402
from singexp.metrics import ImageMetrics, periodic_energy  # noqa: E402
from singexp.modules.restoration import measured_sigma_y  # noqa: E402
from singexp.pipeline import SingPipeline  # noqa: E402
from singexp.points import BASELINE, TRIVIAL  # noqa: E402
from singexp.samplers import check_method  # noqa: E402
from singexp.visualize import save_comparison_grid  # noqa: E402

HERE = Path(__file__).resolve().parent

#: name -> (sampler group, overrides of its defaults); the first of each group is the default
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "SING-Zero: DDNM, posterior update (default)": ("sing_zero", {}),
    "SING-Zero: DDNM, ddnm update": ("sing_zero", {"update": "ddnm"}),
    "SING-Zero: DDNM+ (sigma_y auto), posterior": ("sing_zero", {"sigma_y": "auto"}),
    "SING-Zero: DDNM+ (sigma_y auto), ddnm update": (
        "sing_zero",
        {"sigma_y": "auto", "update": "ddnm"},
    ),
    "SING-Zero: DDNM, clip_x0": ("sing_zero", {"clip_x0": True}),
    "SING-INN: Alg. 2, dps, zeta 1 sqrt_alpha_bar (default)": ("sing_inn", {}),
    "SING-INN: Alg. 2, dps, zeta 1 constant": ("sing_inn", {"zeta_schedule": "constant"}),
    "SING-INN: Alg. 2, autograd, zeta 0.5 constant": (
        "sing_inn",
        {"gradient": "autograd", "zeta": 0.5, "zeta_schedule": "constant"},
    ),
    "SING-INN: Alg. 2, constant, zeta 0.5 constant": (
        "sing_inn",
        {"gradient": "constant", "zeta": 0.5, "zeta_schedule": "constant"},
    ),
    "SING-INN: two_phase, constant, zeta 0.5 (earlier default)": (
        "sing_inn",
        {"variant": "two_phase", "gradient": "constant", "zeta": 0.5, "zeta_schedule": "constant"},
    ),
}
#: the table's names of the evaluation's rows
LABELS = {TRIVIAL: "mean training image (trivial baseline)", BASELINE: "DeepJSCC"}


def variant_methods(only: list[str] | None, steps: int | None) -> dict[str, Any]:
    """The variants' checked sampler configs (the sampler group's node plus the changes)."""
    methods = {}
    for name, (group, changes) in VARIANTS.items():
        if only and name not in only:
            continue
        node: Any = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / f"{group}.yaml"))
        node.update(changes, progress=False)
        if steps:
            node["steps"] = steps
        methods[name] = check_method(node)
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of +experiment=sing_inn")
    parser.add_argument("--images", type=int, default=None, help="test images (default: the job's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 100)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="LABEL|GROUP|JSON",
        help="another variant, e.g. 'zeta 0.1|sing_inn|{\"zeta\": 0.1}' (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for spec in args.add:
        label, group, changes = spec.split("|", 2)
        VARIANTS[label] = (group, json.loads(changes))
        if args.only is not None:
            args.only.append(label)

    # the main job's objects (codec, INN, prior, operator, data), loaded as the main job does
    job = SingPipeline.from_config(["+experiment=sing_inn", *args.overrides])
    run = job.run
    assert run is not None
    data = indexed_data(run, job.state)
    n = int(args.images or run.dataset["test_size"])
    x_all = data.test_images(n)
    methods = variant_methods(args.only, args.steps)
    snr, operator = job.snr_db, job.operator
    sigma_y = None
    if needs_sigma_y(methods):
        sigma_y = measured_sigma_y(job.codec, operator, data, snr, run.seed)
    pipe = SingPipeline(
        codec=job.codec,
        prior=job.prior,
        scheduler=job.scheduler,
        operator=operator,
        methods=methods,
        inn=job.inn,
        inn_config=job.inn_config,
        snr_db=snr,
        seed=run.seed,
        batch_size=job.batch_size,
        sigma_y=sigma_y,
        compute=run.compute,
        trained_on=job.trained_on,
        threads=None,  # applied by from_config
    )
    out = pipe(x_all)
    metrics = ImageMetrics(run.metrics)  # as the main job
    scored = scored_outputs(
        {name: out[name] for name in (BASELINE, *methods)}, data.mean_image(), x_all
    )
    scored = {TRIVIAL: scored.pop(TRIVIAL), **scored}
    rows, _ = score_batch(metrics, scored, x_all, operator)
    period = getattr(operator, "scale", 2)
    table = {}
    for name, images in scored.items():
        mine = [r for r in rows if r["method"] == name]
        keys = [k for k in mine[0] if k not in ("image", "method")]
        summary = {k: sum(r[k] for r in mine) / len(mine) for k in keys}
        summary.update(metrics.set_level(images, x_all))
        summary["consistency_psnr_A_xhat"] = summary.pop("psnr_A_xhat", float("inf"))
        summary["grid_energy_p2"] = float(periodic_energy(images, 2).mean())
        summary[f"grid_energy_p{period}"] = float(periodic_energy(images, period).mean())
        summary["seconds_per_image"] = out.seconds.get(name, 0.0) if name in methods else 0.0
        table[LABELS.get(name, name)] = summary
    originals = {
        "grid_energy_p2": float(periodic_energy(x_all, 2).mean()),
        f"grid_energy_p{period}": float(periodic_energy(x_all, period).mean()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "point": {
            "dataset": run.dataset_name,
            "snr_db": snr,
            "bcr": pipe.bcr,
            "images": n,
            "operator": repr(operator),
            "inn_scale": getattr(pipe.inn, "scale", None),
            "sigma_y_measured": sigma_y,
            "threads": torch.get_num_threads(),
            "overrides": args.overrides,
        },
        "variants": {k: {"sampler": m.name, **m.raw} for k, m in methods.items()},
        "ran": out.ran,
        "originals": originals,
        "results": table,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = [
        f"{n} images, {run.dataset_name} {pipe.image_size} px, AWGN {snr} dB, BCR "
        f"{pipe.bcr}, A = {operator!r}; grid energy of the originals: p2 "
        f"{originals['grid_energy_p2']:.3f}, p{period} {originals[f'grid_energy_p{period}']:.3f}",
        "",
        f"| method | PSNR (dB) | SSIM | ST-LPIPS ↓ | SWD (×10³) ↓ | PSNR(A x̃, A x̂) | grid p2 | "
        f"grid p{period} | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in table.items():
        lines.append(
            f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r.get('stlpips', float('nan')):.3f} "
            f"| {r.get('swd', float('nan')):.1f} | {r['consistency_psnr_A_xhat']:.1f} "
            f"| {r['grid_energy_p2']:.3f} | {r[f'grid_energy_p{period}']:.3f} "
            f"| {r['seconds_per_image']:.2f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    grid = {"original": x_all[:8], **{LABELS.get(k, k): t[:8] for k, t in scored.items()}}
    save_comparison_grid(grid, args.out / "grid.png", title=lines[0].split(";")[0])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
