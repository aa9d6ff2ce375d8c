"""What a run's console shows besides its progress: each note once, third-party noise left out.

:func:`quiet_console` (called by :func:`singexp.tasks.run`) filters, narrowly (by message, and
category for warnings; never a blanket ignore):

- Lightning's "Tip: For seamless cloud ..." adverts (litlogger, litmodels);
- torch's ``isinstance(treespec, LeafSpec)`` FutureWarning that Lightning's ``_pytree`` triggers;
- huggingface_hub's ``local_dir_use_symlinks`` UserWarning (diffusers passes the argument on
  every ``from_pretrained``: every preset load);

and lets a warning logged more than once in a process through only the first time
(:class:`OncePerProcess` on the root handlers: the non-paper BCR note of every preflight, a
metric's missing weights). :func:`said` tells the results printer whether a note is on screen
already. W&B's own prints are turned off where its runs start (:mod:`singexp.loggers`).
"""

from __future__ import annotations

import logging
import threading
import warnings

#: messages of WARNING and above already shown in this process
_SAID: set[str] = set()
_LOCK = threading.Lock()

#: Lightning's adverts, logged at INFO by ``lightning.pytorch.utilities.rank_zero``
LIGHTNING_ADVERTS = ("Tip: For seamless cloud",)
#: (message regex, category) of third-party warnings that say nothing about the run
NOISE_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"The `local_dir_use_symlinks` argument is deprecated", UserWarning),
)


def said(text: str) -> bool:
    """Whether ``text`` was part of a warning already shown in this process."""
    with _LOCK:
        return any(text in message for message in _SAID)


def _advert(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return record.name.startswith("lightning") and any(a in message for a in LIGHTNING_ADVERTS)


class NoAdverts(logging.Filter):
    """Drop Lightning's adverts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _advert(record)


class OncePerProcess(NoAdverts):
    """Drop Lightning's adverts and a WARNING (or worse) whose message was already shown in this
    process (decided once per record: every handler, console and log file, gets the first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not super().filter(record):
            return False
        if record.levelno < logging.WARNING:
            return True
        first = getattr(record, "singexp_first", None)
        if first is None:
            message = record.getMessage()
            with _LOCK:
                first = message not in _SAID
                _SAID.add(message)
            record.singexp_first = first
        return bool(first)


_FILTER = OncePerProcess()
_ADVERTS = NoAdverts()


def quiet_console() -> None:
    """Install the filters (idempotent): on the root handlers (Hydra's console and log file),
    on Lightning's rank-zero logger (when it prints on its own) and in :mod:`warnings`."""
    for message, category in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _ADVERTS not in rank_zero.filters:
        rank_zero.addFilter(_ADVERTS)
