"""The one evaluation pass: images → DeepJSCC at the SNR (seeded channel noise) → each
restorer (seeded sampler noise) → per-method outputs, and their per-image scores.

:func:`evaluate_batch` is the forward pass and :func:`score_batch` the scoring into per-image
records; the evaluation task (:class:`~singexp.modules.restoration.RestorationModule`), the
Python API (:class:`~singexp.pipeline.SingPipeline`) and the sampler-variants experiment
(``experiments/sampler_variants/run.py``, over the pipeline) all call them, so the numbers of
one (seed, batch index) are the same whichever runs them.

Noise: :func:`batch_generator` ``(seed, batch index, stream)``, stream 0 the channel, stream 1
every restorer's sampler (each restorer starts from the same state: every method restores the
same x̂ with the same draws).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor

from singexp.metrics import psnr
from singexp.points import BASELINE, ORIGINAL, TRIVIAL

# restorer(x_hat, snr_db, generator) -> x_tilde
Restorer = Callable[[Tensor, Tensor, torch.Generator], Tensor]

#: per-image consistency metrics (:mod:`singexp.modules.restoration`'s docstring)
CONSISTENCY_RECEIVED = "psnr_A_xhat"
CONSISTENCY_ORIGINAL = "psnr_A_x"


def batch_generator(
    seed: int, batch_idx: int, stream: int, device: torch.device
) -> torch.Generator:
    """A generator for one batch and one purpose (0: channel noise, 1: sampler noise)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + batch_idx * 7 + stream)


#: the key of a method's CPU seconds in a ``seconds`` dict: ``name + CPU``
CPU = "@cpu"


def _timed(
    seconds: dict[str, float] | None, name: str, run: Callable[[], Tensor], device: torch.device
) -> Tensor:
    """``run()``, its wall time (device synchronised) added to ``seconds[name]`` and this
    process's CPU time (all its threads; robust to other processes' load) to
    ``seconds[name + CPU]``, if given."""
    if seconds is None:
        return run()
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    started, cpu = time.perf_counter(), time.process_time()
    out = run()
    sync()
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
    seconds[name + CPU] = seconds.get(name + CPU, 0.0) + time.process_time() - cpu
    return out


@torch.no_grad()
def evaluate_batch(
    codec: Any,
    restorers: Mapping[str, Restorer],
    images: Tensor,
    snr_db: float,
    seed: int,
    batch_index: int,
    seconds: dict[str, float] | None = None,
) -> dict[str, Tensor]:
    """One batch through DeepJSCC and every restorer: ``{deepjscc: x̂, <method>: x̃, ...}``
    (clamped to [-1, 1], on ``images``' device). ``codec``: a
    :class:`~singexp.modules.jscc.DeepJSCCModule` (its ``codec`` sends and decodes);
    ``batch_index``: the batch's global index (seeds its noise); ``seconds``: each method's
    wall seconds are added to it."""
    device = images.device
    snr = torch.full((images.shape[0],), float(snr_db), device=device)
    channel = batch_generator(seed, batch_index, 0, device)
    x_hat = _timed(seconds, BASELINE, lambda: codec.codec(images, snr, channel), device)
    outputs = {BASELINE: x_hat.clamp(-1, 1)}
    for name, restorer in restorers.items():
        sampler = batch_generator(seed, batch_index, 1, device)
        x_tilde = _timed(seconds, name, partial(restorer, outputs[BASELINE], snr, sampler), device)
        outputs[name] = x_tilde.clamp(-1, 1)
    return outputs


def project(operator: Any, images: Tensor) -> Tensor | None:
    """A†A x (image-shaped, so every operator works: for block averaging and the gray operator
    A†A replicates A's values, so PSNRs on it are A's); None without an operator."""
    if operator is None:
        return None
    return operator.A_pinv(operator.A(images.clamp(-1, 1)))


def consistency(
    operator: Any, x_tilde: Tensor, received: Tensor | None, original: Tensor | None
) -> dict[str, Tensor]:
    """Per-image PSNR(A x̃, A x̂) and PSNR(A x̃, A x) from the projections A†A x̂ (``received``;
    None for DeepJSCC's own row, where it is trivially infinite) and A†A x (``original``);
    empty without an operator."""
    p_tilde = project(operator, x_tilde)
    if p_tilde is None or original is None:
        return {}
    values = {CONSISTENCY_ORIGINAL: psnr(p_tilde, original)}
    if received is not None:
        values[CONSISTENCY_RECEIVED] = psnr(p_tilde, received)
    return values


def scored_outputs(outputs: Mapping[str, Tensor], mean_image: Tensor | None, like: Tensor) -> dict:
    """``outputs`` plus the trivial baseline (:data:`TRIVIAL`: ``mean_image`` for every image,
    shaped as ``like``) when a mean image is given: what :func:`score_batch` scores."""
    scored = dict(outputs)
    if mean_image is not None:
        scored[TRIVIAL] = mean_image.to(like.device, like.dtype).expand_as(like)
    return scored


@torch.no_grad()
def score_batch(
    metrics: Any,
    scored: Mapping[str, Tensor],
    originals: Tensor,
    operator: Any = None,
    *,
    first: int = 0,
    snr_db: float | None = None,
    describe: Callable[[int], Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], set[str]]:
    """Per-image records of every method of ``scored`` (method → images) against
    ``originals``: ``(rows, keys measured)``; one row per (image, method) with ``image``
    (``first`` + i), what ``describe(image)`` says of it, ``method``, ``snr_db`` and every
    per-image metric of ``metrics`` (an :class:`~singexp.metrics.ImageMetrics`) plus the
    consistency columns through ``operator`` (:func:`consistency`)."""
    metrics.to(originals.device)
    # A†A of what every method is compared with, once per batch
    projected = {
        ORIGINAL: project(operator, originals),
        BASELINE: project(operator, scored[BASELINE]) if BASELINE in scored else None,
    }
    # the originals' perceptual features once, shared by every method
    per_method = metrics.per_image_many(dict(scored), originals)
    rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    for name, images in scored.items():
        values = per_method[name]
        received = None if name == BASELINE else projected[BASELINE]
        values.update(consistency(operator, images, received, projected[ORIGINAL]))
        keys.update(values)
        for i in range(originals.shape[0]):
            row: dict[str, Any] = {"image": first + i}
            if describe is not None:
                row.update(describe(first + i))
            row["method"] = name
            if snr_db is not None:
                row["snr_db"] = float(snr_db)
            row.update({k: float(v[i]) for k, v in values.items()})
            rows.append(row)
    return rows, keys
