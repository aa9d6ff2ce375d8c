"""What every trained model kind shares: its training identity, the model an ``auto`` key
names trained once under a lock and reused, and the checks before a job trains.

A grid point that needs a model (``jscc.checkpoint=auto``, ``inn.checkpoint=auto``,
``prior.source=auto``) asks for it by its training identity; the first job trains it into
``<paths.artifacts>/<kind>/<hash>/``, the others wait on the folder's file lock and reuse the
result (a file or a folder). Explicit checkpoint paths in config always win. Each kind's own
identity, resolution and training job live in its module (:mod:`singexp.models.jscc`,
:mod:`~singexp.models.inn`, :mod:`~singexp.models.prior`); this one holds

- :func:`training_identity` (the data, trainer and seed every model depends on);
- :func:`train_artifact` (trained once: :func:`ensure`) and :func:`training_warnings`;
- :func:`preflight_checks` and :func:`check_trainable_data` (an ``auto`` model needs training
  images).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch.loggers import Logger

from singexp.bcr import paper_ratio_note
from singexp.data.folder import find_images
from singexp.errors import ConfigError, SingexpError
from singexp.faults import atomic_write_text
from singexp.points import identity_hash, read_results, write_json
from singexp.state import RunState

if TYPE_CHECKING:
    from singexp.config import RunConfig

log = logging.getLogger("singexp.models")

#: a training job: the run's config, its loggers and its state (:class:`RunState`; None: a
#: fresh one) → its JSON-ready results
Job: TypeAlias = "Callable[[RunConfig, list[Logger], RunState | None], dict[str, Any]]"


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


def without(node: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """``node`` as a dict without ``keys``."""
    return {k: val for k, val in node.items() if k not in keys}


#: dataset keys that do not change what a model trains on (how the data is batched or loaded,
#: the test split, what is warned about)
DATASET_RUN_KEYS = ("batch_size", "num_workers", "test_size", "min_train_images", "split_overlap")


def training_identity(run: RunConfig, **parts: Any) -> dict[str, Any]:
    """What every trained artifact depends on (the data, not how it is batched or loaded nor the
    test split; the trainer, not where it writes; the seed) plus ``parts``."""
    dataset = without(run.plain["dataset"], *DATASET_RUN_KEYS)
    if dataset.get("content") in (None, dataset.get("name")):  # says nothing beyond the name:
        dataset.pop("content", None)  # the identity (and hash) of models trained before the key
    return {
        "dataset": dataset,
        "trainer": without(run.trainer, "default_root_dir"),
        "seed": run.seed,
        **parts,
    }


# ---- an ``auto`` model, trained once -------------------------------------------------------
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the body from ``seed``, then give the caller back its own random state (a job's
    results must not depend on whether it trained an artifact or reused one)."""
    state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            L.seed_everything(seed, workers=True, verbose=False)
            yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


def single_process(run: RunConfig) -> dict[str, Any]:
    """Trainer overrides that train an artifact in this process when the run is multi-process
    (``trainer=ddp``): the processes a DDP trainer launches re-run the command and would wait on
    the artifact's lock that this process holds while it trains (:func:`ensure`). Empty
    otherwise; the artifact's identity keeps the run's trainer."""
    strategy = str(run.trainer.get("strategy", "auto"))
    if "ddp" not in strategy and "fsdp" not in strategy:
        return {}
    log.info("an auto artifact of a %s run trains in one process (devices=1)", strategy)
    return {"trainer.strategy": "auto", "trainer.devices": 1, "trainer.num_nodes": 1}


def train_artifact(
    run: RunConfig,
    task: str,
    job: Job,
    identity: dict[str, Any],
    artifact: str,
    overrides: Callable[[Path], dict[str, Any]],
) -> Path:
    """The model that the training job ``job`` (of ``task``: ``jscc``, ``inn``, ``prior``)
    trains for ``identity``, trained once and shared (:func:`ensure`).

    The first caller runs the job on ``run`` (seeded by ``seed``) whose run folder is the
    artifact folder, with no callbacks and the dotted keys of ``overrides(folder)``; it writes
    ``folder/metrics.json`` and ``folder/<artifact>`` (a file or a folder), the path returned.
    """

    def train(folder: Path) -> Path:
        sub = run.with_settings(
            {
                "task": task,
                "paths.output_dir": str(folder),
                "callbacks": {},
                # Lightning adds checkpoints/ itself (not checkpoints/checkpoints/)
                "trainer.default_root_dir": str(folder),
                **single_process(run),
                **overrides(folder),
            }
        )
        with _seeded(sub.seed):
            results = job(sub, [], RunState())  # a run of its own
        write_json(folder / "metrics.json", results)
        path = folder / artifact
        if not path.exists():
            raise SingexpError(f"training the {task} artifact in {folder} wrote no {artifact}")
        return path

    return ensure(Path(str(run.paths["artifacts"])), task, identity, train)


def restores(run: RunConfig) -> bool:
    """Whether a restoration run has methods that sample the prior (``methods`` or a
    ``sampler`` other than ``none``)."""
    return bool(run.methods)


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


def preflight_checks(
    run: RunConfig, state: RunState | None, *checks: Callable[[RunConfig], list[str] | None]
) -> list[str]:
    """The checks of a job before it trains or builds a model: the paper's-BCR note (a task
    that uses a codec), an ``auto`` model on a test-only folder (:func:`check_trainable_data`)
    and the model kinds' ``checks`` (each returns its warnings, or None); raises the first
    failure as a one-line :class:`ConfigError`. Once per run: a no-op when ``state`` says it
    ran (:func:`singexp.preflight.preflight`, in the task layer, runs it first); the warnings
    are added to ``state.warnings`` and returned."""
    if state is not None and state.preflight_done:
        return []
    warnings: list[str] = []
    note = paper_ratio_note(run.bcr, run.latent.image_size)
    if note is not None and run.task in ("jscc", "inn", "restore"):
        log.warning(note)
        warnings.append(note)
    check_trainable_data(run)
    for check in checks:
        warnings += check(run) or []
    if state is not None:
        state.warnings += warnings
        state.preflight_done = True
    return warnings
