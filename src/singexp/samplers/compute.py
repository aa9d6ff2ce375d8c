"""How the restorers compute, not what: the options a 256 px run on a GPU needs (issue 28).

Keys of the root config's ``evaluate`` node, checked by :meth:`ComputeConfig.from_config` before
anything runs and recorded in metrics.json (``evaluate``):

- ``precision``: ``fp32`` (default) | ``bf16`` | ``fp16`` — every restorer's call runs under
  ``torch.autocast`` of that dtype (the UNet's and the INN's convolutions and matmuls; the
  sampler's own arithmetic stays in float32, and DeepJSCC, which makes x̂, is outside: the
  methods restore the same x̂ in every precision). bf16 autocast works on CPUs too.
- ``guidance_batch``: images per UNet forward + backward of a DPS-style guided step (SING-INN
  ``gradient=dps``, DPS-JSCC): the backward through a 113.7 M-parameter UNet at 256 px does not
  fit a large batch; every image's gradient is its own, so the numbers do not change
  (:data:`singexp.samplers.loop.GUIDANCE_BATCH`). null: the whole batch.
- ``gradient_checkpointing``: the prior UNet recomputes its blocks' activations in that backward
  (diffusers' ``enable_gradient_checkpointing``): less memory, one more forward per guided step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from singexp.errors import ConfigError
from singexp.samplers.loop import guidance_micro_batch

#: ``evaluate.precision`` → the autocast dtype (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class ComputeConfig:
    """The ``evaluate`` keys of the module docstring, checked."""

    precision: str = "fp32"
    guidance_batch: int | None = None
    gradient_checkpointing: bool = False

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, prefix: str = "evaluate") -> ComputeConfig:
        node = node or {}
        precision = str(node.get("precision", cls.precision))
        if precision not in PRECISIONS:
            raise ConfigError(
                f"{prefix}.precision", f"must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        batch = node.get("guidance_batch", cls.guidance_batch)
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            raise ConfigError(
                f"{prefix}.guidance_batch",
                f"must be null (the whole batch) or an integer >= 1, got {batch!r}",
            )
        checkpointing = node.get("gradient_checkpointing", cls.gradient_checkpointing)
        if not isinstance(checkpointing, bool):
            raise ConfigError(
                f"{prefix}.gradient_checkpointing", f"must be true or false, got {checkpointing!r}"
            )
        return cls(precision, batch, checkpointing)

    @contextmanager
    def running(self, device: torch.device) -> Iterator[None]:
        """A restorer's call on ``device`` in this precision and micro-batching."""
        dtype = PRECISIONS[self.precision]
        autocast = nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
        with autocast, guidance_micro_batch(self.guidance_batch):
            yield

    def prepare_prior(self, unet: Any) -> Any:
        """The prior UNet with gradient checkpointing on when asked (returns it)."""
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        return unet
