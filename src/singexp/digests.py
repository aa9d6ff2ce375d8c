"""Content identities: a short hash of a training identity, the sha256 of a file's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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
