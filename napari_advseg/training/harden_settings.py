"""The settings of a hardening run, and which of them a resumed run may change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InvalidInputError
from ..validation import check_integer, check_number
from .augment import check_augmentation
from .patch_loader import MAX_WORKERS


@dataclass(frozen=True)
class HardenConfig:
    """Settings of a hardening run (the attacker's own are an :class:`AttackTrainingConfig`).

    Attributes
    ----------
    steps
        f_seg updates (after the warm-up).
    batch_size, patch_size
        Labelled patches per f_seg update, and their side (pixels, a multiple of f_seg's and
        the attacker's strides).
    attacked_fraction
        Share of each f_seg batch replaced by attacked patches (0: clean fine-tuning, a
        control run: the attacker is not trained).
    attacker_every
        One attacker step before every ``attacker_every``-th f_seg step.
    warmup_steps
        Attacker-only steps before f_seg's first update.
    learning_rate
        Adam's (constant) learning rate for f_seg: a fine-tuning rate, 10x below the U-Net's
        training rate.
    dice_weight, foreground_fraction, augment, domain_augment
        As in U-Net training (:class:`~.seg_trainer.SegTrainingConfig`).
    monitor_every, checkpoint_every
        Steps between the attack's progress on a fixed batch, and between checkpoints (and
        validations).
    workers
        DataLoader workers that sample and augment f_seg's patches (:mod:`.patch_loader`;
        0: in the trainer, from the stream the attacker's steps draw from too).
    """

    steps: int = 2000
    batch_size: int = 16
    patch_size: int = 128
    attacked_fraction: float = 0.5
    attacker_every: int = 1
    warmup_steps: int = 0
    learning_rate: float = 1e-4
    dice_weight: float = 0.0
    foreground_fraction: float = 0.5
    augment: bool = True
    domain_augment: bool = False
    monitor_every: int = 25
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        check_integer(self.steps, "steps", low=0, high=100_000_000)
        check_integer(self.workers, "workers", low=0, high=MAX_WORKERS)
        check_integer(self.batch_size, "batch size", low=1, high=4096)
        check_integer(self.patch_size, "patch size", low=1, high=2**20)
        check_number(self.attacked_fraction, "attacked fraction", low=0.0, high=1.0)
        check_integer(self.attacker_every, "attacker_every", low=1, high=1_000_000)
        check_integer(self.warmup_steps, "warm-up steps", low=0, high=100_000_000)
        if self.steps + self.warmup_steps < 1:
            raise InvalidInputError("Give at least one step (steps or warm-up steps).")
        check_number(self.learning_rate, "learning rate", low=0.0, high=10.0, low_open=True)
        check_number(self.dice_weight, "Dice weight", low=0.0, high=1e6)
        check_number(self.foreground_fraction, "foreground fraction", low=0.0, high=1.0)
        check_integer(self.monitor_every, "monitor_every", low=1)
        check_integer(self.checkpoint_every, "checkpoint_every", low=1)
        check_integer(self.seed, "seed", low=0, high=2**32 - 1)
        check_augmentation(self.augment, self.domain_augment)
        if not isinstance(self.device, str):
            raise InvalidInputError(f"device must be a name such as 'auto', got {self.device!r}.")
        if self.attacked_fraction == 0 and self.warmup_steps:
            raise InvalidInputError(
                "Warm-up steps train the attacker, and a clean fine-tuning run (attacked "
                "fraction 0) trains none; set the warm-up steps to 0."
            )

    @property
    def trains_attacker(self) -> bool:
        """False for a clean fine-tuning control run (attacked fraction 0)."""
        return self.attacked_fraction > 0

    @property
    def total_steps(self) -> int:
        """Warm-up plus f_seg steps."""
        return self.warmup_steps + self.steps

    def attacker_steps(self, upto: int | None = None) -> int:
        """How many attacker steps the schedule runs in its first ``upto`` steps (all)."""
        if not self.trains_attacker:
            return 0
        upto = self.total_steps if upto is None else upto
        warm = min(upto, self.warmup_steps)
        seg_steps = upto - warm
        return warm + (seg_steps + self.attacker_every - 1) // self.attacker_every

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardenConfig:
        """The settings a checkpoint records (unknown entries ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


RESUME_FREE = ("steps", "monitor_every", "checkpoint_every", "device", "workers")
"""Settings a resumed run may change."""
