"""Shared trained models, identified by the config that trains them, built once under a lock.

A grid point that needs a model (``jscc.checkpoint=auto``, ``inn.checkpoint=auto``,
``prior.source=auto``) asks for it by its training identity; the first job trains it into
``<paths.artifacts>/<kind>/<hash>/``, the others wait on the folder's file lock and reuse the
result (a file or a folder). Explicit checkpoint paths in config always win.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from singexp.faults import atomic_write_text, read_results

log = logging.getLogger("singexp.artifacts")


def identity_hash(identity: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able training identity."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (a model's content identity, whatever its path)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure(root: Path, kind: str, identity: dict[str, Any], build: Callable[[Path], Path]) -> Path:
    """The artifact ``kind`` for ``identity``: reused when present, else ``build(folder)`` once.

    Concurrent callers with the same identity serialise on ``folder/.lock``; the first builds,
    the rest find ``artifact.json`` and return its path. ``build`` returns the artifact, a file
    or a folder; one that has gone missing since is built again.
    """
    folder = Path(root) / kind / identity_hash(identity)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "artifact.json"
    with FileLock(str(folder / ".lock")):
        done, _ = read_results(record, ("path",))  # a torn record (a killed job) does not count
        if done is not None and Path(done["path"]).exists():
            path = Path(done["path"])
            log.info("reusing %s artifact %s", kind, path)
            return path
        log.info("training %s artifact in %s", kind, folder)
        atomic_write_text(folder / "identity.json", json.dumps(identity, indent=2, default=str))
        path = build(folder)
        atomic_write_text(record, json.dumps({"path": str(path)}))
        return path
