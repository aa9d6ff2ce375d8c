"""Every config check that can run before training, in one place.

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

One size key: the codec and the INN are built at ``dataset.image_size``, and so is a trained
prior (``prior.image_size: ${dataset.image_size}``); a preset or a given model fixes its own
size, and a mismatch names both sizes.
"""

from __future__ import annotations

import logging

from singexp.bcr import format_ratio, paper_ratio_note
from singexp.config import RunConfig
from singexp.errors import ConfigError
from singexp.state import RunState

log = logging.getLogger("singexp")


def restores(run: RunConfig) -> bool:
    """Whether a restoration run has methods that sample the prior (``methods`` or a
    ``sampler`` other than ``none``)."""
    return bool(run.methods)


def check_codec(v: RunConfig) -> list[str]:
    """A given ``jscc.checkpoint`` (not ``auto``) was trained for this BCR and image size;
    returns the warnings (a test SNR far outside the codec's training range)."""
    from singexp.modules.jscc import check_checkpoint, configured_architecture, snr_range_note

    if v.jscc.checkpoint == "auto" and v.task == "jscc":
        raise ConfigError(
            "jscc.checkpoint",
            "auto is the codec a restoration or INN run trains for itself; a jscc run trains "
            "its codec with jscc.checkpoint=null (or tests a file: jscc.checkpoint=PATH)",
        )
    if v.jscc.checkpoint in (None, "auto"):
        return []
    check_checkpoint(
        v.jscc.checkpoint,
        {
            "bcr": format_ratio(v.bcr),
            "image_size": v.latent.image_size,
            **configured_architecture(v.jscc),
        },
    )
    note = snr_range_note(v.jscc.checkpoint, v.channel.snr_db)
    # one line, printed with the results (their warnings)
    return [note] if note is not None else []


def check_inn(v: RunConfig) -> None:
    """A given ``inn.checkpoint`` (``embedded`` or a file, not ``auto``) exists for this BCR and
    was trained at this image size (its codec's content is compared once the codec is known)."""
    from singexp.modules.inn import check_inn_checkpoint, resolve_inn_checkpoint

    value = v.inn.checkpoint if v.inn else None
    if value is None or str(value) == "auto":
        return
    path = resolve_inn_checkpoint(value, v.bcr, v.latent.image_size, v.inn)
    if path is not None:
        check_inn_checkpoint(path, {"bcr": format_ratio(v.bcr), "image_size": v.latent.image_size})


def check_prior_size(v: RunConfig) -> None:
    """``prior.image_size`` (when set) equals ``dataset.image_size``: a preset fixes its size,
    a trained prior follows the data (``${dataset.image_size}``) unless overridden."""
    if v.prior is None:
        raise ConfigError("prior", "missing; choose e.g. prior=embedded")
    size = v.latent.image_size
    source = v.prior.source
    declared = v.prior.image_size
    if declared is None or int(declared) == size:
        return
    if source == "auto" or v.task == "prior":
        fix = (
            f"a trained prior follows the data's size: drop the prior.image_size override or "
            f"set prior.image_size={size}"
        )
    else:
        fix = (
            f"set dataset.image_size={declared} or choose a prior of {size} px "
            "(prior.source=auto trains one on this data)"
        )
    raise ConfigError(
        "prior.image_size", f"is {declared} ({source}) but dataset.image_size={size}; {fix}"
    )


def check_prior(v: RunConfig) -> None:
    """:func:`check_prior_size`; a ``prior.source`` other than ``auto`` is present (local
    folder, ``embedded``, or a preset in the local Hugging Face cache) and generates images of
    that size; ``auto`` can be built at that size."""
    from singexp.prior import build_unet, check_prior_source

    check_prior_size(v)
    prior = v.prior
    assert prior is not None  # check_prior_size said so in one line
    size = v.latent.image_size
    if not prior.trains:
        check_prior_source(prior.source, expected_size=size, expected_channels=prior.in_channels)
        return
    assert prior.block_out_channels is not None  # prior_settings: a trained prior has them
    assert prior.layers_per_block is not None and prior.attention is not None
    build_unet(  # the architecture fits the size (divisible, groups) before anything trains
        size,
        in_channels=prior.in_channels,
        block_out_channels=prior.block_out_channels,
        layers_per_block=prior.layers_per_block,
        attention=prior.attention,
        norm_num_groups=prior.norm_num_groups,
    )


