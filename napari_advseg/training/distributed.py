"""Running on several processes with ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m napari_advseg.cli train-seg ...`` starts N copies of the
command; each reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment and
:func:`init_world` joins them in one process group: NCCL on CUDA (one GPU per process, the
``LOCAL_RANK``-th), gloo on the CPU. Without those variables (or with ``WORLD_SIZE`` 1) a
command is one process and nothing here communicates.

A :class:`World` is what a trainer or an evaluation needs to know of the others: its rank, the
number of processes, which share of the subjects is its own, how to wrap a network in
``DistributedDataParallel``, and the few collective decisions (stop, divergence, gathering
results) that every rank must take together. All communication is PyTorch's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InvalidInputError
from .device import select_device

T = TypeVar("T")

ENVIRONMENT = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """A process's place among the processes of one run (one process: the default).

    Parameters
    ----------
    rank
        This process's index, 0 to ``size - 1``; rank 0 alone writes files and output.
    size
        The number of processes (torchrun's ``WORLD_SIZE``).
    local_rank
        The index on this machine, which picks the GPU.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, events, progress and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.size > 1

    def device(self, preference: str = "auto") -> torch.device:
        """The device of this rank: its own GPU (by local rank) on CUDA, else as chosen."""
        device = select_device(preference)
        if device.type == "cuda" and self.is_distributed and device.index is None:
            device = torch.device("cuda", self.local_rank)
        return device

    def local_batch(self, global_batch: int, what: str = "--batch-size") -> int:
        """Each rank's share of a global batch; a size that does not divide is refused."""
        if global_batch % self.size:
            raise InvalidInputError(
                f"{what} {global_batch} is the global batch and must divide evenly among the "
                f"{self.size} processes; use a multiple of {self.size}."
            )
        return global_batch // self.size

    def subject_indices(self, count: int) -> list[int]:
        """The indices of this rank's training subjects (``DistributedSampler``, no shuffle).

        Every rank gets ``ceil(count / size)`` subjects; with fewer subjects than that some
        are repeated on two ranks (the sampler pads by wrapping around), so no rank is idle.
        """
        if not self.is_distributed:
            return list(range(count))
        sampler = torch.utils.data.DistributedSampler(
            range(count), num_replicas=self.size, rank=self.rank, shuffle=False
        )
        return list(sampler)

    def share(self, items: Sequence[T] | None) -> list[T] | None:
        """The training items of this rank (:meth:`subject_indices`); ``None`` stays ``None``."""
        return None if items is None else [items[i] for i in self.subject_indices(len(items))]

    def shard(self, items: Sequence[T]) -> Sequence[T]:
        """The share of ``items`` of this rank for an evaluation: every ``size``-th, from ``rank``.

        Unlike :meth:`subject_indices` nothing is repeated, so the shards gathered by
        :meth:`gather` are exactly the items, each once.
        """
        return items[self.rank :: self.size] if self.is_distributed else items

    def gather(self, shard: Sequence[T], count: int) -> list[T]:
        """The results of every rank's :meth:`shard`, back in the items' order (on every rank)."""
        if not self.is_distributed:
            return list(shard)
        return self.interleave(self.all_parts(list(shard)), count)

    def all_parts(self, part: T) -> list[T]:
        """Every rank's ``part``, by rank (on every rank)."""
        if not self.is_distributed:
            return [part]
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, part)
        return parts

    def interleave(self, shards: Sequence[Sequence[T]], count: int) -> list[T]:
        """The ranks' :meth:`shard` results (by rank) back in the items' order."""
        merged: list[Any] = [None] * count
        for rank, part in enumerate(shards):
            merged[rank :: self.size] = part
        return merged

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (pickled; for results, not tensors in a loop)."""
        if not self.is_distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self.is_distributed:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.is_distributed:
            dist.barrier()

    def wrap(
        self, module: torch.nn.Module, find_unused_parameters: bool = False
    ) -> torch.nn.Module:
        """``module`` in ``DistributedDataParallel`` (gradients averaged over ranks), or itself.

        Batch norm stays per rank (``SyncBatchNorm`` does not run on the CPU); the buffers
        (running statistics) are rank 0's, broadcast before each forward pass.
        """
        if not self.is_distributed:
            return module
        parameter = next(module.parameters())
        device_ids = [parameter.device] if parameter.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch norm's running statistics).

        DDP broadcasts them before each forward pass in training; an evaluation in between
        (validation, a frozen f_seg under attack) would otherwise see each rank's own.
        """
        if self.is_distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def numpy_rng(self, seed: int, step: int) -> np.random.Generator:
        """The data stream of this rank from ``step``; rank 0 has that of a single run."""
        return np.random.default_rng([seed, step] if self.rank == 0 else [seed, step, self.rank])

    def torch_generator(self, seed: int) -> torch.Generator:
        """The torch random stream of this rank; rank 0 has that of a single run."""
        return torch.Generator().manual_seed(seed + self.rank * 2**40)

    def facts(self, global_batch: int) -> dict[str, int]:
        """What a checkpoint records of the run's processes and batch."""
        return {
            "world_size": self.size,
            "global_batch": global_batch,
            "batch_per_rank": global_batch // self.size,
        }

    def _collective_device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


SINGLE = World()
"""The world of a run in one process."""


def environment_world() -> World:
    """The :class:`World` that torchrun's environment variables describe (``SINGLE`` if none)."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    try:
        size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise InvalidInputError(
            f"torchrun's RANK, LOCAL_RANK and WORLD_SIZE must be integers ({error})."
        ) from error
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise InvalidInputError(
            f"RANK {rank} and WORLD_SIZE {size} do not describe a process of a run."
        )
    return World(rank, size, local_rank)


_CURRENT: World = SINGLE


def current_world() -> World:
    """The world :func:`init_world` joined (``SINGLE`` before, or in one process)."""
    return _CURRENT


def init_world(device_preference: str = "auto") -> World:
    """Join the process group torchrun set up (once per process); return this rank's world.

    The backend is NCCL when the run's device is CUDA, gloo otherwise. In one process this
    returns :data:`SINGLE` and starts nothing.
    """
    global _CURRENT
    world = environment_world()
    if not world.is_distributed:
        _CURRENT = world
        return world
    if not dist.is_available():
        raise InvalidInputError("This torch was built without torch.distributed; run one process.")
    if not dist.is_initialized():
        device = world.device(device_preference)
        if device.type == "cuda":
            torch.cuda.set_device(device)
            backend = "nccl"
        elif device.type == "cpu":
            backend = "gloo"
        else:
            raise InvalidInputError(
                f"Several processes need CUDA or the CPU, not {device.type}; use --device cpu."
            )
        dist.init_process_group(backend)
    _CURRENT = world
    return world


def close_world() -> None:
    """Leave the process group (after the last collective); harmless in one process."""
    global _CURRENT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = SINGLE
