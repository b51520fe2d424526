"""Explorer dock widget: one slider per latent dimension, attacked slices as synchronized layers.

Thin by design. :class:`~napari_advseg._napari.explorer_state.ExplorerState` holds what the
explorer shows; the controls write into it and follow its events. Everything that computes runs
in napari workers: loading the models (*Start*), *All slices* and *Export* are jobs with a
progress bar in the activity dock and *Cancel*, one at a time; the attack of the slice on screen
for the sliders' latents runs in a latest-wins worker (while one runs, only the newest slider
values wait). The main thread only copies the returned planes into the layers
(:class:`~napari_advseg._napari.explorer_layers.ExplorerLayers`). Errors become notifications.

The *Model spec* editor beside the model field shows the checkpoint's own spec, or says how a
TorchScript or ``.pt2`` model is fed. An attacker trained against a model fed otherwise is
refused (one line in the status) unless *Use anyway* is ticked.

*Compare with* names a second model (e.g. the model hardened against this attacker): it is
loaded with the others (or on its own when chosen later), segments the same I_DV, and shows its
S0 and S_DV as two more layers and its row of Dice under each organ
(:mod:`napari_advseg.explorer_compare`). Emptying the field removes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from napari.layers import Image
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QThreadPool, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..errors import AdvsegError
from ..explorer import ExplorerSession, SliceAttack
from ..explorer_compare import ComparedModel
from ..explorer_volume import (
    EXPORTS,
    AttackedVolume,
    SlicePlanes,
    attacked_volume_bytes,
    plan_export,
)
from ..segmentation import default_model_path
from ..validation import check_memory
from .explorer_binding import Disconnect, FieldSetter, Follow, add_model, model_box, row
from .explorer_jobs import (
    COMPARE_STEPS,
    LOAD_STEPS,
    LatentRequest,
    LatestWins,
    Loaded,
    LoadedCompare,
    SliceRequest,
    attack_all_slices,
    compute_latents,
    compute_slice,
    describe,
    export_files,
    job_worker,
    load_compare,
    load_session,
)
from .explorer_layers import ExplorerLayers, viewer_grid
from .explorer_state import DEFAULT_ATTACKER, IDLE, ExplorerState
from .explorer_text import metrics_html
from .layer_choice import LayerChoice
from .layer_data import GRID_KEY
from .model_registry import REGISTRY, shipped_models
from .spec_editor import SpecEditor, widget_words

if TYPE_CHECKING:
    import napari

__all__ = ["ExplorerWidget", "metrics_html", "viewer_grid"]

SLIDER_STEPS = 100
"""Slider ticks per prior standard deviation; the range is +-3 standard deviations."""

LOADING, ALL_SLICES, EXPORTING = "loading models", "attacking all slices", "exporting"
COMPARING = "loading the model to compare with"
"""The jobs (:attr:`ExplorerState.job`); the last loads a second model after Start."""


def quantize(values: np.ndarray) -> tuple[float, ...]:
    """Latents as the sliders hold them: hundredths of a standard deviation, within +-3."""
    ticks = np.clip(np.round(np.asarray(values, np.float64) * SLIDER_STEPS), -300, 300)
    return tuple(float(t) / SLIDER_STEPS for t in ticks)


class ExplorerWidget(QWidget):
    """Pick a CT layer and an attacker, then move through the attacker's latent space."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = ExplorerState()
        self.session: ExplorerSession | None = None
        self.compare: LoadedCompare | None = None
        self.source: Image | None = None
        self.job: GeneratorWorker | None = None
        self.last_result: SliceAttack | None = None
        self.exported: list[Path] = []
        self.output = ExplorerLayers(viewer)
        self.sliders: list[QSlider] = []
        self._seed = 0
        self._loading_source: Image | None = None
        self._loading_volume: Any = None
        self._staging: Iterator[str] | None = None
        self._latents_at_start: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
        self.slice_runner = LatestWins(compute_slice, self)
        self.latent_runner = LatestWins(compute_latents, self)
        self._make_controls()
        self._lay_out()
        self._bind()
        for folder in REGISTRY.attackers:
            self._add_attacker(folder)
        for folder in [*shipped_models("segmentation"), *REGISTRY.segmentation]:
            self._add_seg_model(folder)
        REGISTRY.events.changed.connect(self._on_registry)
        self.destroyed.connect(Disconnect(self._on_registry))
        application = QApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shut_down)
        self.refresh_choices()
        self._update_enabled()

    # -- controls -------------------------------------------------------------------------
    def _make_controls(self) -> None:
        self.choice = LayerChoice(self.viewer, exclude=self.output.owned)
        self.image_box = self.choice.image_box
        self.labels_box = self.choice.labels_box
        self.seg_box = model_box(
            "shipped U-Net, or a checkpoint / nnU-Net folder, a file",
            "Empty: the shipped U-Net. Or a checkpoint folder, an nnU-Net results folder "
            "(DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__2d, or its fold_N for that fold), a "
            "TorchScript or .pt2 file. Models trained in this session are listed here.",
        )
        self.seg_path: QLineEdit = self.seg_box.lineEdit()
        self.compare_box = model_box(
            "none, or a second model's checkpoint / nnU-Net folder",
            "A second model (e.g. one hardened against this attacker) run on the same I_DV: its "
            "S0 and S_DV as two more layers, its Dice under each organ. Empty: none.",
            default_model_path(),
        )
        self.compare_path: QLineEdit = self.compare_box.lineEdit()
        self.spec_editor = SpecEditor()
        self.attacker_box = QComboBox()
        for folder in shipped_models("attacker"):
            self.attacker_box.addItem(folder.name, str(folder))
        self.attacker_path = QLineEdit()
        self.attacker_path.setPlaceholderText("or an attacker checkpoint folder")
        self.force_box = QCheckBox("Use anyway")
        self.force_box.setToolTip(
            "Explore an attacker trained against a model fed otherwise (other spacing, "
            "normalisation, labels or orientation); its fields will fit this model poorly"
        )
        self.start_button = QPushButton("Start exploring")
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Free the models (and their GPU memory)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (loading, all slices, export)")
        self.sample_button = QPushButton("Sample")
        self.reset_button = QPushButton("Posterior mean")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 3.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(self.state.temperature)
        self.use_d = QCheckBox("D (deformation)")
        self.use_v = QCheckBox("V (intensity)")
        self.use_d.setChecked(self.state.use_d)
        self.use_v.setChecked(self.state.use_v)
        self.slider_form = QFormLayout()
        self.metrics = QLabel("Start to see Dice per organ and p.")
        self.metrics.setTextFormat(Qt.TextFormat.RichText)
        self.status = QLabel(self.state.status)
        self.status.setWordWrap(True)
        self.volume_button = QPushButton("All slices")
        self.volume_button.setToolTip("Attack every slice with the current latents")
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setCheckable(True)
        self.grid_button.setToolTip("I0 over S0 | I_DV over S_DV")
        self.export_button = QPushButton("Export")
        self.export_button.setToolTip(
            "Write I_DV, D, V, S0 and S_DV as NIfTI on the scan's grid (never overwrites)"
        )
        self.export_dir = QLineEdit(self.state.export_dir)
        self.export_slice = QCheckBox("Current slice only")
        self.export_slice.setToolTip("Write the slice on screen alone, in its place in the scan")

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("CT image", self.image_box)
        form.addRow("Labels (optional)", self.labels_box)
        form.addRow("Segmentation model", self.seg_box)
        form.addRow("Model spec", self.spec_editor)
        form.addRow("Compare with", self.compare_box)
        form.addRow("Attacker", self.attacker_box)
        form.addRow("", self.attacker_path)
        form.addRow("", self.force_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(row(self.start_button, self.unload_button, self.cancel_button))
        layout.addWidget(self.status)
        layout.addLayout(row(self.use_d, self.use_v))
        layout.addLayout(row(self.sample_button, self.reset_button))
        temperature = QFormLayout()
        temperature.addRow("Temperature", self.temperature)
        layout.addLayout(temperature)
        layout.addLayout(self.slider_form)
        layout.addWidget(self.metrics)
        layout.addLayout(row(self.volume_button, self.grid_button, self.export_button))
        export = QFormLayout()
        export.addRow("Export folder", self.export_dir)
        export.addRow("", self.export_slice)
        layout.addLayout(export)
        layout.addStretch()

    def _bind(self) -> None:
        """Controls -> state on user edits; state events -> controls, layers and workers."""
        state, events = self.state, self.state.events
        self.image_box.currentTextChanged.connect(self._set_field("image_layer"))
        self.labels_box.currentTextChanged.connect(self._set_field("labels_layer"))
        self.seg_path.textChanged.connect(self._set_field("seg_model"))
        self.seg_path.textChanged.connect(self.spec_editor.show_model)
        self.compare_path.textChanged.connect(self._set_field("compare_model"))
        self.compare_path.editingFinished.connect(self.apply_compare)
        self.compare_box.activated.connect(self.apply_compare)
        self.attacker_path.textChanged.connect(self._set_field("attacker_path"))
        self.attacker_box.currentIndexChanged.connect(self._attacker_chosen)
        self.temperature.valueChanged.connect(self._set_field("temperature"))
        self.use_d.toggled.connect(self._set_field("use_d"))
        self.use_v.toggled.connect(self._set_field("use_v"))
        self.export_dir.textChanged.connect(self._set_field("export_dir"))
        self.export_slice.toggled.connect(self._set_field("export_slice_only"))
        self.grid_button.toggled.connect(self._set_field("side_by_side"))
        self.viewer.dims.events.current_step.connect(self._dims_changed)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.start_button.clicked.connect(self.start)
        self.unload_button.clicked.connect(self.unload)
        self.cancel_button.clicked.connect(self.cancel)
        self.sample_button.clicked.connect(self.sample)
        self.reset_button.clicked.connect(self.reset)
        self.volume_button.clicked.connect(self.attack_volume)
        self.export_button.clicked.connect(self.export)

        follow = (
            ("image_layer", self.image_box.currentText, self.image_box.setCurrentText),
            ("labels_layer", self.labels_box.currentText, self.labels_box.setCurrentText),
            ("seg_model", self.seg_path.text, self.seg_path.setText),
            ("compare_model", self.compare_path.text, self.compare_path.setText),
            ("attacker_path", self.attacker_path.text, self.attacker_path.setText),
            ("temperature", self.temperature.value, self.temperature.setValue),
            ("use_d", self.use_d.isChecked, self.use_d.setChecked),
            ("use_v", self.use_v.isChecked, self.use_v.setChecked),
            ("export_dir", self.export_dir.text, self.export_dir.setText),
            ("export_slice_only", self.export_slice.isChecked, self.export_slice.setChecked),
        )
        for field, get, put in follow:
            getattr(events, field).connect(Follow(get, put))
        events.z_d.connect(self._latents_changed)
        events.z_v.connect(self._latents_changed)
        events.use_d.connect(self._toggles_changed)
        events.use_v.connect(self._toggles_changed)
        events.current_slice.connect(self.request_slice)
        for field in ("job", "loaded", "computing"):
            getattr(events, field).connect(self._update_enabled)
        events.status.connect(self._status_changed)
        events.side_by_side.connect(self._side_by_side_changed)
        self.slice_runner.done.connect(self._slice_done)
        self.slice_runner.failed.connect(self._slice_failed)
        self.slice_runner.busy_changed.connect(self._computing_changed)
        self.latent_runner.done.connect(self._latents_done)
        self.latent_runner.failed.connect(self._slice_failed)
        state.image_layer = self.image_box.currentText()
        state.labels_layer = self.labels_box.currentText()
        index = self.attacker_box.findText(DEFAULT_ATTACKER)
        self.attacker_box.setCurrentIndex(max(index, 0))
        self._attacker_chosen()
        state.current_slice = self.current_slice()
        self.spec_editor.show_model(self.seg_path.text())

    def _set_field(self, name: str) -> FieldSetter:
        return FieldSetter(self.state, name)

    def _attacker_chosen(self, *_: object) -> None:
        self.state.attacker = self.attacker_box.currentData() or ""

    def _dims_changed(self, *_: object) -> None:
        self.state.current_slice = self.current_slice()

    def _layer_removed(self, event: Any) -> None:
        """The CT being explored was removed (or the viewer closes): stop and drop the models."""
        if self._loading_source is not None and event.value is self._loading_source:
            self.cancel()  # its layers would be made for a layer that is gone
        if self.source is not None and event.value is self.source:
            self.source = None
            if self.job is not None:
                self.job.quit()
            self.session = self.compare = None
            self.slice_runner.clear()
            self.latent_runner.clear()
            self.state.loaded = False
            self.state.status = "The CT layer was removed; choose one and Start again."

    def _status_changed(self, event: Any) -> None:
        self.status.setText(event.value)

    def _computing_changed(self, busy: bool) -> None:
        self.state.computing = busy

    def _update_enabled(self, *_: object) -> None:
        busy, loaded = self.state.busy, self.state.loaded
        ready = loaded and not busy
        for widget in (self.sample_button, self.reset_button, self.use_d, self.use_v):
            widget.setEnabled(ready)
        for widget in (self.volume_button, self.export_button, self.unload_button):
            widget.setEnabled(ready)
        for slider in self.sliders:
            slider.setEnabled(ready)
        self.grid_button.setEnabled(loaded)
        self.cancel_button.setEnabled(busy)
        inputs = (self.start_button, self.image_box, self.labels_box, self.seg_box)
        models = (self.spec_editor, self.compare_box, self.attacker_box, self.attacker_path)
        models = (*models, self.force_box)
        for widget in (*inputs, *models):
            widget.setEnabled(not busy)

    def is_idle(self) -> bool:
        """Whether nothing runs or waits: no job, no slice or latents being computed.

        Scripts that need the attack on screen (a screenshot, a benchmark) wait for
        ``widget.state.loaded and widget.is_idle()``, running the event loop meanwhile.
        """
        runners = (self.slice_runner, self.latent_runner)
        idle = not self.state.busy and self._staging is None
        return idle and all(not r.busy and r.pending is None for r in runners)

    def refresh_thumbnails(self) -> None:
        """Bring the output layers' thumbnails up to date (done by itself when a drag pauses)."""
        self.output.refresh_thumbnails()

    def refresh_choices(self, *_: object) -> None:
        """Refresh the layer choices (the explorer's own outputs are not offered)."""
        self.choice.refresh()

    @property
    def layers(self) -> dict[str, Any]:
        """The output layers by key: I_DV, V, |D|, S0, S_DV, D and changed."""
        return self.output.layers

    def current_slice(self) -> int:
        """The axial slice the viewer shows."""
        return int(self.viewer.dims.current_step[0])

    # -- models made in this session -----------------------------------------------------
    def _on_registry(self, event: Any) -> None:
        """A model was trained in this session: offer it at once."""
        if event.kind == "attacker":
            self._add_attacker(Path(event.folder))
        else:
            self._add_seg_model(Path(event.folder))

    def _add_attacker(self, folder: Path) -> None:
        if self.attacker_box.findData(str(folder)) < 0:
            self.attacker_box.addItem(f"{folder.name} (trained: {folder})", str(folder))

    def _add_seg_model(self, folder: Path) -> None:
        add_model(self.seg_box, folder)
        add_model(self.compare_box, folder)

    # -- jobs: Start, All slices, Export ---------------------------------------------------
    def _run_job(self, name: str, worker: GeneratorWorker) -> GeneratorWorker:
        self.job = worker
        self.state.job = name
        self.slice_runner.pause()
        self.latent_runner.pause()
        worker.errored.connect(self._job_failed)
        worker.aborted.connect(self._job_aborted)
        worker.finished.connect(self._job_finished)
        worker.start()
        return worker

    def _refuse_busy(self) -> bool:
        if self.state.busy:
            show_info(f"The explorer is {self.state.job}; wait for it or press Cancel.")
            return True
        return False

    def start(self) -> GeneratorWorker | None:
        """Load the models in a worker; when they are ready, make the layers and the sliders.

        Returns the worker (None when refused: bad input, or a job is already running).
        """
        if self._refuse_busy():
            return None
        state = self.state
        try:
            source = self.choice.image_layer(state.image_layer)
            scan = self.choice.scan(state.image_layer, state.labels_layer)
            volume = scan.image
            attacker = state.attacker_folder()
            if attacker is None:
                raise AdvsegError("Choose an attacker, or give an attacker checkpoint folder.")
            spec = self.spec_editor.given()
            check_memory(attacked_volume_bytes(volume), f"Exploring {volume.name}")
        except AdvsegError as error:
            self._error(widget_words(str(error)))
            return None
        self._loading_source, self._loading_volume = source, volume
        force, compare = self.force_box.isChecked(), state.compare_model_path()
        steps = load_session(
            scan, state.seg_model_path(), attacker, state.current_slice, spec, force, compare
        )
        total = LOAD_STEPS + (COMPARE_STEPS if compare is not None else 0)
        description = "Loading the explorer's models"
        worker = job_worker(steps, total, description, self._load_step, self._loaded)
        state.status = "Loading the models..."
        return self._run_job(LOADING, worker)

    def _load_step(self, step: str) -> None:
        self.state.status = f"Loading: {step}..."

    def _loaded(self, loaded: Loaded) -> None:
        """Main thread: the session is ready; make the sliders and layers, show the attack."""
        self.session, self.compare = loaded.session, loaded.compare
        self.source = self._loading_source
        for warning in (loaded.warning, self.compare and self.compare.warning):
            if warning:
                show_warning(warning)
        self._build_sliders()
        attacked = AttackedVolume(loaded.session.volume)
        label_map = loaded.session.seg_model.spec.label_map
        compared = self.compare.volume if self.compare is not None else None
        self._staging = chain(
            self.output.build_steps(self.source, attacked, label_map),
            self.output.compared_steps(self.source, compared, label_map),
        )
        self._latents_at_start = (loaded.z_d, loaded.z_v)
        self._loading_source = self._loading_volume = None
        QTimer.singleShot(0, self._build_next)

    def _build_next(self) -> None:
        """Main thread: add one output layer, then let the event loop run before the next."""
        if self._staging is None:
            return
        try:
            step = next(self._staging)
        except StopIteration:
            self._staging = None
            self._layers_ready()
            return
        self.state.status = f"Loading: layer {step} made..."
        QTimer.singleShot(0, self._build_next)

    def _layers_ready(self) -> None:
        """Main thread: every layer exists; show the attack of the slice on screen."""
        self.refresh_choices()
        self.state.loaded = True
        if self.job is None:
            self._end_job()
        self._set_latents(*self._latents_at_start)
        self.request_slice()  # when the latents are those shown before, nothing else asks
        mode = self.session.loaded.mode.upper()
        self.state.status = f"Exploring {self.source.name} with a {mode} attacker{self._vs()}."

    def _vs(self) -> str:
        return f", compared with {self.compare.model.name}" if self.compare is not None else ""

    def _compared_model(self) -> ComparedModel | None:
        return self.compare.model if self.compare is not None else None

    def apply_compare(self, *_: object) -> GeneratorWorker | None:
        """Load, change or drop the model to compare with, as *Compare with* now says.

        Once the models are loaded (before, *Start* loads it): the second model is loaded in a
        worker and its layers follow; an empty field removes them. Returns the worker, if any.
        """
        path = self.state.compare_model_path()
        loaded = self.compare.path if self.compare is not None else None
        if self.session is None or self.state.job == COMPARING or path == loaded:
            return None  # the field is disabled while it loads: a second signal of the same edit
        if self._refuse_busy():
            return None
        self._drop_compare()
        if path is None:
            self.state.status = f"Exploring {self.source.name}, no longer compared."
            self.request_slice()  # any attack on its way was made with the second model
            return None
        worker = job_worker(
            load_compare(self.session, path),
            COMPARE_STEPS,
            "Loading the model to compare with",
            self._load_step,
            self._compare_loaded,
        )
        self.state.status = f"Loading {path.name} to compare with..."
        return self._run_job(COMPARING, worker)

    def _compare_loaded(self, compare: LoadedCompare) -> None:
        """Main thread: the second model is ready; make its layers, attack the slice again."""
        if compare.model.session is not self.session or self.source is None:
            return
        self.compare = compare
        label_map = self.session.seg_model.spec.label_map
        for _ in self.output.compared_steps(self.source, compare.volume, label_map):
            pass
        self.refresh_choices()
        self.state.status = f"Exploring {self.source.name}{self._vs()}."
        self.request_slice()

    def _drop_compare(self) -> None:
        """Remove the second model, its layers and its rows of Dice."""
        self.compare = None
        self.output.remove_compared()
        if self.last_result is not None and self.last_result.compare is not None:
            self._show_metrics(replace(self.last_result, compare=None))

    def unload(self) -> None:
        """Drop the models and the session; free GPU memory when there is a GPU."""
        if self._refuse_busy():
            return
        self.session = self.compare = None
        self.slice_runner.clear()
        self.latent_runner.clear()
        self.state.loaded = False
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.metrics.setText("Models unloaded. Start to explore again.")
        self.state.status = "Models unloaded."

    def attack_volume(self) -> GeneratorWorker | None:
        """Attack every slice with the sliders' latents, in a worker; returns it (or None)."""
        if self.session is None or self._refuse_busy():
            return None
        state = self.state
        steps = attack_all_slices(
            self.session,
            np.asarray(state.z_d, np.float32),
            np.asarray(state.z_v, np.float32),
            state.use_d,
            state.use_v,
            self._compared_model(),
        )
        total = self.session.num_slices
        worker = job_worker(
            steps, total, "Attacking all slices", self._volume_slice, self._volume_done
        )
        state.status = "Attacking all slices..."
        return self._run_job(ALL_SLICES, worker)

    def _volume_slice(self, planes: SlicePlanes) -> None:
        shown = planes.index == self.state.current_slice
        self.output.write(planes, refresh=shown)
        if shown:
            self._show_metrics(planes.attack)

    def _volume_done(self, count: int) -> None:
        self.output.refresh_all()
        self.state.status = f"Attacked all {count} slices with the current latents."

    def export(self) -> GeneratorWorker | None:
        """Write I_DV, V, D, S0 and S_DV as NIfTI on the scan's own grid, in a worker.

        The whole volume (slices not yet attacked hold I0 and empty segmentations; press
        *All slices* first to attack them all), or with *Current slice only* the slice on screen,
        one voxel thick, in its place in the scan. The folder is checked first; an export never
        overwrites: if any of its files exists, it is refused with a notification naming them and
        nothing is written. The written paths end up in :attr:`exported`. Returns the worker
        (None when refused).
        """
        if self._refuse_busy():
            return None
        attacked = self.output.attacked
        if self.session is None or attacked is None:
            self._error("Start exploring before exporting.")
            return None
        state = self.state
        grid = self.source.metadata.get(GRID_KEY) if self.source is not None else None
        index = state.current_slice if state.export_slice_only else None
        try:
            plan = plan_export(attacked, state.export_dir, grid, index)
        except AdvsegError as error:
            self._error(f"Export refused: {error}")
            return None
        self.exported = []
        steps = export_files(attacked, plan)
        description = "Exporting NIfTI files"
        worker = job_worker(steps, len(EXPORTS), description, self.exported.append, self._exported)
        state.status = f"Exporting to {plan.folder}..."
        return self._run_job(EXPORTING, worker)

    def _exported(self, paths: list[Path]) -> None:
        folder = paths[0].parent if paths else self.state.export_dir
        show_info(f"Wrote {len(paths)} NIfTI files to {folder}")
        self.state.status = f"Exported {len(paths)} files to {folder}."

    def cancel(self) -> None:
        """Stop the running job at its next step (what is done stays done)."""
        if self.job is not None:
            self.job.quit()

    def shut_down(self, wait_ms: int = 10_000) -> None:
        """Stop every job and computation, and wait for running workers to return.

        Called when the application quits: a worker still running when Qt deletes the objects
        its signals go through would abort the process.
        """
        self.cancel()
        self.session = self.compare = None
        self.slice_runner.clear()
        self.latent_runner.clear()
        QThreadPool.globalInstance().waitForDone(wait_ms)

    def _job_failed(self, error: Exception) -> None:
        message = widget_words(describe(error)).replace("or force it", "or tick Use anyway")
        self._error(f"{self.state.job.capitalize()} failed: {message}")

    def _job_aborted(self) -> None:
        job = self.state.job
        status = f"Cancelled {job}."
        if job == ALL_SLICES:
            self.output.refresh_all()
        elif job == EXPORTING:
            status += f" {len(self.exported)} of {len(EXPORTS)} files were written."
        self.state.status = status

    def _job_finished(self) -> None:
        self.job = None
        self._loading_source = self._loading_volume = None
        if self._staging is None:  # else the layers are still being made: that ends the job
            self._end_job()

    def _end_job(self) -> None:
        self.state.job = IDLE
        self.slice_runner.resume()
        self.latent_runner.resume()

    def _error(self, message: str) -> None:
        show_error(message)
        self.state.status = message

    # -- the sliders ----------------------------------------------------------------------
    def _build_sliders(self) -> None:
        while self.slider_form.rowCount():
            self.slider_form.removeRow(0)
        self.sliders = []
        dims_d, dims_v = self.session.latent_dims
        for name, count in (("z_D", dims_d), ("z_V", dims_v)):
            for i in range(count):
                slider = QSlider(Qt.Orientation.Horizontal)
                slider.setRange(-3 * SLIDER_STEPS, 3 * SLIDER_STEPS)
                slider.setToolTip(f"{name}[{i}], in prior standard deviations (-3 to 3)")
                slider.valueChanged.connect(self._slider_moved)
                self.slider_form.addRow(f"{name}[{i}]", slider)
                self.sliders.append(slider)
        self.state.z_d, self.state.z_v = (0.0,) * dims_d, (0.0,) * dims_v
        self._update_enabled()

    def _slider_moved(self, *_: object) -> None:
        values = tuple(slider.value() / SLIDER_STEPS for slider in self.sliders)
        dims_d = len(self.state.z_d)
        self.state.z_d, self.state.z_v = values[:dims_d], values[dims_d:]

    def _latents_changed(self, *_: object) -> None:
        values = (*self.state.z_d, *self.state.z_v)
        if len(values) == len(self.sliders):
            for slider, value in zip(self.sliders, values, strict=True):
                ticks = round(value * SLIDER_STEPS)
                if slider.value() != ticks:
                    slider.blockSignals(True)
                    slider.setValue(ticks)
                    slider.blockSignals(False)
        self.request_slice()

    def _toggles_changed(self, *_: object) -> None:
        self.request_slice()

    def _set_latents(self, z_d: np.ndarray, z_v: np.ndarray) -> None:
        self.state.z_d, self.state.z_v = quantize(z_d), quantize(z_v)

    def reset(self) -> None:
        """Put the sliders at the posterior mean of the current slice (computed in a worker)."""
        if self.session is not None and not self.state.busy:
            self.latent_runner.submit(LatentRequest(self.session, self._shown_index()))

    def sample(self) -> None:
        """Draw the sliders from the posterior of the current slice (computed in a worker)."""
        if self.session is not None and not self.state.busy:
            self._seed += 1
            index = self._shown_index()
            request = LatentRequest(self.session, index, self._seed, self.state.temperature)
            self.latent_runner.submit(request)

    def _shown_index(self) -> int:
        return min(max(self.state.current_slice, 0), self.session.num_slices - 1)

    def _latents_done(self, output: tuple[LatentRequest, tuple[np.ndarray, np.ndarray]]) -> None:
        request, (z_d, z_v) = output
        if request.session is self.session:
            self._set_latents(z_d, z_v)

    def request_slice(self, *_: object) -> None:
        """Ask for the attack of the slice on screen with the sliders' latents.

        It runs in a worker (latest wins); the layers follow when it ends.
        """
        session, state = self.session, self.state
        if session is None or not 0 <= state.current_slice < session.num_slices:
            return
        dims = session.latent_dims
        if (len(state.z_d), len(state.z_v)) != dims:
            return
        request = SliceRequest(
            session,
            state.current_slice,
            state.z_d,
            state.z_v,
            state.use_d,
            state.use_v,
            self._compared_model(),
        )
        self.slice_runner.submit(request)

    update_slice = request_slice
    """Kept for scripts: the same as :meth:`request_slice`."""

    def _slice_done(self, output: tuple[SliceRequest, SlicePlanes]) -> None:
        """Main thread: copy the attacked slice into the layers."""
        request, planes = output
        if request.session is not self.session:
            return  # unloaded or restarted meanwhile
        if request.compare is not self._compared_model():
            self.request_slice()  # the second model changed meanwhile: attack again
            return
        if self.state.busy:  # a job started meanwhile: redo it when the job ends
            if self.slice_runner.pending is None:
                self.slice_runner.pending = request
            return
        shown = request.index == self.state.current_slice
        self.output.write(planes, refresh=shown)
        if shown:
            self._show_metrics(planes.attack)

    def _slice_failed(self, message: str) -> None:
        self._error(f"The attack of the slice failed: {message}")

    def _show_metrics(self, result: SliceAttack) -> None:
        self.last_result = result
        model = self.session.seg_model.name if self.session is not None else "f_seg"
        self.metrics.setText(metrics_html(result, model))

    def _side_by_side_changed(self, event: Any) -> None:
        if self.grid_button.isChecked() != event.value:
            self.grid_button.setChecked(event.value)
        self.output.side_by_side(self.source, event.value)

    def side_by_side(self, enabled: bool) -> None:
        """Two grid cells: I0 with S0 over it, and I_DV with S_DV over it."""
        self.state.side_by_side = enabled