def auto_keys(v: RunConfig) -> list[str]:
    """The ``auto`` keys whose model this run trains on its data: ``jscc.checkpoint`` (an INN
    or restoration run), ``inn.checkpoint`` (SING-INN restores) and ``prior.source`` (a method
    samples the prior)."""
    keys = []
    if v.task in ("inn", "restore") and v.jscc.checkpoint == "auto":
        keys.append("jscc.checkpoint")
    sing_inn = any(getattr(m, "name", k) == "sing_inn" for k, m in v.methods.items())
    if v.task == "restore" and v.inn is not None and str(v.inn.checkpoint) == "auto" and sing_inn:
        keys.append("inn.checkpoint")
    if v.task == "restore" and restores(v) and v.prior is not None and v.prior.source == "auto":
        keys.append("prior.source")
    return keys


def test_only_folder(v: RunConfig) -> str | None:
    """The folder of an image-folder data set (``dataset.root``) that has a test subfolder
    and no image beside it (no train subfolder): a test-only data set, found from the layout
    alone, without decoding or indexing a file (:meth:`ImageFolderDataModule._split_files`
    makes the same call once it indexes); ``None`` for any other data set."""
    from pathlib import Path

    from singexp.data.folder import find_images

    spec = v.data.spec
    if not str(spec.get("_target_", "")).endswith("ImageFolderDataModule") or not spec.get("root"):
        return None
    root = Path(str(spec["root"])).expanduser()
    test_dir = root / str(spec.get("test_dir") or "test")
    if not test_dir.is_dir() or (root / str(spec.get("train_dir") or "train")).is_dir():
        return None
    rest = [f for f in find_images(root) if not f.is_relative_to(test_dir)]
    return None if rest else str(root)


def check_trainable_data(v: RunConfig) -> None:
    """An ``auto`` model (:func:`auto_keys`) needs training images: on a test-only folder
    that is one line naming the key, before loggers start or an artifact folder is made."""
    keys = auto_keys(v)
    root = test_only_folder(v) if keys else None
    if root is None:
        return
    key = keys[0]
    test_dir = v.data.spec.get("test_dir") or "test"
    train_dir, val_dir = (
        v.data.spec.get("train_dir") or "train",
        v.data.spec.get("val_dir") or "val",
    )
    raise ConfigError(
        key,
        f"auto trains a model on this data, but dataset.root={root} is a test-only folder "
        f"(only {test_dir}/: no training images); give {key}=PATH or {key}=embedded, or add "
        f"{train_dir}/ and {val_dir}/ folders of training images beside {test_dir}/",
    )


def preflight(v: RunConfig, state: RunState | None = None) -> list[str]:
    """Run every check of ``cfg.task`` that needs no training (see the module docstring);
    raise the first failure as a one-line :class:`ConfigError`; return the warnings (also added
    to ``state.warnings``: printed under a restoration's table). Once per run (``state``, the
    run's :class:`~singexp.state.RunState`): :func:`run` calls it before the loggers start, the
    task functions again for direct callers (a no-op then); an auto artifact's training job
    checks its own config."""
    if state is not None and state.preflight_done:
        return []
    task = v.task
    warnings = []
    note = paper_ratio_note(v.bcr, v.latent.image_size)
    if note is not None and task in ("jscc", "inn", "restore"):
        log.warning(note)
        warnings.append(note)
    if task in ("jscc", "inn", "restore"):
        warnings += check_codec(v)
    check_trainable_data(v)
    if task == "restore":
        check_inn(v)
        if restores(v):
            check_prior(v)
    if task == "prior":
        check_prior_size(v)
    if state is not None:
        state.warnings += warnings
        state.preflight_done = True
    return warnings
