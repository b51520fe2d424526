"""The settings of an attacker training run, and which of them a resumed run must keep."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import CheckpointError, InvalidInputError
from ..nets.attacker import AttackerConfig
from ..nets.critic import CriticConfig
from ..segmentation import SegmentationModel
from ..validation import check_integer, check_number
from . import losses
from .precision import check_precision


@dataclass(frozen=True)
class AttackTrainingConfig:
    """Settings of an attacker training run (defaults: the paper where it says, ours elsewhere).

    Attributes
    ----------
    xi
        Target masked cross-entropy of eq. 4, nats per organ pixel.
    reference
        ``"warped"`` (anatomy-consistent: S0 warped by D) or ``"original"`` (eq. 4 literally).
    eq5
        The form of eq. 5 (:data:`losses.EQ5_FORMS`, :func:`losses.eq5_reference`): ``"hard"``
        (default) cross-entropy against the one-hot of S0's labels moved by D as labels are;
        ``"kl"`` KL(S0 warped || S_DV); ``"soft"`` cross-entropy against S0's warped
        probabilities, which D can lower-bound by blurring them (their entropy counts towards
        xi). A config recorded without this entry was trained with ``"soft"`` and reads so
        (:data:`LEGACY_SETTINGS`).
    lambda_d, lambda_v
        Weights of eq. 2 (paper: 0.1 and 0.01).
    kl_weight
        Weight of KL(q(z|I0) || N(0, I)); 0 is the paper-exact eq. 6.
    diversity_weight, diversity_cap_d, diversity_cap_v
        Our option (0: off, the paper): reward the decoders for giving different D and V to
        different latent draws (:func:`losses.diversity`), capped at ``cap_d`` pixels and
        ``cap_v`` intensity units per unit of z.
    per_organ
        Our option: eq. 4 with one target per organ (:func:`losses.organ_xi_loss`) instead of
        one for the mask of all organs (the paper, default).
    learning_rate, rmsprop_alpha, rmsprop_eps
        RMSProp for generator and critic (paper: 1e-4, decay 0.9, eps 1e-10).
    critic_steps
        Critic updates per generator update (WGAN: 5).
    clip
        Critic weight clipping bound (WGAN: 0.01); used when ``gradient_penalty`` is 0.
    gradient_penalty
        Weight of the WGAN-GP penalty instead of clipping (0: clipping).
    steps, batch_size, crop_size
        Generator steps, slices per batch, square crop of the model-grid slices (pixels).
    monitor_every, checkpoint_every
        Steps between progress measurements and between checkpoints.
    """

    xi: float = 2.0
    reference: str = "warped"
    eq5: str = "hard"
    lambda_d: float = 0.1
    lambda_v: float = 0.01
    kl_weight: float = 0.01
    diversity_weight: float = 0.0
    diversity_cap_d: float = 0.5
    diversity_cap_v: float = 0.05
    per_organ: bool = False
    learning_rate: float = 1e-4
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-10
    critic_steps: int = 5
    clip: float = 0.01
    gradient_penalty: float = 0.0
    steps: int = 1000
    batch_size: int = 8
    crop_size: int = 128
    monitor_every: int = 25
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not isinstance(self.channels_last, bool):
            raise InvalidInputError("channels_last must be True or False.")
        if self.reference not in losses.REFERENCES:
            raise InvalidInputError(f"reference must be one of {losses.REFERENCES}.")
        if self.eq5 not in losses.EQ5_FORMS:
            raise InvalidInputError(
                f"eq5 must be one of {', '.join(losses.EQ5_FORMS)}, got {self.eq5!r}."
            )
        check_number(self.xi, "xi", low=0.0, high=100.0)
        for name in ("lambda_d", "lambda_v", "kl_weight", "diversity_weight"):
            check_number(getattr(self, name), name, low=0.0, high=1e6)
        for name in ("diversity_cap_d", "diversity_cap_v"):
            check_number(getattr(self, name), name, low=0.0, high=1e6, low_open=True)
        check_number(self.learning_rate, "learning rate", low=0.0, high=10.0, low_open=True)
        check_number(self.rmsprop_alpha, "RMSProp alpha", low=0.0, high=1.0)
        check_number(self.rmsprop_eps, "RMSProp eps", low=0.0, high=1.0, low_open=True)
        check_integer(self.critic_steps, "critic steps", low=1, high=1000)
        check_number(self.clip, "critic weight clip", low=0.0, high=1e6, low_open=True)
        check_number(self.gradient_penalty, "gradient penalty", low=0.0, high=1e6)
        check_integer(self.steps, "steps", low=1, high=100_000_000)
        check_integer(self.batch_size, "batch size", low=1, high=4096)
        check_integer(self.crop_size, "crop size", low=1, high=2**20)
        check_integer(self.monitor_every, "monitor_every", low=1)
        check_integer(self.checkpoint_every, "checkpoint_every", low=1)
        check_integer(self.seed, "seed", low=0, high=2**32 - 1)
        if not isinstance(self.per_organ, bool):
            raise InvalidInputError("per_organ must be True or False.")
        if not isinstance(self.device, str):
            raise InvalidInputError(f"device must be a name such as 'auto', got {self.device!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackTrainingConfig:
        """The settings a checkpoint's ``attack`` entry records.

        An entry it lacks takes the value it had before the entry existed
        (:data:`LEGACY_SETTINGS`: ``eq5`` reads ``"soft"``), else the default; entries this
        version does not know are ignored.

        Raises
        ------
        InvalidInputError
            One line, for a value out of range or of an unknown form.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"Not attack training settings: {data!r}.")
        known = {f.name for f in fields(cls)}
        values = {**LEGACY_SETTINGS, **{k: v for k, v in data.items() if k in known}}
        return cls(**values)


