"""Training dock widget: a U-Net, an attacker or a hardening run, in a worker, with a loss plot.

The backend's trainer is an iterator of typed events. On the GUI thread the widget only reads
its controls and layers into a request (cheap checks fail there, as notifications); a generator
worker then loads the model, builds the trainer (which refuses a folder holding a checkpoint
unless Resume or Overwrite is ticked) and runs it, yielding each event to the GUI thread. There
each event costs microseconds: losses go into the plot's arrays, the progress bar (napari's
activity dock) follows every :data:`~napari_advseg._napari.loss_plot.REDRAW_MS`, and the plot
is drawn in a background thread. The scans are the CT image and labels layers chosen (several,
with *Add scan*) or a dataset folder (nnU-Net v2 or Decathlon), read in the worker. The *Model
spec* editor says how the model to attack is fed (a TorchScript or ``.pt2`` file needs one; a
checkpoint carries its own), or, for a U-Net, how the new one is fed. Stop asks the trainer to
end after the current step; it then saves its last checkpoint and finishes normally. A finished
checkpoint joins the session's :data:`~napari_advseg._napari.model_registry.REGISTRY`, so the
explorer (and the "Model to attack" field) offer it at once; a hardened model joins it with its
attacker (``OUT/attacker``). The model fields also offer the shipped models.

*Harden a model* fine-tunes the model to attack (which is never changed: a copy is trained) on
labelled scans, taken and split as a U-Net's, against an attacker trained alongside (see
:mod:`napari_advseg.training.harden_trainer`); its own settings are in
:class:`~napari_advseg._napari.harden_form.HardenForm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QStringListModel, Qt, QThreadPool, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QCompleter,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import AdvsegError, InvalidInputError
from ..nets.attacker import AttackerConfig
from ..training.attack_trainer import AttackTrainingConfig
from ..training.device import DEVICE_CHOICES, select_device
from ..training.events import (
    AttackProgress,
    StepCompleted,
    TrainingFinished,
    TrainingStarted,
    ValidationCompleted,
)
from ..training.harden_trainer import ATTACKER_DIR
from ..training.seg_trainer import SegTrainingConfig
from .harden_form import HardenForm
from .layer_choice import LayerChoice
from .loss_figure import ATTACKER_LAYOUT, HARDEN_LAYOUT, UNET_LAYOUT
from .loss_plot import REDRAW_MS, LossPlot
from .model_registry import REGISTRY
from .spec_editor import PathField, SpecEditor, widget_words
from .training_run import (
    AttackRequest,
    HardenRequest,
    LayerScan,
    SegRequest,
    Trainer,
    TrainerReady,
    TrainingFailed,
    TrainingRequest,
    build_trainer,
    run_training,
)

if TYPE_CHECKING:
    import napari

KINDS = ("U-Net (segmentation)", "Attacker (D and V)", "Harden a model")
SHIPPED_MODEL = "shipped U-Net, or a checkpoint folder / TorchScript file"
"""Placeholder of the "Model to attack" field: left empty, the shipped U-Net is attacked."""

_FLAGS = {"--resume": "Resume", "--overwrite": "Overwrite"}
"""The command line's words in the backend's messages, and this widget's check boxes."""


def widget_message(error: BaseException | str) -> str:
    """An error as one line for a notification, naming this widget's controls, not CLI flags."""
    message = error if isinstance(error, str) else str(error)
    if not isinstance(error, str | AdvsegError):
        message = f"{type(error).__name__}: {error}"
    for flag, box in _FLAGS.items():
        message = message.replace(flag, box)
    return widget_words(message)


