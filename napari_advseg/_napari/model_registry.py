"""Models trained in this napari session, so the explorer can offer them as soon as they exist.

The training widget adds each checkpoint folder it finishes; the explorer's choices follow
:attr:`ModelRegistry.events.changed`. Main thread only, like every layer and widget.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.events import EmitterGroup, Event


class ModelRegistry:
    """Checkpoint folders made in this session: segmentation models and attackers."""

    def __init__(self) -> None:
        self.events = EmitterGroup(source=self, changed=Event)
        self.segmentation: list[Path] = []
        self.attackers: list[Path] = []

    def add(self, folder: Path, kind: str) -> None:
        """Record a finished checkpoint folder; ``kind`` is ``"segmentation"`` or ``"attacker"``."""
        target = self.segmentation if kind == "segmentation" else self.attackers
        folder = Path(folder)
        if folder not in target:
            target.append(folder)
        self.events.changed(kind=kind, folder=folder)


REGISTRY = ModelRegistry()
"""The registry shared by every widget of this process."""
