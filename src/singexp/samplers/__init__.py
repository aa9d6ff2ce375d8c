"""Diffusion samplers: one scheduler loop with pluggable x0 corrections (paper: SING-Zero;
docs/guide/methods.md).

- :mod:`~singexp.samplers.loop` — :func:`sample`, the update forms (``posterior``, ``ddnm``),
  time travel.
- :mod:`~singexp.samplers.corrections` — :class:`NullSpace` (DDNM), :class:`NullSpacePlus`
  (DDNM+).
- :mod:`~singexp.samplers.sing_zero` — :func:`sing_zero` (Algorithm 1).
- :mod:`~singexp.samplers.sing_inn` — :func:`sing_inn` (Algorithm 2, INN guidance; DPS form).
- :mod:`~singexp.samplers.registry` — :func:`restore`, the ``sampler`` config group's entry
  point (``none``, ``sing_zero``, ``sing_inn``).
"""

from singexp.samplers.base import Correction, StepInfo
from singexp.samplers.corrections import CORRECTIONS, NullSpace, NullSpacePlus, build_correction
from singexp.samplers.loop import (
    UPDATES,
    DDNMUpdate,
    PosteriorUpdate,
    SamplingError,
    TimeTravel,
    UpdateForm,
    sample,
)
from singexp.samplers.registry import SAMPLERS, Method, check_method, restore
from singexp.samplers.sing_zero import SingZeroConfig, sing_zero

__all__ = [
    "CORRECTIONS",
    "SAMPLERS",
    "UPDATES",
    "Correction",
    "DDNMUpdate",
    "Method",
    "NullSpace",
    "NullSpacePlus",
    "PosteriorUpdate",
    "SamplingError",
    "SingZeroConfig",
    "StepInfo",
    "TimeTravel",
    "UpdateForm",
    "build_correction",
    "check_method",
    "restore",
    "sample",
    "sing_zero",
]
