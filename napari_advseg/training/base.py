"""What every trainer shares: a stop flag and the facts recorded beside its checkpoints."""

from __future__ import annotations

import datetime
from typing import Any

import torch


class StoppableTrainer:
    """A trainer whose ``run()`` checks :attr:`stop_requested` between steps."""

    stop_requested: bool = False

    def stop(self) -> None:
        """Ask training to end after the current step (safe to call from another thread)."""
        self.stop_requested = True


def environment_facts(device: torch.device | str, seconds: float) -> dict[str, Any]:
    """Device, wall time, torch version and time of saving, for a checkpoint's provenance."""
    return {
        "device": str(device),
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
