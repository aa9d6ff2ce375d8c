"""Export the EMA weights of a prior training checkpoint, mid-run, as a diffusers folder.

    .venv/bin/python experiments/prior_samples/export_checkpoint.py CKPT OUT_DIR

For judging a run that is still training (quality.py reads OUT_DIR); the run itself exports its
final weights to ``<run>/prior`` when it ends. Prints the checkpoint's optimiser step.
"""

from __future__ import annotations

import argparse

import torch

from singexp.modules.prior import DiffusionPriorModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    module = DiffusionPriorModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    module.export(args.out, dtype=args.dtype)
    print(f"step {state.get('global_step')}: EMA weights exported to {args.out}")


if __name__ == "__main__":
    main()
