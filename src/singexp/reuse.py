"""What a process has built once and the next sweep point reuses.

A sweep runs its points in one process (Hydra's basic launcher) or in a few long-lived workers
(joblib's): the data module (with its mean image), the prior UNet, the INNs and the codecs are
kept here between points, keyed by what they are built from — a model file's path, size and
modification time (a checkpoint rewritten by ``auto`` training is a new key), the resolved data
config — and by every setting that changes the object built. Reused objects are frozen models
(eval mode, no gradients) and a set-up data module; nothing a point changes is kept.
:func:`stats` counts hits and builds (a point's metrics.json records them), :func:`clear`
empties the store (tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_STORE: dict[tuple[Hashable, ...], Any] = {}
_COUNTS: dict[str, int] = {"hits": 0, "builds": 0}


def reused(key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    """The object built for ``key`` in this process, built by ``build()`` the first time."""
    if key in _STORE:
        _COUNTS["hits"] += 1
        return _STORE[key]
    value = build()
    _STORE[key] = value
    _COUNTS["builds"] += 1
    return value


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """A file's resolved path, size and modification time (ns): a changed file is a new key."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return str(resolved), stat.st_size, stat.st_mtime_ns


def folder_identity(folder: str | Path) -> tuple[tuple[str, int, int], ...]:
    """:func:`file_identity` of every file under ``folder`` (a diffusers model folder)."""
    root = Path(folder).resolve()
    return tuple(file_identity(p) for p in sorted(root.rglob("*")) if p.is_file())


def config_identity(node: Any) -> str:
    """A resolved config mapping as a stable string key."""
    return json.dumps(node, sort_keys=True, default=str)


def stats() -> dict[str, int]:
    """Hits and builds so far in this process, and the objects kept."""
    return {**_COUNTS, "kept": len(_STORE)}


def clear() -> None:
    """Forget everything kept (a test's fresh start)."""
    _STORE.clear()
    _COUNTS.update(hits=0, builds=0)
