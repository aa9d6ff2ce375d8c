"""Every SING sampler variant at one operating point, on the same received images.

    .venv/bin/python experiments/sampler_variants/run.py            # the main job's point
    .venv/bin/python experiments/sampler_variants/run.py --images 16 --steps 50 channel.snr_db=0

The main job's config (``+experiment=sing_inn`` plus any overrides) gives the codec, INN,
prior, operator, data and metrics; every variant restores the same DeepJSCC outputs with the
same channel and sampler noise as the main job (its defaults reproduce the main job's numbers).
Writes ``results.json`` and ``results.md`` (PSNR, SSIM, ST-LPIPS, SWD, consistency, grid-pattern
energy, seconds per image) and ``grid.png`` beside this file (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from singexp.artifacts import resolve_inn, resolve_prior_source
from singexp.config import CONF_DIR, build, validate
from singexp.metrics import ImageMetrics, periodic_energy, psnr
from singexp.modules.inn import load_inn
from singexp.modules.jscc import load_codec
from singexp.modules.restoration import batch_generator, measured_sigma_y
from singexp.operators import build_operator
from singexp.prior import load_prior
from singexp.samplers import check_method, restore
from singexp.samplers.build import method_scheduler, needs_sigma_y
from singexp.samplers.sing_inn import check_measurement
from singexp.visualize import save_comparison_grid

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=sing_inn", *args.overrides])
    v = validate(cfg)
    n = int(args.images or cfg.dataset.test_size)
    batch = int(cfg.dataset.batch_size)
    torch.manual_seed(int(cfg.seed))
    data = build(cfg.dataset)
    x_all = data.test_images(n)
    codec = load_codec(v.jscc.checkpoint, test_snr_db=v.channel.snr_db).eval()
    operator = build_operator(cfg.operator.name, cfg.operator.scale, v.bcr, v.latent.image_size)
    unet = load_prior(resolve_prior_source(v), expected_size=v.latent.image_size)
    inn = load_inn(resolve_inn(v)).inn.eval().requires_grad_(False)
    metrics = ImageMetrics.from_config(cfg.metrics)

    methods = {}
    for name, (group, changes) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / f"{group}.yaml"))
        node.update(changes, progress=False)
        if args.steps:
            node["steps"] = args.steps
        methods[name] = check_method(node)
    sigma_y = None
    if needs_sigma_y(methods):
        sigma_y = measured_sigma_y(codec, operator, data, v.channel.snr_db, v.seed)

    snr = v.channel.snr_db
    x_hat_all, outputs = [], {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for b, start in enumerate(range(0, n, batch)):
        x = x_all[start : start + batch]
        snrs = torch.full((x.shape[0],), snr)
        with torch.no_grad():
            x_hat = codec(x, snrs, batch_generator(int(cfg.seed), b, 0, x.device)).clamp(-1, 1)
        x_hat_all.append(x_hat)
        for name, method in methods.items():
            if method.name == "sing_inn":
                check_measurement(method.config, inn, operator, "methods.sing_inn")
            scheduler = method_scheduler(v.prior, method)
            t0 = time.perf_counter()
            out = restore(
                method,
                x_hat,
                unet=unet,
                scheduler=scheduler,
                operator=operator,
                inn=inn,
                generator=batch_generator(int(cfg.seed), b, 1, x.device),
                snr_db=snrs,
                sigma_y=sigma_y,
            ).clamp(-1, 1)
            seconds[name] += time.perf_counter() - t0
            outputs[name].append(out)
            print(f"batch {b + 1}: {name} done ({time.perf_counter() - t0:.1f} s)", flush=True)

    x_hat = torch.cat(x_hat_all)
    rows = {"DeepJSCC": x_hat, **{k: torch.cat(v_) for k, v_ in outputs.items()}}
    mean_image = data.mean_image().unsqueeze(0).expand_as(x_all)
    rows = {"mean training image (trivial baseline)": mean_image, **rows}
    period = getattr(operator, "scale", 2)
    table = {}
    for name, images in rows.items():
        per = metrics.per_image(images, x_all)
        summary = {k: float(t.mean()) for k, t in per.items()}
        summary.update(metrics.set_level(images, x_all))
        summary["consistency_psnr_A_xhat"] = float(
            psnr(operator.A(images), operator.A(x_hat)).mean()
        )
        summary["grid_energy_p2"] = float(periodic_energy(images, 2).mean())
        summary[f"grid_energy_p{period}"] = float(periodic_energy(images, period).mean())
        summary["seconds_per_image"] = seconds.get(name, 0.0) / n
        table[name] = summary
    originals = {
        "grid_energy_p2": float(periodic_energy(x_all, 2).mean()),
        f"grid_energy_p{period}": float(periodic_energy(x_all, period).mean()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "point": {
            "dataset": cfg.dataset.name,
            "snr_db": snr,
            "bcr": str(cfg.bcr.ratio),
            "images": n,
            "operator": repr(operator),
            "inn_scale": inn.scale,
            "sigma_y_measured": sigma_y,
            "threads": torch.get_num_threads(),
            "overrides": args.overrides,
        },
        "variants": {k: {"sampler": m.name, **m.raw} for k, m in methods.items()},
        "originals": originals,
        "results": table,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"{n} images, {cfg.dataset.name} {v.latent.image_size} px, AWGN {snr} dB, BCR "
        f"{cfg.bcr.ratio}, A = {operator!r}; grid energy of the originals: p2 "
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
    grid = {"original": x_all[:8], **{k: t[:8] for k, t in rows.items()}}
    save_comparison_grid(grid, args.out / "grid.png", title=lines[0].split(";")[0])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
