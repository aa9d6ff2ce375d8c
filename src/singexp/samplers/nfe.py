"""NFE: the prior UNet's evaluations per image of a method, every forward and every backward
counted (metrics.json ``samplers.<name>.nfe``, the printed "what ran" line).

- The sampling loop (SING-Zero, SING-INN, DPS-JSCC; :mod:`~singexp.samplers.loop`): one forward
  per denoising move (time travel repeats some), one backward per guided step
  (:func:`~singexp.samplers.loop.guided`: a DPS-form guidance where it acts, never at the last
  step). SING-INN's x0-space gradients (``autograd``, ``constant``) need no UNet backward (their
  INN passes are not UNet evaluations).
- InverseJSCC (:mod:`~singexp.samplers.inverse_jscc`): G = ``generator_steps`` UNet forwards;
  the inversion (``init: invert``) runs them once, each Adam iteration G forward and backward,
  and the final G(z*) once more: g · (2 · iterations + 1 + [invert]).
- DiffPIR and DDRM (deepinv's samplers, :mod:`~singexp.samplers.deepinv_methods`): one UNet
  forward a step, no backward (DiffPIR's data step differentiates A or the DeepJSCC chain, not
  the UNet).

``tests/test_nfe.py`` counts the UNet's calls of each method against these numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from singexp.samplers.base import GuidanceSteps
from singexp.samplers.loop import TimeTravel

#: guided(index, num_steps, timestep) -> whether step ``index`` runs a UNet backward
GuidedAt = Callable[[int, int, int], bool]


def loop_nfe(timesteps: Sequence[int], time_travel: TimeTravel, guided_at: GuidedAt) -> dict:
    """``{"nfe", "unet_forward", "unet_backward"}`` per image of the loop over ``timesteps``."""
    n = len(timesteps)
    forward = backward = 0
    for k, k_to in time_travel.plan(n):
        if k_to < k:  # a re-noising jump: no network
            continue
        forward += 1
        if k != n - 1 and guided_at(k, n, int(timesteps[k])):
            backward += 1
    return {"nfe": forward + backward, "unet_forward": forward, "unet_backward": backward}


def _timesteps(raw: Any, steps: int, num_train_timesteps: int) -> list[int]:
    from singexp.samplers.schedulers import build_scheduler

    scheduler = build_scheduler(
        num_train_timesteps=num_train_timesteps,
        kind=str(raw.get("scheduler", "ddim")),
        timestep_spacing=raw.get("timestep_spacing", "leading"),
    )
    scheduler.set_timesteps(int(steps))
    return [int(t) for t in scheduler.timesteps]


def method_nfe(method: Any, num_train_timesteps: int = 1000) -> dict:
    """The NFE of a checked :class:`~singexp.samplers.registry.Method` (module docstring);
    ``nfe`` 0 for ``none``."""
    c = method.config
    if method.name == "inverse_jscc":
        g = c.generator_steps
        forward = g * (c.iterations + 1 + (1 if c.init == "invert" else 0))
        return {
            "nfe": forward + g * c.iterations,
            "unet_forward": forward,
            "unet_backward": g * c.iterations,
        }
    if c is None or not hasattr(c, "steps"):
        return {"nfe": 0, "unet_forward": 0, "unet_backward": 0}
    if not hasattr(c, "time_travel"):  # deepinv's DiffPIR and DDRM: one denoiser call a step
        return {"nfe": c.steps, "unet_forward": c.steps, "unet_backward": 0}
    guided_at: GuidedAt = lambda k, n, t: False  # noqa: E731
    if method.name == "dps_jscc":
        guided_at = lambda k, n, t: True  # noqa: E731
    elif method.name == "sing_inn" and c.gradient == "dps":
        subset = GuidanceSteps(c.guidance_every, c.guidance_last)
        late = c.variant != "two_phase"

        def guided_at(k: int, n: int, t: int) -> bool:
            return subset.active(k, n) and (late or t < c.switch_t)

    timesteps = _timesteps(method.raw, c.steps, num_train_timesteps)
    return loop_nfe(timesteps, c.time_travel, guided_at)
