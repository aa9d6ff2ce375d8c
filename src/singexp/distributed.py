"""Multi-process runs (Lightning DDP, one process per device): which process this is, how the
test images are shared between the processes, and how their results come back to rank 0.

A restoration evaluation gives the single-process numbers under ``trainer=ddp`` on any number of
processes: the test images keep their single-process batches (:class:`ShardedBatches`
hands process r the batches r, r + N, r + 2N, … of the fixed test order; no batch is padded or
repeated), every batch's channel and sampler noise is seeded by its *global* batch index
(:func:`singexp.modules.restoration.batch_generator`), and the per-batch results are gathered on
rank 0 (:func:`gather_to_zero`), which alone computes the set-level metrics on all images and
writes results, grids and loggers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import Sampler

#: environment variables that carry a process's rank before the process group exists, in the
#: order Lightning reads them (``lightning.fabric.utilities.rank_zero``): torchrun / Lightning's
#: own launcher (which starts ranks > 0 with LOCAL_RANK set), Slurm, LSF
RANK_VARIABLES: tuple[str, ...] = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launch_rank() -> int:
    """This process's rank as its launcher gave it (0 when none did): ranks > 0 of a DDP run
    re-run the command, and must not lock, archive or write the run folder that rank 0 owns."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return 0


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` of the initialised process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_to_zero(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` on rank 0, in rank order (None on the other ranks); ``[obj]``
    in a single process. Objects travel pickled (tensors: keep them on the CPU)."""
    rank, size = world()
    if size == 1:
        return [obj]
    gathered: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


class ShardedBatches(Sampler[list[int]]):
    """The test order in batches of ``batch_size`` (the last one shorter), process r of N taking
    the global batches r, r + N, …: every image once, no padding, and each batch the one a
    single process would see. The process group is read when iterated (after DDP starts)."""

    def __init__(self, length: int, batch_size: int) -> None:
        self.length = int(length)
        self.batch_size = int(batch_size)

    @property
    def batches(self) -> int:
        """Global batches of the whole test split."""
        return -(-self.length // self.batch_size)

    def global_batch(self, local: int) -> int:
        """The global batch index of this process's ``local``-th batch."""
        rank, size = world()
        return local * size + rank

    def start(self, global_batch: int) -> int:
        """The test index of the first image of ``global_batch``."""
        return global_batch * self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for local in range(len(self)):
            first = self.start(self.global_batch(local))
            yield list(range(first, min(first + self.batch_size, self.length)))

    def __len__(self) -> int:
        rank, size = world()
        return max(0, -(-(self.batches - rank) // size))
