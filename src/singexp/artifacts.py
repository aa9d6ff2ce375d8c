"""Shared trained models, identified by the config that trains them, built once under a lock.

A grid point that needs a model (``jscc.checkpoint=auto``, ``inn.checkpoint=auto``,
``prior.source=auto``) asks for it by its training identity; the first job trains it into
``<paths.artifacts>/<kind>/<hash>/``, the others wait on the folder's file lock and reuse the
result (a file or a folder). Explicit checkpoint paths in config always win.

What a model's identity is (the config keys its training depends on) is said here too:
:func:`codec_artifact_identity`, :func:`inn_artifact_identity`, :func:`prior_artifact_identity`.
Training one is :func:`singexp.tasks.train_artifact` (it runs a task).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from singexp.bcr import format_ratio
from singexp.faults import atomic_write_text, read_results

if TYPE_CHECKING:
    from singexp.config import Validated

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


def training_warnings(path: str | Path) -> list[str]:
    """What the training job of the artifact at ``path`` warned about (its folder's
    metrics.json ``warnings``, e.g. a tiny training split): said again by every run that reuses
    it, since it trained before them."""
    results, _ = read_results(Path(path).parent / "metrics.json", ())
    return [str(w) for w in (results or {}).get("warnings") or []]


def _without(node: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: val for k, val in node.items() if k not in keys}


def _node(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The config group ``key`` as a resolved plain dict."""
    return OmegaConf.to_container(cfg[key], resolve=True)


#: dataset keys that do not change what a model trains on (how the data is batched or loaded,
#: the test split, what is warned about)
DATASET_RUN_KEYS = ("batch_size", "num_workers", "test_size", "min_train_images", "split_overlap")


def _training_identity(cfg: DictConfig, **parts: Any) -> dict[str, Any]:
    """What every trained artifact depends on (the data, not how it is batched or loaded nor the
    test split; the trainer, not where it writes; the seed) plus ``parts``."""
    return {
        "dataset": _without(_node(cfg, "dataset"), *DATASET_RUN_KEYS),
        "trainer": _without(_node(cfg, "trainer"), "default_root_dir"),
        "seed": cfg.seed,
        **parts,
    }


def codec_artifact_identity(cfg: DictConfig, v: Validated) -> dict[str, Any]:
    """What ``jscc.checkpoint=auto`` depends on: data, BCR, channel, ``jscc`` training keys; the
    training SNR (``ChannelConfig.shared_train_range``), never the test SNR ``channel.snr_db``."""
    return _training_identity(
        cfg,
        bcr=format_ratio(v.bcr),
        channel={"name": v.channel.name, "train_snr": list(v.channel.shared_train_range())},
        jscc=_without(_node(cfg, "jscc"), "checkpoint", "export", "resume"),
    )


def inn_artifact_identity(cfg: DictConfig, v: Validated) -> dict[str, Any]:
    """What ``inn.checkpoint=auto`` depends on: data, the ``inn`` training keys and the codec in
    use (``v.jscc.checkpoint``, resolved: its content, not its path)."""
    return _training_identity(
        cfg,
        bcr=format_ratio(v.bcr),
        codec={"sha256": file_digest(v.jscc.checkpoint), "bcr": format_ratio(v.bcr)},
        inn=_without(_node(cfg, "inn"), "checkpoint", "export", "resume"),
    )


#: prior keys that do not change the trained weights (where they come from, monitoring)
PRIOR_RUN_KEYS = (
    "source",
    "resume",
    "checkpoint_every",
    "val_every",
    "val_batches",
    "grid_size",
    "grid_steps",
    "save_grids",
    "trained_on",
)


def prior_artifact_identity(cfg: DictConfig) -> dict[str, Any]:
    """What ``prior.source=auto`` depends on: data and the ``prior`` training keys."""
    prior = _without(_node(cfg, "prior"), *PRIOR_RUN_KEYS)
    # prior.batch_size=null trains with dataset.batch_size: then that one counts
    prior["batch_size"] = prior.get("batch_size") or cfg.dataset.get("batch_size")
    return _training_identity(cfg, prior=prior)