def _weight_box(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(4)
    box.setRange(0.0, 100.0)
    box.setSingleStep(0.01)
    box.setValue(value)
    return box


def _scan_text(image: str, labels: str) -> str:
    return f"{image} + {labels}" if labels else f"{image} (no labels)"


class TrainingWidget(QWidget):
    """Train f_seg, or an attacker, or harden f_seg: on layers or a dataset folder."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.worker: GeneratorWorker | None = None
        self.trainer: Trainer | None = None
        self.bar: progress | None = None
        self.last_event: Any = None
        self.split_note = ""
        self._kind = "segmentation"
        self._step = 0
        self._stop_asked = False

        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        self.choice = LayerChoice(viewer)
        self.image_box = self.choice.image_box
        self.labels_box = self.choice.labels_box
        self.scan_list = QListWidget()
        self.scan_list.setMaximumHeight(80)
        self.scan_list.setToolTip(
            "Train on these scans; with none listed, on the CT image and labels chosen above."
        )
        self.add_scan_button = QPushButton("Add scan")
        self.add_scan_button.setToolTip("List the CT image and labels chosen above")
        self.remove_scan_button = QPushButton("Remove")
        self.remove_scan_button.setToolTip("Take the selected scan off the list")
        self.dataset = PathField("or a dataset folder (nnU-Net v2 / Decathlon)", folder=True)
        self.dataset.setToolTip(
            "A folder with imagesTr, labelsTr and dataset.json; it replaces the layers. An "
            "attacker trains on its training split, a U-Net validates on whole cases."
        )
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
        self.seg_path = QComboBox()
        self.seg_path.setEditable(True)
        self.seg_path.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.seg_path.lineEdit().setPlaceholderText(SHIPPED_MODEL)
        self.seg_path.setToolTip(
            "Empty: the shipped U-Net. Or a checkpoint folder, an nnU-Net results folder "
            "(DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__2d, or its fold_N for that fold), a "
            "TorchScript or .pt2 file; U-Nets trained in this session are listed."
        )
        self.spec_editor = SpecEditor()
        self.spec_editor.setToolTip(
            "How the model to attack is fed (a TorchScript or .pt2 file needs it; a checkpoint "
            "carries its own). For a U-Net, ticked: how the new U-Net is fed."
        )
        self.init_from = PathField("optional: an attacker checkpoint folder", folder=True)
        self.init_from.setToolTip(
            "Start from this attacker's weights (fine-tune it against the model to attack); "
            "type part of a name to pick a shipped attacker or one trained in this session"
        )
        self.attacker_choices = QStringListModel(self)
        completer = QCompleter(self.attacker_choices, self)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.init_from.line.setCompleter(completer)
        self.harden_form = HardenForm()
        self.device = QComboBox()
        self.device.addItems(list(DEVICE_CHOICES))
        self.out = QLineEdit(str(Path.home() / "advseg_runs" / "model"))
        self.resume = QCheckBox("Resume")
        self.resume.setToolTip("Continue the checkpoint in the folder.")
        self.overwrite = QCheckBox("Overwrite")
        self.overwrite.setToolTip(
            "Replace the checkpoint in the folder (other files in it are kept)."
        )
        self.resume.toggled.connect(lambda on: on and self.overwrite.setChecked(False))
        self.overwrite.toggled.connect(lambda on: on and self.resume.setChecked(False))
        self.start_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.status = QLabel(f"Device: {select_device('auto')} (auto)")
        self.status.setWordWrap(True)
        self.plot = LossPlot(viewer)
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(REDRAW_MS)
        self._flush_timer.timeout.connect(self._flush)

        existing = QHBoxLayout()
        existing.addWidget(self.resume)
        existing.addWidget(self.overwrite)
        form = QFormLayout()
        form.addRow("Train", self.kind)
        form.addRow("CT image", self.image_box)
        form.addRow("Labels (U-Net, harden)", self.labels_box)
        scan_buttons = QHBoxLayout()
        scan_buttons.addWidget(self.add_scan_button)
        scan_buttons.addWidget(self.remove_scan_button)
        form.addRow("Scans", scan_buttons)
        form.addRow("", self.scan_list)
        form.addRow("Dataset folder", self.dataset)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch)
        form.addRow("xi (attacker)", self.xi)
        form.addRow("Mode (attacker)", self.mode)
        form.addRow("lambda_D (attacker)", self.lambda_d)
        form.addRow("lambda_V (attacker)", self.lambda_v)
        form.addRow("z_D dimensions", self.latent_d)
        form.addRow("z_V dimensions", self.latent_v)
        form.addRow("Model to attack", self.seg_path)
        form.addRow("Model spec", self.spec_editor)
        form.addRow("Start from attacker", self.init_from)
        form.addRow(self.harden_form)
        form.addRow("Device", self.device)
        form.addRow("Checkpoint folder", self.out)
        form.addRow("If it holds one", existing)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, stretch=1)
        self._model_label = form.labelForField(self.seg_path)
        self.controls = [
            self.kind,
            self.image_box,
            self.labels_box,
            self.scan_list,
            self.add_scan_button,
            self.remove_scan_button,
            self.dataset,
            self.steps,
            self.batch,
            self.xi,
            self.mode,
            self.lambda_d,
            self.lambda_v,
            self.latent_d,
            self.latent_v,
            self.seg_path,
            self.spec_editor,
            self.init_from,
            self.harden_form,
            self.device,
            self.out,
            self.resume,
            self.overwrite,
            self.start_button,
        ]
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.add_scan_button.clicked.connect(self.add_scan)
        self.remove_scan_button.clicked.connect(self.remove_scan)
        viewer.layers.events.removed.connect(self._layer_removed)
        self.kind.currentTextChanged.connect(self._kind_changed)
        self._kind_changed(self.kind.currentText())
        self.seg_path.currentTextChanged.connect(self.spec_editor.show_model)
        self.spec_editor.show_model(self.seg_path.currentText())
        REGISTRY.events.changed.connect(self.refresh_models)
        self.refresh_models()
        self._set_running(False)
        application = QApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shut_down)

    def refresh_models(self, *_: object) -> None:
        """Offer the shipped models and those trained in this session, keeping what is typed."""
        current = self.seg_path.currentText()
        self.seg_path.blockSignals(True)
        self.seg_path.clear()
        self.seg_path.addItems([""] + [str(f) for f in REGISTRY.choices("segmentation")])
        self.seg_path.setCurrentText(current)
        self.seg_path.blockSignals(False)
        self.attacker_choices.setStringList([str(f) for f in REGISTRY.choices("attacker")])

    def _kind_changed(self, kind: str) -> None:
        """Show the hardening settings in *Harden a model* mode only."""
        harden = kind == KINDS[2]
        self.harden_form.setVisible(harden)
        self._model_label.setText("Model to harden" if harden else "Model to attack")

    def _set_running(self, running: bool) -> None:
        for control in self.controls:
            control.setEnabled(not running)
        self.stop_button.setEnabled(running)

    # -- scans ----------------------------------------------------------------------------
    def add_scan(self) -> None:
        """List the CT image and labels chosen in the boxes (again: its labels are replaced)."""
        image, labels = self.image_box.currentText(), self.labels_box.currentText()
        if not image:
            show_error("Open a CT volume first (File > Open, or File > Open Sample).")
            return
        for row in range(self.scan_list.count()):
            if self.scan_list.item(row).data(Qt.ItemDataRole.UserRole)[0] == image:
                self.scan_list.takeItem(row)
                break
        item = QListWidgetItem(_scan_text(image, labels))
        item.setData(Qt.ItemDataRole.UserRole, (image, labels))
        self.scan_list.addItem(item)

    def remove_scan(self) -> None:
        """Take the selected scan off the list."""
        row = self.scan_list.currentRow()
        if row >= 0:
            self.scan_list.takeItem(row)

    def listed_scans(self) -> list[tuple[str, str]]:
        """The listed (image layer, labels layer) names; "" for no labels."""
        items = (self.scan_list.item(row) for row in range(self.scan_list.count()))
        return [tuple(item.data(Qt.ItemDataRole.UserRole)) for item in items]

    def _layer_removed(self, event: Any) -> None:
        """A listed layer was removed: drop its scan from the list (or its labels)."""
        name = event.value.name
        for row in reversed(range(self.scan_list.count())):
            item = self.scan_list.item(row)
            image, labels = item.data(Qt.ItemDataRole.UserRole)
            if image == name:
                self.scan_list.takeItem(row)
            elif labels == name:
                item.setData(Qt.ItemDataRole.UserRole, (image, ""))
                item.setText(_scan_text(image, ""))

    def layer_scans(
        self, need_labels: bool, purpose: str = "train a U-Net"
    ) -> tuple[LayerScan, ...]:
        """The listed scans (else the boxes' choice) read from their layers (raises on bad input).

        Label values are checked in the worker, against the labels of the model. ``purpose``
        ends the message of a scan without the labels it needs.
        """
        pairs = self.listed_scans() or [
            (self.image_box.currentText(), self.labels_box.currentText())
        ]
        scans = []
        for image_name, labels_name in pairs:
            scan = self.choice.scan(image_name, labels_name)
            if need_labels and scan.labels is None:
                raise InvalidInputError(
                    f"{scan.name}: no label volume; choose its labels layer to {purpose}."
                )
            scans.append(scan)
        return tuple(scans)

    def _dataset(self) -> Path | None:
        folder = self.dataset.path()
        if folder is not None and not folder.is_dir():
            raise InvalidInputError(f"{folder}: no such dataset folder.")
        return folder

    def request(self) -> TrainingRequest:
        """The current settings and layers, read on the GUI thread (raises on bad input).

        A dataset folder is only named here; the worker reads it.
        """
        out = Path(self.out.text()).expanduser()
        device = self.device.currentText()
        steps = self.steps.value()
        existing = {"resume": self.resume.isChecked(), "overwrite": self.overwrite.isChecked()}
        kind = self.kind.currentText()
        unet, harden = kind == KINDS[0], kind == KINDS[2]
        dataset = self._dataset()
        if dataset is not None:
            scans: tuple[LayerScan, ...] = ()
        else:
            purpose = "harden a model" if harden else "train a U-Net"
            scans = self.layer_scans(need_labels=unet or harden, purpose=purpose)
        spec = self.spec_editor.given()
        if unet:
            epochs = max(1, min(10, steps // 50))  # validate (and keep the best) up to 10 times
            config = SegTrainingConfig(
                epochs=epochs,
                steps_per_epoch=-(-steps // epochs),
                batch_size=self.batch.value(),
                device=device,
            )
            return SegRequest(scans, out, config, **existing, dataset=dataset, spec=spec)
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
        seg_path = self.seg_path.currentText().strip()
        seg = Path(seg_path).expanduser() if seg_path else None
        init_from = self.init_from.path()
        if init_from is not None and existing["resume"]:
            raise InvalidInputError(
                "Start from attacker begins a new run; leave it empty to Resume this one."
            )
        request = AttackRequest(
            scans,
            out,
            config,
            attacker,
            seg,
            **existing,
            dataset=dataset,
            spec=spec,
            init_from=init_from,
        )
        return self.harden_form.request(request) if harden else request

    def make_trainer(self) -> Trainer:
        """The backend trainer for the current settings, built here (raises on bad input)."""
        ready = build_trainer(self.request())
        self.split_note = ready.note
        return ready.trainer

    def start(self) -> None:
        """Start training: check the settings here, then build and run the trainer in a worker."""
        try:
            request = self.request()
        except AdvsegError as error:
            show_error(widget_message(error))
            return
        self._kind = {SegRequest: "segmentation", AttackRequest: "attacker"}.get(
            type(request), "harden"
        )
        self.trainer = None
        self.last_event = None
        self.split_note = ""
        self._step = 0
        self._stop_asked = False
        if isinstance(request, AttackRequest):
            self.plot.reset(ATTACKER_LAYOUT, {"masked_xent": request.config.xi})
        elif isinstance(request, HardenRequest):
            self.plot.reset(HARDEN_LAYOUT, {"attacker_masked_xent": request.attack.xi})
        else:
            self.plot.reset(UNET_LAYOUT)
        self.status.setText("Preparing: loading the data and the models...")
        self.worker = create_worker(
            run_training,
            request,
            _start_thread=False,
            _connect={
                "yielded": self.on_event,
                "errored": self.on_error,
                "finished": self.on_finished,
            },
        )
        self._set_running(True)
        self._flush_timer.start()
        self.worker.start()

    def stop(self) -> None:
        """End training after the current step; the trainer saves its last checkpoint."""
        if self.worker is None:
            return
        self._stop_asked = True
        if self.trainer is not None:
            self.trainer.stop()
        self.status.setText("Stopping after this step...")

    def shut_down(self, wait_ms: int = 120_000) -> None:
        """The application quits: stop a run after its step, let it save, wait for the worker.

        A worker still running when Qt deletes its signals' objects would abort the process, and
        the run would lose the steps since its last checkpoint.
        """
        if self.trainer is not None:
            self.trainer.stop()
        QThreadPool.globalInstance().waitForDone(wait_ms)

    def on_event(self, event: Any) -> None:
        """GUI thread: take one event from the worker (cheap; drawing is throttled)."""
        if isinstance(event, TrainerReady):
            self.trainer = event.trainer
            self.split_note = event.note
            if self._stop_asked:
                self.trainer.stop()
            return
        if isinstance(event, TrainingFailed):
            what = "Training failed" if event.started else "Could not start training"
            message = f"{what}: {widget_message(event.message)}"
            show_error(message)
            self.status.setText(message)
            return
        self.last_event = event
        if isinstance(event, TrainingStarted):
            self.bar = progress(total=event.total_steps, desc="advseg training")
            self.bar.update(event.start_step)
            self._step = event.start_step
            self.status.setText(
                f"Training on {event.device}, {event.num_parameters:,} parameters; "
                + self.split_note
            )
        elif isinstance(event, StepCompleted):
            self._step = event.step
            self.plot.append(event.losses, event.step)
        elif isinstance(event, ValidationCompleted):
            self.status.setText(
                f"Step {event.step}: validation mean Dice {event.mean_dice:.3f}"
                + (" (best so far)" if event.is_best else "")
                + f"; {self.split_note}"
            )
        elif isinstance(event, AttackProgress):
            drops = ", ".join(f"{k} {v:.0f}%" for k, v in event.dice_drop.items() if v is not None)
            self.status.setText(f"Step {event.step}: Dice drop {drops}; p {event.p:.3f}")
        elif isinstance(event, TrainingFinished):
            self.finish(event)

    def finish(self, event: TrainingFinished) -> None:
        """GUI thread: the run ended; report it and offer its checkpoint to the explorer."""
        self._flush()
        self.plot.request_draw(now=True)
        reason = getattr(event, "reason", None)
        state = "Stopped" if event.stopped else "Finished"
        folder = event.best_path or event.last_path
        what = "hardened model" if self._kind == "harden" else "checkpoint"
        where = f"{what}: {folder}" if folder is not None else "no checkpoint saved"
        if reason:
            show_warning(f"{state} at step {event.step}: {reason}")
            self.status.setText(f"{state} at step {event.step}: {reason}")
        else:
            show_info(f"{state} at step {event.step}; {where}")
            self.status.setText(f"{state} at step {event.step}; {where}")
        if folder is None or not Path(folder).is_dir():
            return
        if self._kind != "harden":
            REGISTRY.add(Path(folder), self._kind)
            return
        REGISTRY.add(Path(folder), "segmentation")  # the hardened model, and its attacker
        if (Path(folder) / ATTACKER_DIR).is_dir():
            REGISTRY.add(Path(folder) / ATTACKER_DIR, "attacker")

    def _flush(self) -> None:
        """Bring the progress bar up to the last step seen (throttled with the plot)."""
        if self.bar is not None and self._step > self.bar.n:
            self.bar.update(self._step - self.bar.n)

    def on_error(self, error: Exception) -> None:
        """GUI thread: an unexpected error (a bug) ended the worker.

        napari already shows it as a notification with its traceback; user-caused errors
        arrive as :class:`TrainingFailed` events instead.
        """
        self.status.setText(f"Training failed: {widget_message(error)}")

    def on_finished(self) -> None:
        """GUI thread: close the progress bar and re-enable the controls."""
        self._flush_timer.stop()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.worker = None
        self._set_running(False)
