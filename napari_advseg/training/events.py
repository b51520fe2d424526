"""Typed progress events that trainers yield, for progress bars, plots and logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrainingStarted:
    """Training begins (or resumes at ``start_step``)."""

    total_steps: int
    start_step: int
    device: str
    num_parameters: int


@dataclass(frozen=True)
class StepCompleted:
    """One optimisation step finished; ``losses`` maps each loss term to its value."""

    step: int
    total_steps: int
    epoch: int
    losses: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class ValidationCompleted:
    """Validation after an epoch: Dice per organ (``None`` where undefined) and their mean."""

    step: int
    epoch: int
    dice: dict[str, float | None]
    mean_dice: float
    is_best: bool


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint folder was written; ``role`` is ``"best"`` or ``"last"``."""

    step: int
    path: Path
    role: str


@dataclass(frozen=True)
class TrainingFinished:
    """Training ended, normally or because :meth:`stop` was called.

    ``reason`` says why a run ended early other than by :meth:`stop`, e.g. "losses became
    non-finite at step 12; kept the checkpoint of step 10" (then ``stopped`` is True too).
    """

    step: int
    stopped: bool
    best_path: Path | None
    last_path: Path | None
    best_metrics: dict[str, float | None] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class AttackProgress:
    """The attack's effect on a fixed monitoring batch (posterior-mean latents).

    ``dice_drop`` maps each organ to the relative decrease (%) of its Dice from S0 to S_DV
    against the training reference (``None`` where undefined); ``p`` is the perceptibility
    mean |I_DV - I0| in normalised units.
    """

    step: int
    dice_drop: dict[str, float | None]
    mean_drop: float | None
    p: float


TrainingEvent = (
    TrainingStarted
    | StepCompleted
    | ValidationCompleted
    | CheckpointSaved
    | TrainingFinished
    | AttackProgress
)
