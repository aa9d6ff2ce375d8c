"""``singexp restore PATH... [overrides] [out=DIR]``: restore image files with the methods of
the config, through :class:`~singexp.pipeline.SingPipeline` (the command line's entry layer,
beside :mod:`singexp.__main__`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from singexp.cli import quote_group_overrides
from singexp.config import CONF_DIR, validate
from singexp.errors import ConfigError, SingexpError
from singexp.pipeline import GRID_FILE, TENSORS_FILE, SingPipeline, image_files, output_names
from singexp.points import ORIGINAL
from singexp.quick import apply_quick

log = logging.getLogger("singexp")

#: where ``singexp restore`` writes without ``out=``: a run folder of its own per experiment
RESTORE_RUN_DIR = (
    "${paths.root}/${experiment_name}/restore/${now:%Y-%m-%d_%H-%M-%S}_${singexp.pid:}"
)

# ---- the command line: singexp restore PATH... [overrides] [out=DIR] ------------------------
#: Hydra's flags that take a value (``--cfg job``): not image paths
_VALUE_FLAGS = frozenset({"--cfg", "-c", "--package", "-p", "--info", "-i"})


def split_restore_args(args: Sequence[str]) -> tuple[list[str], list[str], list[str], str | None]:
    """(image paths, Hydra flags, overrides, ``out=`` folder or None) of ``singexp restore``."""
    paths: list[str] = []
    flags: list[str] = []
    overrides: list[str] = []
    out: str | None = None
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "--multirun"):
            raise ConfigError("restore", "restores one set of images; it takes no -m/--multirun")
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _VALUE_FLAGS and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        elif arg.startswith("out="):
            out = arg.partition("=")[2]
            if not out:
                raise ConfigError("out", "must name a folder, e.g. out=restored")
        elif "=" in arg and not Path(arg).exists():
            overrides.append(arg)
        else:
            paths.append(arg)
        i += 1
    return paths, flags, overrides, out


def say(line: str) -> None:
    """Print ``line`` and write it to the run's log (``restore.log``; Hydra's file handler) too,
    flushed: what the command printed is in the run folder."""
    import logging

    print(line, flush=True)
    record = logging.getLogger("singexp.restore").makeRecord(
        "singexp.restore", logging.INFO, __file__, 0, line, (), None
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            handler.flush()


def _fail(error: Exception) -> None:
    print(f"singexp: error: {error}", file=sys.stderr)
    sys.exit(2)


def print_summary(result: dict[str, Any], out: Path) -> None:
    """One line per image: PSNR of DeepJSCC and each method against the resized original."""
    from singexp.metrics import psnr

    outputs = result["outputs"]
    original = outputs[ORIGINAL]
    names = output_names(result["files"])
    for i, name in enumerate(names):
        parts = [
            f"{method} {float(psnr(images[i : i + 1], original[i : i + 1])):.2f} dB"
            for method, images in outputs.items()
            if method != ORIGINAL
        ]
        say(f"{name}: PSNR {', '.join(parts)}")
    say(f"restored images, {GRID_FILE} and {TENSORS_FILE} written to {out}")


def restore_cli(args: Sequence[str]) -> None:
    """``singexp restore PATH... [group=option ...] [key=value ...] [out=DIR]``: restore image
    files (or folders) with the methods of the config (e.g. ``+experiment=sing_inn``) into the
    run folder (``outputs/<experiment_name>/restore/<time>``) or ``out=DIR``."""
    import hydra

    from singexp.cli import check_group_overrides, check_override_keys

    try:
        paths, flags, overrides, out = split_restore_args(args)
        help_only = any(
            f in ("-h", "--help", "--hydra-help", "--cfg", "-c", "--info", "-i") for f in flags
        )
        files = [] if help_only else image_files(paths)  # first: the quickest to check
        overrides = quote_group_overrides(overrides)
        check_group_overrides(overrides)
        check_override_keys(overrides)
    except SingexpError as error:
        _fail(error)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={out}" if out else f"hydra.run.dir={RESTORE_RUN_DIR}")
    if not any(o.startswith("hydra.job.name=") for o in overrides):
        overrides.append("hydra.job.name=restore")  # the run folder's log: restore.log

    def job(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        try:
            target = Path(out) if out else Path(HydraConfig.get().runtime.output_dir)
            apply_quick(cfg)  # as singexp.tasks.run does
            pipe = SingPipeline.from_run(validate(cfg), threads=cfg.get("threads", "auto"))
            size = pipe.image_size
            say(
                f"images are resized (shorter side) and centre-cropped to {size}×{size} px "
                f"(dataset.image_size; the shipped embedded models are 32 px)"
            )
            pipe.log_notices = False  # said here: printed and in restore.log, whatever logging
            started = time.perf_counter()
            result = pipe.restore_files(files, target)
            seconds = time.perf_counter() - started
            for notice in result["notices"]:
                say(f"note: {notice}")
            print_summary(result, target)
            log.info(
                "restored %d images in %.2f s (%.3f s per image)",
                len(files),
                seconds,
                seconds / max(1, len(files)),
            )
        except SingexpError as error:
            _fail(error)

    sys.argv[1:] = flags + overrides
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(job)()
