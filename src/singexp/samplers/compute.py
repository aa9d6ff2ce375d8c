"""How the restorers compute, not what: the options a 256 px run on a GPU needs.

Keys of the root config's ``evaluate`` node, checked by :meth:`ComputeConfig.from_config` before
anything runs and recorded in metrics.json (``evaluate``):

- ``precision``: ``fp32`` (default) | ``bf16`` | ``fp16`` | ``auto`` — every restorer's call
  runs under ``torch.autocast`` of that dtype (the UNet's and the INN's convolutions and
  matmuls; the sampler's own arithmetic stays in float32, and DeepJSCC, which makes x̂, is
  outside: the methods restore the same x̂ in every precision). bf16 autocast works on CPUs too,
  fast only where the CPU has bf16 instructions (AVX-512 BF16 or AMX): ``auto`` is bf16 there
  and on a CUDA GPU with bf16, fp32 elsewhere (:func:`native_bf16`; metrics.json records what
  ran as ``precision_used``). Issue 29 measured bf16 on an AMX CPU (``benchmarks/results/
  precision.md``); on an AVX2-only CPU it is 40-130× slower than fp32.
- ``guidance_batch``: images per UNet forward + backward of a DPS-style guided step (SING-INN
  ``gradient=dps``, DPS-JSCC): the backward through a 113.7 M-parameter UNet at 256 px does not
  fit a large batch; every image's gradient is its own, so the numbers do not change
  (:data:`singexp.samplers.loop.GUIDANCE_BATCH`). null: the whole batch.
- ``gradient_checkpointing``: the prior UNet recomputes its blocks' activations in that backward
  (diffusers' ``enable_gradient_checkpointing``): less memory, one more forward per guided step.
- ``compile``: the prior UNet through ``torch.compile`` (inductor), once per process (a sweep's
  points share it: :mod:`singexp.reuse`); the first forward and the first guided step of a
  process pay the compilation (about 30 s and 55 s for the embedded UNet on one CPU core).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
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
#: the value that picks bf16 where it is native (:func:`native_bf16`), else fp32
AUTO = "auto"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX tiles (elsewhere oneDNN emulates bf16, far slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def precision_on(precision: str, device: torch.device) -> str:
    """The precision a restorer runs in on ``device``: ``precision`` itself, or for ``auto``
    bf16 where it is native (:func:`native_bf16`) and fp32 elsewhere."""
    if precision != AUTO:
        return precision
    return "bf16" if native_bf16(device) else "fp32"


@dataclass(frozen=True)
class ComputeConfig:
    """The ``evaluate`` keys of the module docstring, checked."""

    precision: str = "fp32"
    guidance_batch: int | None = None
    gradient_checkpointing: bool = False
    compile: bool = False

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, prefix: str = "evaluate") -> ComputeConfig:
        node = node or {}
        precision = str(node.get("precision", cls.precision))
        if precision not in (*PRECISIONS, AUTO):
            raise ConfigError(
                f"{prefix}.precision",
                f"must be one of {sorted((*PRECISIONS, AUTO))}, got {precision!r}",
            )
        batch = node.get("guidance_batch", cls.guidance_batch)
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            raise ConfigError(
                f"{prefix}.guidance_batch",
                f"must be null (the whole batch) or an integer >= 1, got {batch!r}",
            )
        flags = {}
        for key in ("gradient_checkpointing", "compile"):
            flags[key] = node.get(key, getattr(cls, key))
            if not isinstance(flags[key], bool):
                raise ConfigError(f"{prefix}.{key}", f"must be true or false, got {flags[key]!r}")
        return cls(precision, batch, **flags)

    @contextmanager
    def running(self, device: torch.device) -> Iterator[None]:
        """A restorer's call on ``device`` in this precision and micro-batching."""
        dtype = PRECISIONS[precision_on(self.precision, device)]
        autocast = nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
        with autocast, guidance_micro_batch(self.guidance_batch):
            yield

    def record(self, device: torch.device) -> dict[str, Any]:
        """What metrics.json's ``evaluate`` holds: these settings and the precision that ran."""
        return {**asdict(self), "precision_used": precision_on(self.precision, device)}

    def prepare_prior(self, unet: Any) -> Any:
        """The prior UNet with gradient checkpointing on and compiled, when asked."""
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if self.compile:  # attributes (config, dtype, parameters) reach the UNet inside
            return torch.compile(unet)
        return unet
