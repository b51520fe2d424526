"""The training widget's *Harden a model* settings, and the request they make.

The rows the other modes share (steps, batch size, xi, the attacker's mode, lambdas and
latents, the model, its spec, *Start from attacker*, device, folder) stay in the widget's form;
this group holds what only hardening has: the patch size (also the attacker's crop), the share
of attacked patches, how often the attacker steps, the warm-up, the model's learning rate and
the attacker's batch. Reading it is cheap and happens on the GUI thread; the settings' own
checks raise one-line errors there. What depends on the model (the patch size against its input
multiple and the attacker's stride) is checked by the trainer, in the worker.
"""

from __future__ import annotations

import dataclasses

from qtpy.QtWidgets import QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox

from ..training.attack_settings import AttackTrainingConfig
from ..training.harden_settings import HardenConfig
from .training_run import AttackRequest, HardenRequest

MAX_PATCH, MAX_STEPS, MAX_BATCH = 1024, 1_000_000, 256
"""The fields' ranges (the command line's patch side; the widget's steps and batch)."""


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _real(low: float, high: float, value: float, step: float, decimals: int) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class HardenForm(QGroupBox):
    """The settings only a hardening run has (shown in *Harden a model* mode only)."""

    def __init__(self) -> None:
        super().__init__("Hardening")
        defaults = HardenConfig()
        self.patch_size = _spin(16, MAX_PATCH, defaults.patch_size, 16)
        self.patch_size.setToolTip(
            "Side of the model's patches and of the attacker's crops (pixels): a multiple of "
            "the model's input multiple and the attacker's stride"
        )
        self.attacked_fraction = _real(0.0, 1.0, defaults.attacked_fraction, 0.05, 2)
        self.attacked_fraction.setToolTip(
            "Share of each model batch replaced by attacked patches (labels moved by D); 0: "
            "clean fine-tuning with no attacker, the control of a hardening"
        )
        self.attacker_every = _spin(1, MAX_STEPS, defaults.attacker_every)
        self.attacker_every.setToolTip("One attacker step before every N-th model step")
        self.warmup = _spin(0, MAX_STEPS, defaults.warmup_steps)
        self.warmup.setToolTip(
            "Attacker-only steps before the model's first update (about 100 for a fresh "
            "attacker; 0 when it starts from one that breaks the model)"
        )
        self.learning_rate = _real(1e-6, 1.0, defaults.learning_rate, 1e-5, 6)
        self.learning_rate.setToolTip("Adam's (constant) learning rate for the model")
        self.attack_batch = _spin(1, MAX_BATCH, AttackTrainingConfig().batch_size)
        self.attack_batch.setToolTip("Crops per attacker update")
        form = QFormLayout(self)
        form.addRow("Patch size", self.patch_size)
        form.addRow("Attacked fraction", self.attacked_fraction)
        form.addRow("Attacker every N steps", self.attacker_every)
        form.addRow("Warm-up steps", self.warmup)
        form.addRow("Model learning rate", self.learning_rate)
        form.addRow("Attacker batch", self.attack_batch)

    def request(self, shared: AttackRequest) -> HardenRequest:
        """The hardening request of these settings and the widget's shared ones.

        ``shared`` is what the widget's rows ask for an attacker: its scans, model, folder,
        architecture and settings; its steps and batch size become the model's, and the
        attacker's schedule (steps, batch, crop) follows from this form, as ``advseg harden``
        builds it.

        Raises
        ------
        InvalidInputError
            For settings out of range (one line).
        """
        config = HardenConfig(
            steps=shared.config.steps,
            batch_size=shared.config.batch_size,
            patch_size=self.patch_size.value(),
            attacked_fraction=self.attacked_fraction.value(),
            attacker_every=self.attacker_every.value(),
            warmup_steps=self.warmup.value(),
            learning_rate=self.learning_rate.value(),
            device=shared.config.device,
        )
        attack = dataclasses.replace(
            shared.config,
            steps=max(1, config.attacker_steps()),
            batch_size=self.attack_batch.value(),
            crop_size=config.patch_size,
        )
        return HardenRequest(
            shared.scans,
            shared.out_dir,
            config,
            attack,
            shared.attacker,
            shared.seg_path,
            resume=shared.resume,
            overwrite=shared.overwrite,
            dataset=shared.dataset,
            spec=shared.spec,
            init_from=shared.init_from,
        )
