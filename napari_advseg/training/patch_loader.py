"""The U-Net trainer's batches: sampled and augmented in the trainer, or in DataLoader workers.

With ``workers = 0`` (the default) each batch is made in the training process from one random
stream, that of :meth:`~.distributed.World.numpy_rng` and ``torch_generator`` from the step
the run starts at. With ``workers > 0`` a ``torch.utils.data.DataLoader`` makes them in that
many worker processes while the network trains (on CUDA into pinned memory, so that the copy
to the GPU overlaps): worker ``k`` draws its own stream (the rank's seeds and ``k``), and the
loader takes the workers' batches in turn, so a run is repeatable for a given number of
workers, but not the same as with another number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .distributed import World

Batch = tuple[torch.Tensor, torch.Tensor]
MAX_WORKERS = 64
"""The most DataLoader workers a trainer takes."""


class PatchBatches(IterableDataset):
    """An endless stream of one rank's training batches (images, labels).

    Parameters
    ----------
    make
        ``make(count, rng, generator)`` -> one batch of ``count`` (e.g. sample and augment).
    count
        Patches per batch (the rank's share of the global batch).
    world, seed, torch_seed, step
        The rank, the run's seeds and the step the stream starts at.
    """

    def __init__(
        self, make: Any, count: int, world: World, seed: int, torch_seed: int, step: int
    ) -> None:
        super().__init__()
        self.make = make
        self.count = count
        self.world = world
        self.seed = seed
        self.torch_seed = torch_seed
        self.step = step

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is None:  # in the trainer: the stream of a run without workers
            rng = self.world.numpy_rng(self.seed, self.step)
            generator = self.world.torch_generator(self.torch_seed)
        else:
            worker = info.id + 1
            rng = np.random.default_rng([self.seed, self.step, self.world.rank, worker])
            generator = torch.Generator().manual_seed(
                self.torch_seed + self.world.rank * 2**40 + worker * 2**50
            )
        while True:
            yield self.make(self.count, rng, generator)


def batch_stream(batches: PatchBatches, workers: int, device: torch.device) -> Iterator[Batch]:
    """Iterate ``batches`` here (``workers = 0``) or through a DataLoader with ``workers``."""
    if workers == 0:
        return iter(batches)
    loader = DataLoader(
        batches,
        batch_size=None,  # the dataset yields whole batches
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
        prefetch_factor=2,
    )
    return iter(loader)
