"""Experiment loggers from the ``logger`` config group, and W&B that never hangs offline.

``wandb_logger`` resolves ``mode: auto`` (and ``online``) to ``online`` only when there are
credentials (as wandb itself stores them) and the W&B server answers an HTTP request within a few
seconds; then ``wandb.init`` gets ``init_timeout`` seconds (``logger.wandb.init_timeout``, default
15). Otherwise, or when init fails, it runs ``offline`` (sync later with ``make sync-wandb``),
saying why in one line: metrics.json never waits on W&B. ``finish_loggers`` closes the W&B run so
multirun jobs never share a run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from lightning.pytorch.loggers import Logger, WandbLogger

from singexp.errors import ConfigError
from singexp.instantiate import build
from singexp.schema import config_number

log = logging.getLogger("singexp.loggers")

WANDB_MODES = ("auto", "online", "offline", "disabled")
#: seconds ``wandb.init`` may take online before the run falls back to offline (wandb's own
#: default is 90); ``logger.wandb.init_timeout``
INIT_TIMEOUT = 15.0
#: seconds the W&B server has to answer the reachability probe
PROBE_TIMEOUT = 3.0


def wandb_base_url() -> str:
    """The W&B server wandb itself uses: WANDB_BASE_URL, wandb's settings files or its default
    (``https://api.forge.coreweave.com`` in wandb 0.31)."""
    if os.environ.get("WANDB_BASE_URL"):  # read now: wandb's settings are cached per process
        return os.environ["WANDB_BASE_URL"]
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:
        return os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"


def has_wandb_credentials(base_url: str | None = None) -> bool:
    """True when wandb would find an API key for ``base_url``: WANDB_API_KEY (or an identity
    token file), the ``.netrc`` entry ``wandb login`` wrote, read by wandb's own reader (machine
    = the server's host: ``api.forge.coreweave.com`` for wandb 0.31's default server, which also
    accepts ``api.wandb.ai``), or an API key in wandb's settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    url = base_url or wandb_base_url()
    try:
        from wandb.sdk.lib import wbauth

        if wbauth.read_netrc_auth(host=url):
            return True
    except Exception:  # a malformed .netrc or URL: no usable credentials
        pass
    try:
        from wandb.sdk import wandb_setup

        return bool(wandb_setup.singleton().settings.api_key)
    except Exception:
        return False


def server_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when the server at ``url`` answers an HTTP request (any status) within ``timeout``
    seconds in all. A host that accepts the connection but never answers does not count (a bare
    TCP connect would, and wandb.init would then wait on it)."""
    import urllib.error
    import urllib.request

    answered = threading.Event()

    def probe() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            urllib.request.urlopen(request, timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:  # an HTTP status is an answer
            answered.set()
        except Exception:
            pass

    thread = threading.Thread(target=probe, name="singexp-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)  # bounded whatever the socket does
    return answered.is_set()


def resolve_wandb_mode(mode: str) -> tuple[Literal["online", "offline", "disabled"], str]:
    """The W&B mode to use and why: config, else WANDB_MODE, else auto. ``online`` (asked for
    either way) and ``auto`` need credentials and a server that answers, else ``offline``."""
    if mode not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", f"{mode!r} is not one of {', '.join(WANDB_MODES)}")
    source = "logger.wandb.mode"
    env = os.environ.get("WANDB_MODE")
    if env == "":
        del os.environ["WANDB_MODE"]  # wandb itself rejects an empty mode
    if mode == "auto" and env in ("online", "offline", "disabled", "dryrun"):
        mode, source = ("offline" if env == "dryrun" else env), "WANDB_MODE"
    if mode in ("offline", "disabled"):
        return cast(Literal["offline", "disabled"], mode), f"set by {source}"
    asked = f"{source}=online asks for online, but " if mode == "online" else ""
    url = wandb_base_url()
    if not has_wandb_credentials(url):
        return "offline", f"{asked}no W&B credentials (WANDB_API_KEY or `wandb login`)"
    if not server_answers(url):
        return "offline", f"{asked}{url} does not answer within {PROBE_TIMEOUT:g} s"
    return "online", "credentials found and the server answers"


def _drop_wandb_telemetry() -> None:
    """After a failed online ``wandb.init``: wandb 0.31 would still flush its own usage telemetry
    to that server when the process exits (two 10 s requests per attempt against a server that
    does not answer). Mark the server as not taking it, so the exit does not wait."""
    try:
        import gc
        import warnings

        from wandb.analytics import OpenTelemetryProxy

        with warnings.catch_warnings():  # isinstance on deprecated torch aliases warns
            warnings.simplefilter("ignore")
            for obj in gc.get_objects():
                if isinstance(obj, OpenTelemetryProxy):
                    obj._server_supports_proxy = False
    except Exception:  # another wandb version: at worst the exit waits for wandb's timeouts
        pass


def _settings(**kwargs: Any) -> Any:
    """wandb settings that print nothing (the header, the run history/summary footer, the sync
    hint): singexp says what matters in one line (offline and why; the online run's address)."""
    import wandb

    return wandb.Settings(silent=True, **kwargs)


class DeferredWandbLogger(WandbLogger):
    """A Lightning WandbLogger whose run starts at :meth:`start`, not when it is built.

    Until then its hyper-parameters, metrics and images are kept and replayed at the start, so a
    restoration's ``metrics.json`` is written before W&B can make it wait (the server probe,
    ``wandb.init`` online: up to ``init_timeout`` seconds). :func:`log_results` starts it.
    Online only with credentials and a server that answers,
    ``wandb.init`` bounded by ``init_timeout``; otherwise offline, said in one line."""

    def __init__(self, mode: str, init_timeout: float, save_dir: str, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, dir=save_dir, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # wandb 0.31 warns on the unused setting
            self._wandb_init.pop("anonymous", None)
        self._asked_mode = mode
        self._init_timeout = init_timeout
        self._pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def _keep(self, name: str, *args: Any, **kwargs: Any) -> bool:
        if self._started:
            return False
        self._pending.append((name, args, kwargs))
        return True

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if not self._keep("log_hyperparams", params, *args, **kwargs):
            super().log_hyperparams(params, *args, **kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._keep("log_metrics", metrics, step):
            super().log_metrics(metrics, step)

    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        if not self._keep("log_image", key, images, step, **kwargs):
            super().log_image(key, images, step, **kwargs)

    @property
    def experiment(self) -> Any:
        """The W&B run; None until :meth:`start` (Lightning's setup reads it only to create the
        run early, which a deferred run must not do)."""
        if not self._started:
            return None
        return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]

    def start(self) -> None:
        """Resolve the mode, start the run (bounded online; offline on failure), replay what
        was logged so far."""
        if self._started:
            return
        self._started = True
        import wandb

        resolved, why = resolve_wandb_mode(self._asked_mode)
        os.makedirs(self._save_dir or ".", exist_ok=True)
        if resolved == "online":
            self._wandb_init.update(
                mode="online", settings=_settings(init_timeout=self._init_timeout)
            )
            try:
                run = WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
                log.info("W&B run: %s", getattr(run, "url", None) or run.dir)
            except Exception as error:
                with contextlib.suppress(Exception):  # whatever the failed init left behind
                    wandb.finish(exit_code=1)
                _drop_wandb_telemetry()
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                resolved = "offline"
                why = f"wandb.init failed within {self._init_timeout:g} s: {first}"
                self._experiment = None
        if resolved != "online":
            self._wandb_init.update(mode=resolved, settings=_settings())
        if resolved == "offline":
            log.warning("W&B runs offline (%s); upload later with `make sync-wandb`", why)
        pending, self._pending = self._pending, []
        for name, args, kwargs in pending:
            getattr(self, name)(*args, **kwargs)


def wandb_logger(
    mode: str = "auto",
    save_dir: str = ".",
    init_timeout: float = INIT_TIMEOUT,
    defer: bool = False,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning WandbLogger that never waits long for a network: online only with credentials
    and a server that answers, its ``wandb.init`` bounded by ``init_timeout`` seconds; otherwise
    offline, said in one line. ``defer``: the run starts only when the results are written
    (:class:`DeferredWandbLogger`); else now."""
    timeout = config_number("logger.wandb.init_timeout", init_timeout, float)
    if timeout <= 0:
        raise ConfigError("logger.wandb.init_timeout", f"must be > 0 seconds, got {timeout:g}")
    if mode not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", f"{mode!r} is not one of {', '.join(WANDB_MODES)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    logger = DeferredWandbLogger(mode, timeout, save_dir, **kwargs)
    if not defer:
        logger.start()
    return logger


def build_loggers(node: Mapping[str, Any] | None, defer_wandb: bool = False) -> list[Logger]:
    """Instantiate every logger of the ``logger`` group (an empty group gives none);
    ``defer_wandb``: W&B starts only when :func:`log_results` sends the results (a restoration,
    whose metrics.json must not wait on W&B)."""
    if not node:
        return []
    return [
        build(spec, defer=True)
        if defer_wandb and spec.get("_target_") == WANDB_TARGET
        else build(spec)
        for spec in node.values()
        if spec and "_target_" in spec
    ]


def log_results(loggers: list[Logger], metrics: dict[str, float], results_file: Path) -> None:
    """Send the final metrics to every logger; W&B runs also keep a copy of ``results_file``
    among their files (so an offline run folder holds the results, synced with it). A deferred
    W&B run starts here, after ``results_file`` was written."""
    for logger in loggers:
        if isinstance(logger, DeferredWandbLogger):
            logger.start()
        logger.log_metrics(metrics)
        if isinstance(logger, WandbLogger) and logger.experiment is not None:
            logger.experiment.summary.update(metrics)
            shutil.copy(results_file, Path(logger.experiment.dir) / results_file.name)


#: seconds ``wandb.finish`` may take before the job goes on without it (its offline files are
#: written as the run goes; an online run's last upload is left to wandb's own process)
FINISH_TIMEOUT = 20.0


def finish_loggers(loggers: list[Logger], failed: bool, timeout: float | None = None) -> None:
    """Flush every logger; finish W&B runs, marked failed when the job raised, waiting at most
    ``timeout`` seconds for wandb (then one line says so). A deferred W&B run that never
    started (the job failed before its results) is not started now."""
    timeout = FINISH_TIMEOUT if timeout is None else timeout
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            if isinstance(logger, DeferredWandbLogger) and not logger.started:
                continue
            import wandb

            if wandb.run is not None:
                _bounded(lambda: wandb.finish(exit_code=1 if failed else 0), timeout)
        else:
            logger.finalize("failed" if failed else "success")


def _bounded(call: Any, timeout: float) -> None:
    """``call()`` in a daemon thread, waited for ``timeout`` seconds at most."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as error:  # said below, in the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target, name="singexp-wandb-finish", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _drop_wandb_telemetry()
        log.warning("wandb.finish took over %g s: going on without it", timeout)
    elif errors:
        log.warning("wandb.finish failed: %s", errors[0])


WANDB_TARGET = "singexp.loggers.wandb_logger"


def wandb_spec(node: Mapping[str, Any] | None) -> Any:
    """The W&B entry of a ``logger`` group, if any."""
    for spec in (node or {}).values():
        if spec and spec.get("_target_") == WANDB_TARGET:
            return spec
    return None


def log_sweep_table(
    spec: Mapping[str, Any],
    group: str,
    rows: list[dict[str, Any]],
    figures: list[Path],
    save_dir: Path,
) -> Path | None:
    """One W&B run (``job_type=report``) in the sweep's ``group`` holding the aggregated table
    as a W&B Table and the figures as images; its folder (the offline run, for ``wandb sync``)
    or None when W&B is disabled."""
    import wandb

    mode, why = resolve_wandb_mode(str(spec.get("mode", "auto")))
    if mode == "disabled":
        return None
    save_dir.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else []

    def cell(value: Any) -> Any:  # NaN (no CI from one image) is not valid JSON
        return None if isinstance(value, float) and not math.isfinite(value) else value

    init: dict[str, Any] = {
        "project": spec.get("project"),
        "entity": spec.get("entity"),
        "group": group,
        "job_type": "report",
        "name": f"{group}-report",
        "dir": str(save_dir),
        "config": {
            "sweep_group": group,
            "points": len({(r["bcr"], r["snr_db"], r.get("variant")) for r in rows}),
        },
    }
    timeout = float(spec.get("init_timeout") or INIT_TIMEOUT)
    try:
        run = wandb.init(**init, mode=mode, settings=_settings(init_timeout=timeout))
    except Exception as error:
        if mode != "online":
            raise
        _drop_wandb_telemetry()
        mode, why = "offline", f"wandb.init failed within {timeout:g} s: {error}"
        run = wandb.init(**init, mode=mode, settings=_settings())
    try:
        table = wandb.Table(columns=columns, data=[[cell(r[c]) for c in columns] for r in rows])  # type: ignore[arg-type]  # wandb asks for a list[str | int] where a list[str] is as good
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}
        run.log({"results": table, **images})
        folder = Path(run.dir).parent
    finally:
        run.finish()
    if mode == "offline":
        log.info("W&B report run offline (%s): `wandb sync %s`", why, folder)
    return folder
