"""What the training widget asks for, and the worker function that builds and runs the trainer.

The widget reads its controls and layers on the GUI thread into a frozen request (cheap checks
fail there, at once); the worker thread then does the slow part, loading the model to attack
and building the trainer (whose constructor checks the output folder and the memory), and
yields the trainer's events. Nothing here touches Qt, napari or the widget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..data.splits import hold_out_slab
from ..data.volume import Volume
from ..errors import AdvsegError
from ..nets.attacker import AttackerConfig
from ..segmentation import load_segmentation_model
from ..training.attack_trainer import AttackTrainer, AttackTrainingConfig
from ..training.events import TrainingEvent
from ..training.seg_trainer import SegTrainer, SegTrainingConfig


@dataclass(frozen=True)
class SegRequest:
    """Train a U-Net on one labelled scan (a middle slab of it validates)."""

    volume: Volume
    out_dir: Path
    config: SegTrainingConfig
    resume: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class AttackRequest:
    """Train an attacker of a segmentation model (``None``: the shipped U-Net) on one scan."""

    volume: Volume
    out_dir: Path
    config: AttackTrainingConfig
    attacker: AttackerConfig
    seg_path: Path | None = None
    resume: bool = False
    overwrite: bool = False


TrainingRequest = SegRequest | AttackRequest


@dataclass(frozen=True)
class TrainerReady:
    """The first thing the worker yields: the trainer (so Stop can reach it) and a note."""

    trainer: SegTrainer | AttackTrainer
    note: str


@dataclass(frozen=True)
class TrainingFailed:
    """A user-caused error (an ``AdvsegError``) ended the worker.

    ``started``: after training began; else while building the trainer (an unusable folder, a
    checkpoint in the way, not enough memory).
    """

    message: str
    started: bool


def build_trainer(request: TrainingRequest) -> TrainerReady:
    """The backend trainer for a request (slow: loads models; raises ``AdvsegError``s)."""
    if isinstance(request, SegRequest):
        train, val = hold_out_slab(request.volume)
        note = f"validation: {val[0].name}" if val else "too few labelled slices to validate"
        trainer = SegTrainer(
            request.out_dir,
            train,
            val,
            config=request.config,
            resume=request.resume,
            overwrite=request.overwrite,
        )
        return TrainerReady(trainer, note)
    seg = load_segmentation_model(request.seg_path)
    trainer = AttackTrainer(
        request.out_dir,
        seg,
        [request.volume],
        request.attacker,
        config=request.config,
        resume=request.resume,
        overwrite=request.overwrite,
    )
    return TrainerReady(trainer, f"attacking {seg.name}")


def run_training(
    request: TrainingRequest,
) -> Iterator[TrainerReady | TrainingEvent | TrainingFailed]:
    """Worker body: build the trainer, yield it, then yield every training event.

    A user-caused error is yielded as :class:`TrainingFailed` (one line for a notification);
    anything else is a bug and propagates (napari shows it with its traceback).
    """
    try:
        ready = build_trainer(request)
    except AdvsegError as error:
        yield TrainingFailed(str(error), started=False)
        return
    yield ready
    try:
        yield from ready.trainer.run()
    except AdvsegError as error:
        yield TrainingFailed(str(error), started=True)
