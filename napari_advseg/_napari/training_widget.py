"""Training dock widget: the U-Net or an attacker, in a napari worker, with a live loss plot.

The backend's trainer is an iterator of typed events; a generator worker runs it in a thread and
yields each event to the main thread, which updates the progress bar (napari's activity dock),
the plot and the status line. Stop asks the trainer to end after the current step; it then saves
its last checkpoint and finishes normally.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..data.splits import hold_out_slab
from ..errors import AdvsegError
from ..nets.attacker import AttackerConfig
from ..segmentation import load_segmentation_model
from ..training.attack_trainer import AttackTrainer, AttackTrainingConfig
from ..training.device import DEVICE_CHOICES, select_device
from ..training.events import AttackProgress, StepCompleted, TrainingFinished, TrainingStarted
from ..training.seg_trainer import SegTrainer, SegTrainingConfig
from .layer_choice import LayerChoice

if TYPE_CHECKING:
    import napari

KINDS = ("U-Net (segmentation)", "Attacker (D and V)")
PLOT_EVERY = 5
"""Redraw the loss plot every this many steps."""


def _weight_box(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(4)
    box.setRange(0.0, 100.0)
    box.setSingleStep(0.01)
    box.setValue(value)
    return box


class TrainingWidget(QWidget):
    """Train f_seg on the image and labels layers, or an attacker on the image layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.worker: GeneratorWorker | None = None
        self.trainer: SegTrainer | AttackTrainer | None = None
        self.bar: progress | None = None
        self.history: dict[str, list[float]] = {}
        self.last_event: Any = None
        self.split_note = ""

        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        self.choice = LayerChoice(viewer)
        self.image_box = self.choice.image_box
        self.labels_box = self.choice.labels_box
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setValue(500)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(8)
        self.xi = QDoubleSpinBox()
        self.xi.setRange(0.0, 10.0)
        self.xi.setSingleStep(0.5)
        self.xi.setValue(2.0)
        self.mode = QComboBox()
        self.mode.addItems(["dv", "d", "v"])
        defaults = AttackTrainingConfig()
        self.lambda_d = _weight_box(defaults.lambda_d)
        self.lambda_v = _weight_box(defaults.lambda_v)
        architecture = AttackerConfig()
        self.latent_d = QSpinBox()
        self.latent_v = QSpinBox()
        for box, size in (
            (self.latent_d, architecture.latent_dim_d),
            (self.latent_v, architecture.latent_dim_v),
        ):
            box.setRange(1, 64)
            box.setValue(size)
        self.seg_path = QLineEdit()
        self.seg_path.setPlaceholderText("shipped U-Net, or a checkpoint folder / TorchScript file")
        self.device = QComboBox()
        self.device.addItems(list(DEVICE_CHOICES))
        self.out = QLineEdit(str(Path.home() / "advseg_runs" / "model"))
        self.start_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.status = QLabel(f"Device: {select_device('auto')} (auto)")
        self.figure = Figure(figsize=(4, 2.5), tight_layout=True)
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)

        form = QFormLayout()
        form.addRow("Train", self.kind)
        form.addRow("CT image", self.image_box)
        form.addRow("Labels (U-Net)", self.labels_box)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch)
        form.addRow("xi (attacker)", self.xi)
        form.addRow("Mode (attacker)", self.mode)
        form.addRow("lambda_D (attacker)", self.lambda_d)
        form.addRow("lambda_V (attacker)", self.lambda_v)
        form.addRow("z_D dimensions", self.latent_d)
        form.addRow("z_V dimensions", self.latent_v)
        form.addRow("Model to attack", self.seg_path)
        form.addRow("Device", self.device)
        form.addRow("Checkpoint folder", self.out)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.canvas)
        self.controls = [
            self.kind,
            self.image_box,
            self.labels_box,
            self.steps,
            self.batch,
            self.xi,
            self.mode,
            self.lambda_d,
            self.lambda_v,
            self.latent_d,
            self.latent_v,
            self.seg_path,
            self.device,
            self.out,
            self.start_button,
        ]
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        for control in self.controls:
            control.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def make_trainer(self) -> SegTrainer | AttackTrainer:
        """The backend trainer for the current settings (raises on bad input)."""
        volume = self.choice.volume()
        out = Path(self.out.text()).expanduser()
        device = self.device.currentText()
        select_device(device)
        steps = self.steps.value()
        if self.kind.currentText() == KINDS[0]:
            train, val = hold_out_slab(volume)
            epochs = max(1, min(10, steps // 50))  # validate (and keep the best) up to 10 times
            config = SegTrainingConfig(
                epochs=epochs,
                steps_per_epoch=-(-steps // epochs),
                batch_size=self.batch.value(),
                device=device,
            )
            self.split_note = (
                f"validation: {val[0].name}" if val else "too few labelled slices to validate"
            )
            return SegTrainer(out, train, val, config=config)
        config = AttackTrainingConfig(
            xi=self.xi.value(),
            lambda_d=self.lambda_d.value(),
            lambda_v=self.lambda_v.value(),
            steps=steps,
            batch_size=self.batch.value(),
            device=device,
        )
        attacker = AttackerConfig(
            self.latent_d.value(), self.latent_v.value(), mode=self.mode.currentText()
        )
        seg_path = self.seg_path.text().strip()
        seg = load_segmentation_model(Path(seg_path).expanduser() if seg_path else None)
        self.split_note = f"attacking {seg.name}"
        return AttackTrainer(out, seg, [volume], attacker, config=config)

    def start(self) -> None:
        """Start training in a worker thread."""
        try:
            self.trainer = self.make_trainer()
        except AdvsegError as error:
            show_error(str(error))
            return
        self.history = {}
        self.last_event = None
        self.worker = create_worker(self.trainer.run, _start_thread=False)
        self.worker.yielded.connect(self.on_event)
        self.worker.errored.connect(self.on_error)
        self.worker.finished.connect(self.on_finished)
        self._set_running(True)
        self.worker.start()

    def stop(self) -> None:
        """End training after the current step; the trainer saves its last checkpoint."""
        if self.trainer is not None:
            self.trainer.stop()
            self.status.setText("Stopping after this step...")

    def on_event(self, event: Any) -> None:
        """Main thread: show one training event."""
        self.last_event = event
        if isinstance(event, TrainingStarted):
            self.bar = progress(total=event.total_steps, desc="advseg training")
            self.bar.update(event.start_step)
            self.status.setText(
                f"Training on {event.device}, {event.num_parameters:,} parameters; "
                + self.split_note
            )
        elif isinstance(event, StepCompleted):
            for name, value in event.losses.items():
                self.history.setdefault(name, []).append(value)
            if self.bar is not None:
                self.bar.update(1)
            if event.step % PLOT_EVERY == 0 or event.step == event.total_steps:
                self.draw()
        elif isinstance(event, AttackProgress):
            drops = ", ".join(f"{k} {v:.0f}%" for k, v in event.dice_drop.items() if v is not None)
            self.status.setText(f"Step {event.step}: Dice drop {drops}; p {event.p:.3f}")
        elif isinstance(event, TrainingFinished):
            self.draw()
            state = "Stopped" if event.stopped else "Finished"
            show_info(f"{state} at step {event.step}; checkpoint: {event.last_path}")
            self.status.setText(f"{state} at step {event.step}: {event.last_path}")

    def draw(self) -> None:
        """Redraw every loss term (and the critic's Wasserstein estimate) against the step."""
        self.axes.clear()
        for name, values in self.history.items():
            self.axes.plot(np.arange(1, len(values) + 1), values, label=name, linewidth=1)
        self.axes.set_xlabel("step")
        self.axes.legend(fontsize="x-small", ncol=2)
        self.canvas.draw_idle()

    def on_error(self, error: Exception) -> None:
        """Main thread: a failed run becomes a notification, never a traceback."""
        message = (
            str(error) if isinstance(error, AdvsegError) else f"{type(error).__name__}: {error}"
        )
        show_error(f"Training failed: {message}")

    def on_finished(self) -> None:
        """Main thread: re-enable the controls."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.worker = None
        self._set_running(False)
