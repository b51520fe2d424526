"""The models the widgets offer: shipped ones, and those made in this napari session.

The training widget adds each checkpoint folder it finishes; the explorer's choices follow
:attr:`ModelRegistry.events.changed`. Main thread only, like every layer and widget.
:func:`shipped_models` lists the folders under the shipped ``models/`` by the kind their
``config.json`` names, so a model shipped later (a hardened U-Net, another attacker) is offered
without code changes; :meth:`ModelRegistry.choices` puts the two lists together.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari.utils.events import EmitterGroup, Event

from .. import _resources

KINDS = ("segmentation", "attacker")
SHIPPED_DEFAULT = "unet_default"
"""The shipped U-Net that an empty model field stands for (so it is not listed again)."""


def _config_kind(folder: Path) -> str | None:
    """The ``kind`` a checkpoint folder's ``config.json`` names (None if unreadable)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = config.get("kind") if isinstance(config, dict) else None
    return kind if isinstance(kind, str) else None


def shipped_models(kind: str) -> list[Path]:
    """The shipped model folders of ``kind`` ("segmentation" or "attacker"), sorted by name.

    Segmentation models are the folders whose ``config.json`` kind starts with
    ``segmentation/``, except the default U-Net (an empty model field means it); attackers are
    those of kind ``attacker``. Nothing is loaded; an unreadable folder is left out.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        root = _resources.models_dir()
    except FileNotFoundError:
        return []
    found = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        found_kind = _config_kind(folder)
        if found_kind is None:
            continue
        if kind == "attacker":
            if found_kind == "attacker":
                found.append(folder)
        elif found_kind.startswith("segmentation/") and folder.name != SHIPPED_DEFAULT:
            found.append(folder)
    return found


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

    def choices(self, kind: str) -> list[Path]:
        """What a model field offers: the shipped models of ``kind``, then this session's."""
        session = self.segmentation if kind == "segmentation" else self.attackers
        shipped = shipped_models(kind)
        return shipped + [folder for folder in session if folder not in shipped]


REGISTRY = ModelRegistry()
"""The registry shared by every widget of this process."""
