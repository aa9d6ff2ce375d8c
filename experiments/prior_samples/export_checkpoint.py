"""Export the EMA weights of a prior training checkpoint, mid-run, as a diffusers folder.

    .venv/bin/python experiments/prior_samples/export_checkpoint.py CKPT OUT_DIR

For judging a run that is still training (quality.py reads OUT_DIR); the run itself exports its
final weights to ``<run>/prior`` when it ends. Prints the checkpoint's optimiser step.
"""

from __future__ import annotations

import argparse
import inspect

import torch

from singexp.modules.prior import DiffusionPriorModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    # the module's own keys only: a subclass's extra ones (the mid_steps of
    # docs/research/prior_samples/finetune_low_lr.py) are training-time settings, not the model's
    own = inspect.signature(DiffusionPriorModule.__init__).parameters
    module = DiffusionPriorModule(
        **{k: v for k, v in state["hyper_parameters"].items() if k in own}
    )
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)
    module.export(args.out, dtype=args.dtype)
    print(f"step {state.get('global_step')}: EMA weights exported to {args.out}")


if __name__ == "__main__":
    main()