LEGACY_SETTINGS: dict[str, Any] = {"eq5": "soft"}
"""What a recorded config without an entry was trained with, where that is not the default now.

Attackers trained before ``eq5`` existed used the soft cross-entropy; they load, resume and
are described as ``"soft"``, while new runs default to ``"hard"``.
"""

RESUME_FREE = (
    "steps",
    "monitor_every",
    "checkpoint_every",
    "device",
    "precision",
    "channels_last",
)
"""Settings a resumed run may change; all others must be those the checkpoint was trained with."""


def check_resumable(
    folder: str | os.PathLike[str],
    config: Mapping[str, Any],
    saved: tuple[AttackerConfig, CriticConfig | None],
    requested: tuple[AttackerConfig, CriticConfig, AttackTrainingConfig],
    seg_model: SegmentationModel,
) -> None:
    """Refuse, in one line, an attacker checkpoint that a run with ``requested`` cannot continue.

    Parameters
    ----------
    folder, config
        The checkpoint folder and its (checked) config.
    saved
        Its attacker and critic architectures.
    requested
        The attacker, critic and settings of the run that would continue it.
    seg_model
        The f_seg of that run; it must be the one the checkpoint was trained against.
    """
    attacker, critic = saved
    if "resume" not in config.get("training", {}) or critic is None:
        raise CheckpointError(
            f"{folder}: an exported attacker without critic and optimizer state; it cannot "
            "be resumed. Train into a new folder."
        )
    differences = []
    if attacker != requested[0]:
        differences.append(f"attacker {attacker} -> {requested[0]}")
    if critic != requested[1]:
        differences.append(f"critic {critic} -> {requested[1]}")
    stored = {**LEGACY_SETTINGS, **config["attack"]}
    for name, value in requested[2].to_dict().items():
        if name not in RESUME_FREE and name in stored and stored[name] != value:
            differences.append(f"{name} {stored[name]!r} -> {value!r}")
    if differences:
        raise CheckpointError(
            f"{folder}: cannot resume with other settings ({'; '.join(differences)}); use "
            "the settings it was trained with (its config.json), or train into a new folder."
        )
    trained = config.get("target", {}).get("weights_sha256")
    actual = seg_model.config.get("weights_sha256")
    if trained and actual and trained != actual:
        raise CheckpointError(
            f"{folder}: was trained against {config['target'].get('name')!r}, not "
            f"{seg_model.name!r}; resume against the same segmentation model."
        )
