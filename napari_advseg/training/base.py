"""What every trainer shares: stop flag, output-folder rules, divergence checks, provenance."""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InvalidInputError
from ..validation import check_output_dir
from .checkpoint import has_checkpoint
from .distributed import SINGLE, World


class StoppableTrainer:
    """A trainer whose ``run()`` checks :attr:`stop_requested` between steps."""

    stop_requested: bool = False

    def stop(self) -> None:
        """Ask training to end after the current step (safe to call from another thread)."""
        self.stop_requested = True


class Diverged(Exception):
    """Raised inside a training step when a loss or a gradient is NaN or infinite.

    It never leaves a trainer: ``run()`` turns it into a :class:`TrainingFinished` with a
    ``reason`` and keeps the last checkpoint written before it.
    """


def check_out_dir(
    out_dir: str | os.PathLike[str],
    resume: bool,
    overwrite: bool,
    *resume_from: str | os.PathLike[str],
) -> Path:
    """Check a trainer's output folder before any work; return it as a path.

    The folder must be writable (or creatable). A folder that holds a checkpoint is refused
    unless ``resume`` (continue it) or ``overwrite`` (replace it; files the trainer does not
    write, such as a model card, are kept); ``resume`` needs a checkpoint in every
    ``resume_from`` folder (default: the output folder itself). Interrupted saves are repaired
    first (:func:`~napari_advseg.training.checkpoint.recover_checkpoint`).

    Raises
    ------
    InvalidInputError
        For a folder that cannot be written, or both ``resume`` and ``overwrite``.
    CheckpointError
        For an existing checkpoint without either flag, or ``resume`` without a checkpoint.
    """
    if resume and overwrite:
        raise InvalidInputError(
            "Use either --resume (continue the checkpoint) or --overwrite (replace it), not both."
        )
    folder = check_output_dir(out_dir, "output folder")
    sources = [Path(p) for p in resume_from] or [folder]
    if folder.is_dir():
        holds = has_checkpoint(folder) or any(has_checkpoint(path) for path in sources)
        if holds and not (resume or overwrite):
            raise CheckpointError(
                f"{folder} already holds a checkpoint; use --resume to continue it, or "
                "--overwrite to replace it."
            )
    if resume:
        for source in sources:
            if not (source.is_dir() and has_checkpoint(source)):
                raise CheckpointError(
                    f"{source}: no checkpoint to resume; drop --resume to start a new run."
                )
    return folder


def non_finite(values: Mapping[str, torch.Tensor | float]) -> list[str]:
    """Names of the values that are NaN or infinite."""
    return [
        name
        for name, value in values.items()
        if not math.isfinite(float(value.detach() if isinstance(value, torch.Tensor) else value))
    ]


def check_step(losses: Mapping[str, torch.Tensor], what: str, world: World = SINGLE) -> None:
    """Raise :class:`Diverged` if a loss term is NaN or infinite (call before ``backward``).

    With several processes every rank raises when any one's losses are not finite, so that
    all leave the step together (a rank alone in ``backward`` would wait for ever).
    """
    bad = non_finite(losses)
    if world.any(bool(bad)):
        raise Diverged(f"{what} {', '.join(bad) or 'on another process'}")


def check_gradients(parameters: Iterable[torch.nn.Parameter], what: str) -> None:
    """Raise :class:`Diverged` if a gradient holds NaN or inf (call before ``optimizer.step``)."""
    grads = [p.grad.detach().abs().amax() for p in parameters if p.grad is not None]
    if grads and not bool(torch.isfinite(torch.stack(grads)).all()):  # amax keeps NaN
        raise Diverged(f"{what} gradients")


def divergence_reason(step: int, what: str, saved_step: int | None) -> str:
    """The ``TrainingFinished.reason`` of a run stopped by non-finite losses at ``step``."""
    kept = (
        f"kept the checkpoint of step {saved_step}"
        if saved_step is not None
        else "no checkpoint had been saved"
    )
    return (
        f"losses became non-finite at step {step} ({what}); {kept}. Lower the learning rate or "
        "check the settings and the data."
    )


def environment_facts(device: torch.device | str, seconds: float) -> dict[str, Any]:
    """Device, wall time, torch version and time of saving, for a checkpoint's provenance."""
    return {
        "device": str(device),
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
