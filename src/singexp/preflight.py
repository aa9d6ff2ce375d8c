"""Every config check that can run before training, gathered for one run.

:func:`preflight` runs in :func:`singexp.tasks.run` before the loggers start (no W&B run, no
run files for a config error) and again, a no-op then, at the start of each task function (for
direct callers): before the data is indexed and before any ``auto`` codec, INN or prior is
trained. An error that would otherwise surface after hours of
training (a prior preset that is not in the local Hugging Face cache, a prior, codec or INN of
another image size) ends the run at once, as one line naming the key and the fix
(:class:`~singexp.errors.ConfigError`, exit status 2), raised once.

What runs earlier still, and is not repeated here: :func:`singexp.config.validate` (types,
ranges, model files that do not load, the ``inn`` and ``metrics`` groups, the shipped 32 px
models at another ``dataset.image_size``: :func:`singexp.config.check_shipped_sizes`), the
group options and keys
of the command line (:mod:`singexp.__main__`) and the methods' settings
(:func:`singexp.samplers.registry.methods_from_config`, run by
:func:`singexp.config.validate`). What runs right after: the data module indexes the
folder (bad files, the split) before any model is built.

The checks themselves live with what they check: each model kind's in its module
(:func:`~singexp.models.jscc.preflight_codec`, :func:`~singexp.models.inn.preflight_inn`,
:func:`~singexp.models.prior.preflight_prior`), the ones every job shares in
:func:`singexp.models.artifact.preflight_checks` (which a training job runs itself when it is
called directly).

One size key: the codec and the INN are built at ``dataset.image_size``, and so is a trained
prior (``prior.image_size: ${dataset.image_size}``); a preset or a given model fixes its own
size, and a mismatch names both sizes.
"""

from __future__ import annotations

from collections.abc import Callable

from singexp.config import RunConfig
from singexp.models.artifact import preflight_checks, restores
from singexp.models.inn import preflight_inn
from singexp.models.jscc import preflight_codec
from singexp.models.prior import check_prior_size, preflight_prior
from singexp.state import RunState


def preflight(v: RunConfig, state: RunState | None = None) -> list[str]:
    """Run every check of ``v.task`` that needs no training (see the module docstring);
    raise the first failure as a one-line :class:`ConfigError`; return the warnings (also added
    to ``state.warnings``: printed under a restoration's table). Once per run (``state``, the
    run's :class:`~singexp.state.RunState`): :func:`run` calls it before the loggers start, the
    task functions again for direct callers (a no-op then); an auto artifact's training job
    checks its own config."""
    checks: list[Callable[[RunConfig], list[str] | None]] = []
    if v.task in ("jscc", "inn", "restore"):
        checks.append(preflight_codec)
    if v.task == "restore":
        checks.append(preflight_inn)
        if restores(v):
            checks.append(preflight_prior)
    if v.task == "prior":
        checks.append(check_prior_size)
    return preflight_checks(v, state, *checks)
