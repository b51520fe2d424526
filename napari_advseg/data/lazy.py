"""Cohorts made one volume at a time, so that evaluating N subjects holds one, not N.

A :class:`LazyVolumes` is a sequence of named loaders: ``len()`` and :attr:`names` cost nothing,
indexing or iterating makes (generates or reads) each volume when it is needed. An optional
byte budget keeps recently made volumes for a second pass (the sweep evaluates the same test
cohort once per attacker); with the default budget of 0 nothing is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import overload

from .volume import Volume


def volume_bytes(volume: Volume) -> int:
    """Memory held by a volume's arrays."""
    labels = 0 if volume.labels is None else volume.labels.nbytes
    return int(volume.image.nbytes + labels)


class LazyVolumes(Sequence[Volume]):
    """Volumes made on access from ``(name, loader)`` pairs.

    Parameters
    ----------
    items
        One ``(name, loader)`` per volume; ``loader()`` returns the volume.
    cache_bytes
        Keep the most recently made volumes while their arrays take at most this many bytes
        (0: keep none, so memory does not grow with the number of volumes).
    """

    def __init__(
        self, items: Sequence[tuple[str, Callable[[], Volume]]], cache_bytes: int = 0
    ) -> None:
        self._items = list(items)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, Volume] = OrderedDict()

    @property
    def names(self) -> list[str]:
        """The volumes' names, without making them."""
        return [name for name, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Volume: ...

    @overload
    def __getitem__(self, index: slice) -> LazyVolumes: ...

    def __getitem__(self, index: int | slice) -> Volume | LazyVolumes:
        if isinstance(index, slice):
            return LazyVolumes(self._items[index], self.cache_bytes)
        position = range(len(self._items))[index]  # IndexError past the end, as lists do
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        volume = self._items[position][1]()
        self._remember(position, volume)
        return volume

    def __iter__(self) -> Iterator[Volume]:
        for position in range(len(self._items)):
            yield self[position]

    def map(self, transform: Callable[[Volume], Volume]) -> LazyVolumes:
        """The same volumes, each passed through ``transform`` when it is made."""
        return LazyVolumes(
            [(name, partial(_composed, loader, transform)) for name, loader in self._items],
            self.cache_bytes,
        )

    def __add__(self, other: LazyVolumes) -> LazyVolumes:
        return LazyVolumes(self._items + other._items, max(self.cache_bytes, other.cache_bytes))

    def _remember(self, position: int, volume: Volume) -> None:
        size = volume_bytes(volume)
        if size > self.cache_bytes:
            return
        self._cache[position] = volume
        while sum(volume_bytes(v) for v in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)


def _composed(loader: Callable[[], Volume], transform: Callable[[Volume], Volume]) -> Volume:
    return transform(loader())
