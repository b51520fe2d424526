"""Explorer dock widget: one slider per latent dimension, attacked slices as synchronized layers.

Thin by design: :class:`napari_advseg.explorer.ExplorerSession` computes; this widget turns
clicks into session calls and results into layers, on the main thread. Slider moves are
coalesced by a short single-shot timer, so a drag stays smooth.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from napari.experimental import link_layers, unlink_layers
from napari.layers import Image, Labels, Vectors
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .._resources import models_dir
from ..data.nifti import write_nifti
from ..errors import AdvsegError
from ..explorer import ExplorerSession, SliceAttack
from ..segmentation import load_segmentation_model
from ..training.attacker_io import load_attacker
from ..training.device import select_device
from .layer_choice import LayerChoice
from .layer_data import GRID_KEY, label_colormap

if TYPE_CHECKING:
    import napari

VECTOR_LENGTH = 3.0
"""Arrows of D are drawn this many times longer than the displacement (it is often < 1 px)."""

THUMBNAIL_DELAY_MS = 300
"""Layer-list thumbnails are redrawn this long after the last change, not on every step."""

SLIDER_STEPS = 100
"""Slider ticks per prior standard deviation; the range is +-3 standard deviations."""


class ExplorerWidget(QWidget):
    """Pick a CT layer and an attacker, then move through the attacker's latent space."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session: ExplorerSession | None = None
        self.source: Image | None = None
        self.layers: dict[str, Image | Labels] = {}
        self.sliders: list[QSlider] = []
        self.choice = LayerChoice(viewer, exclude=lambda: list(self.layers.values()))
        self.image_box = self.choice.image_box
        self.labels_box = self.choice.labels_box
        self.attacker_box = QComboBox()
        self.attacker_box.addItems(sorted(p.name for p in models_dir().glob("attacker_*")))
        index = self.attacker_box.findText("attacker_dv_xi2.5")
        self.attacker_box.setCurrentIndex(max(index, 0))
        self.seg_path = QLineEdit()
        self.seg_path.setPlaceholderText("shipped U-Net, or a checkpoint folder / TorchScript file")
        self.attacker_path = QLineEdit()
        self.attacker_path.setPlaceholderText("or an attacker checkpoint folder")
        self.start_button = QPushButton("Start exploring")
        self.unload_button = QPushButton("Unload")
        self.unload_button.setToolTip("Free the models (and their GPU memory)")
        self.sample_button = QPushButton("Sample")
        self.reset_button = QPushButton("Posterior mean")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 3.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(1.0)
        self.use_d = QCheckBox("D (deformation)")
        self.use_v = QCheckBox("V (intensity)")
        for box in (self.use_d, self.use_v):
            box.setChecked(True)
            box.toggled.connect(self.schedule_update)
        self.slider_form = QFormLayout()
        self.metrics = QLabel("Start to see Dice per organ and p.")
        self.metrics.setTextFormat(Qt.TextFormat.RichText)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(15)
        self.timer.timeout.connect(self.update_slice)
        self.thumbnail_timer = QTimer(self)
        self.thumbnail_timer.setSingleShot(True)
        self.thumbnail_timer.setInterval(THUMBNAIL_DELAY_MS)
        self.thumbnail_timer.timeout.connect(self.refresh_thumbnails)
        self._seed = 0
        self.volume_button = QPushButton("All slices")
        self.volume_button.setToolTip("Attack every slice with the current latents")
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setCheckable(True)
        self.grid_button.setToolTip("I0 over S0 | I_DV over S_DV")
        self.export_button = QPushButton("Export")
        self.export_button.setToolTip("Write I_DV, D, V, S0 and S_DV as NIfTI on the scan's grid")
        self.export_dir = QLineEdit(str(Path.home() / "advseg_export"))
        self.export_slice = QCheckBox("Current slice only")
        self.export_slice.setToolTip("Write the slice on screen alone, in its place in the scan")
        self.displacement_mm = np.zeros((2, 0, 0, 0), np.float32)  # (2, z, y, x) once started
        self._linked: tuple[Image, Image] | None = None
        self.volume_button.clicked.connect(self.attack_volume)
        self.grid_button.toggled.connect(self.side_by_side)
        self.export_button.clicked.connect(self.export)
        self._shown_s0: int | None = None

        form = QFormLayout()
        form.addRow("CT image", self.image_box)
        form.addRow("Labels (optional)", self.labels_box)
        form.addRow("Segmentation model", self.seg_path)
        form.addRow("Attacker", self.attacker_box)
        form.addRow("", self.attacker_path)
        buttons = QHBoxLayout()
        for widget in (self.sample_button, self.reset_button):
            buttons.addWidget(widget)
        toggles = QHBoxLayout()
        toggles.addWidget(self.use_d)
        toggles.addWidget(self.use_v)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        start = QHBoxLayout()
        start.addWidget(self.start_button)
        start.addWidget(self.unload_button)
        layout.addLayout(start)
        layout.addLayout(toggles)
        layout.addLayout(buttons)
        temperature = QFormLayout()
        temperature.addRow("Temperature", self.temperature)
        layout.addLayout(temperature)
        layout.addLayout(self.slider_form)
        layout.addWidget(self.metrics)
        actions = QHBoxLayout()
        for widget in (self.volume_button, self.grid_button, self.export_button):
            actions.addWidget(widget)
        layout.addLayout(actions)
        export = QFormLayout()
        export.addRow("Export folder", self.export_dir)
        export.addRow("", self.export_slice)
        layout.addLayout(export)
        layout.addStretch()

        self.start_button.clicked.connect(self.start)
        self.unload_button.clicked.connect(self.unload)
        self.sample_button.clicked.connect(self.sample)
        self.reset_button.clicked.connect(self.reset)
        viewer.dims.events.current_step.connect(self.schedule_update)
        self.refresh_choices()
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        controls = (
            self.sample_button,
            self.reset_button,
            self.use_d,
            self.use_v,
            self.volume_button,
            self.grid_button,
            self.export_button,
            self.unload_button,
        )
        for widget in controls:
            widget.setEnabled(running)

    def refresh_choices(self, *_: object) -> None:
        """Refresh the layer choices (the explorer's own outputs are not offered)."""
        self.choice.refresh()

    def start(self) -> None:
        """Build the session from the chosen layers and attacker, then show the attack."""
        try:
            self.session = self._make_session()
        except AdvsegError as error:
            show_error(str(error))
            return
        warning = self.session.loaded.target_mismatch(self.session.seg_model)
        if warning:
            show_warning(warning)
        self._build_sliders()
        self._make_layers()
        self._shown_s0 = None
        self._set_running(True)
        self.reset()

    def _make_session(self) -> ExplorerSession:
        volume = self.choice.volume()
        self.source = self.choice.image_layer()
        attacker_folder = self.attacker_path.text().strip()
        if attacker_folder:
            attacker = load_attacker(Path(attacker_folder).expanduser())
        else:
            attacker = load_attacker(models_dir() / self.attacker_box.currentText())
        seg_path = self.seg_path.text().strip()
        seg = load_segmentation_model(Path(seg_path).expanduser() if seg_path else None)
        device = select_device("auto")
        seg.to(device)
        attacker.attacker.to(device)
        return ExplorerSession(seg, attacker, volume)

    def unload(self) -> None:
        """Drop the models and the session; free GPU memory when there is a GPU."""
        self.timer.stop()
        self.session = None
        self._set_running(False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.metrics.setText("Models unloaded. Start to explore again.")

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
                slider.valueChanged.connect(self.schedule_update)
                self.slider_form.addRow(f"{name}[{i}]", slider)
                self.sliders.append(slider)

    def _make_layers(self) -> None:
        volume = self.session.volume
        source = self.source
        shape = volume.image.shape
        # The source's file grid travels with the outputs, so File > Save lands on it.
        grid = source.metadata.get(GRID_KEY)
        common = {
            "scale": source.scale,
            "translate": source.translate,
            "metadata": {GRID_KEY: grid} if grid is not None else {},
        }
        colormap = label_colormap(volume.label_map)
        name = source.name
        specs = {
            "I_DV": lambda: Image(
                np.array(volume.image),
                name=f"{name} I_DV",
                colormap="gray",
                contrast_limits=source.contrast_limits,
                **common,
            ),
            "V": lambda: Image(
                np.zeros(shape, np.float32),
                name=f"{name} V",
                colormap="bwr",
                contrast_limits=(-100.0, 100.0),
                **common,
            ),
            "|D|": lambda: Image(
                np.zeros(shape, np.float32),
                name=f"{name} |D| (mm)",
                colormap="magma",
                contrast_limits=(0.0, 5.0),
                visible=False,
                **common,
            ),
            "S0": lambda: Labels(
                np.zeros(shape, np.uint8), name=f"{name} S0", colormap=colormap, **common
            ),
            "S_DV": lambda: Labels(
                np.zeros(shape, np.uint8), name=f"{name} S_DV", colormap=colormap, **common
            ),
            "D": lambda: Vectors(
                np.zeros((0, 2, 3), np.float32),
                name=f"{name} D",
                edge_color="cyan",
                edge_width=0.3,
                length=VECTOR_LENGTH,
                **{k: v for k, v in common.items() if k != "metadata"},
            ),
            "changed": lambda: Labels(
                np.zeros(shape, np.uint8), name=f"{name} S0 != S_DV", visible=False, **common
            ),
        }
        for key, make in specs.items():
            layer = self.layers.get(key)
            stale = layer is None or layer not in self.viewer.layers
            if stale or (key != "D" and layer.data.shape != shape):
                self.layers[key] = self.viewer.add_layer(make())
        self.layers["I_DV"].contrast_limits = source.contrast_limits
        self._link_contrast(source, self.layers["I_DV"])
        self.displacement_mm = np.zeros((2, *shape), np.float32)
        self.refresh_choices()

    def _link_contrast(self, source: Image, attacked: Image) -> None:
        """I_DV follows I0's contrast limits and I0 follows I_DV's (napari layer linking)."""
        if self._linked == (source, attacked):
            return
        if self._linked is not None:
            unlink_layers(self._linked, ("contrast_limits",))
        link_layers([source, attacked], ("contrast_limits",))
        self._linked = (source, attacked)

    def _latents(self) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([s.value() / SLIDER_STEPS for s in self.sliders], np.float32)
        dims_d, _ = self.session.latent_dims
        return values[:dims_d], values[dims_d:]

    def _set_sliders(self, z_d: np.ndarray, z_v: np.ndarray) -> None:
        for slider, value in zip(self.sliders, np.concatenate([z_d, z_v]), strict=True):
            slider.blockSignals(True)
            slider.setValue(int(np.clip(round(float(value) * SLIDER_STEPS), -300, 300)))
            slider.blockSignals(False)
        self.schedule_update()

    def current_slice(self) -> int:
        """The axial slice the viewer shows."""
        return int(self.viewer.dims.current_step[0])

    def reset(self) -> None:
        """Put the sliders at the posterior mean of the current slice."""
        if self.session is not None:
            self._set_sliders(*self.session.posterior_mean(self.current_slice()))

    def sample(self) -> None:
        """Draw the sliders from the posterior of the current slice."""
        if self.session is not None:
            self._seed += 1
            draw = self.session.sample(self.current_slice(), self._seed, self.temperature.value())
            self._set_sliders(*draw)

    def schedule_update(self, *_: object) -> None:
        """Coalesce rapid changes (slider drags) into one update."""
        if self.session is not None:
            self.timer.start()

    def update_slice(self) -> SliceAttack | None:
        """Attack the current slice with the sliders' latents and update the layers in place."""
        if self.session is None:
            return None
        index = self.current_slice()
        if not 0 <= index < self.session.num_slices:
            return None
        result = self.session.attack_slice(
            index, *self._latents(), use_d=self.use_d.isChecked(), use_v=self.use_v.isChecked()
        )
        updates = {
            "I_DV": result.attacked_hu,
            "V": result.intensity_hu,
            "|D|": np.sqrt((result.displacement_mm**2).sum(axis=0)),
            "S0": result.s0,
            "S_DV": result.s_dv,
            "changed": (result.s0 != result.s_dv).astype(np.uint8),
        }
        self._show_vectors(displacement_vectors(result, self.session.volume.spacing))
        self.displacement_mm[:, index] = result.displacement_mm
        for key, plane in updates.items():
            layer = self.layers[key]
            if key == "S0" and self._shown_s0 == index:
                continue  # S0 depends on the slice only, not on the latents
            layer.data[index] = plane
            layer.refresh(thumbnail=False, extent=False)  # same shape; thumbnails come later
        self.thumbnail_timer.start()
        self._shown_s0 = index
        self.metrics.setText(metrics_html(result))
        return result

    def _show_vectors(self, vectors: np.ndarray) -> None:
        """Update the arrows of D in place when their grid is unchanged.

        The data setter of a vectors layer recomputes its extent and thumbnail, which took longer
        than the whole attack.
        """
        layer = self.layers["D"]
        if layer.data.shape != vectors.shape:
            layer.data = vectors
            return
        moved = not np.array_equal(layer.data[:, 0], vectors[:, 0])
        layer.data[...] = vectors
        layer.refresh(thumbnail=False, extent=moved)

    def refresh_thumbnails(self) -> None:
        """Bring the layer list's thumbnails up to date once a drag has paused."""
        for layer in self.layers.values():
            if layer in self.viewer.layers:
                layer.refresh(data_displayed=False, highlight=False, extent=False)

    def attack_volume(self) -> None:
        """Attack every slice with the sliders' latents (the same latents on every slice)."""
        if self.session is None:
            return
        shown = self.current_slice()
        for index in range(self.session.num_slices):
            self.viewer.dims.set_current_step(0, index)
            self.update_slice()
        self.viewer.dims.set_current_step(0, shown)

    def side_by_side(self, enabled: bool) -> None:
        """Two grid cells: I0 with S0 over it, and I_DV with S_DV over it."""
        if self.session is None or self.source is None:
            return
        viewer = self.viewer
        grid = viewer_grid(viewer)
        if not enabled:
            grid.enabled = False
            return
        order = [self.source, self.layers["S0"], self.layers["I_DV"], self.layers["S_DV"]]
        for layer in viewer.layers:
            layer.visible = layer in order
        for layer in order:
            viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
        grid.stride = 2
        grid.shape = (1, 2)
        grid.enabled = True

    def export(self) -> list[Path]:
        """Write I_DV, V, D, S0 and S_DV as NIfTI on the scan's own grid; return the paths.

        The whole volume (slices not yet attacked hold I0 and empty segmentations; press
        *All slices* first to attack them all), or with *Current slice only* the slice on screen,
        one voxel thick, in its place in the scan.
        """
        if self.session is None:
            show_error("Start exploring before exporting.")
            return []
        volume = self.session.volume
        grid = self.source.metadata.get(GRID_KEY) if self.source is not None else None
        grid = grid or volume.grid
        folder = Path(self.export_dir.text()).expanduser()
        stem = volume.name
        chosen = slice(None)
        if self.export_slice.isChecked():
            index = self.current_slice()
            grid = grid.axial_slab(index)
            chosen = slice(index, index + 1)
            stem = f"{stem}_slice{index}"
        displacement = self.displacement_mm
        outputs = {
            "IDV": (self.layers["I_DV"].data, np.int16),
            "V_HU": (self.layers["V"].data, np.float32),
            "Dx_mm": (displacement[0], np.float32),
            "Dy_mm": (displacement[1], np.float32),
            "absD_mm": (self.layers["|D|"].data, np.float32),
            "S0": (self.layers["S0"].data, np.uint8),
            "SDV": (self.layers["S_DV"].data, np.uint8),
        }
        try:
            paths = [
                write_nifti(folder / f"{stem}_{key}.nii.gz", data[chosen], grid, dtype)
                for key, (data, dtype) in outputs.items()
            ]
        except (AdvsegError, OSError) as error:
            show_error(f"Export failed: {error}")
            return []
        show_info(f"Wrote {len(paths)} NIfTI files to {folder}")
        return paths


def viewer_grid(viewer: napari.viewer.Viewer) -> object:
    """The grid settings: ``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def displacement_vectors(result: SliceAttack, spacing: tuple[float, float, float]) -> np.ndarray:
    """D of one slice as napari vectors (N, 2, 3) on a readable grid, in data pixels."""
    height, width = result.s0.shape
    step = max(4, max(height, width) // 24)
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    dy = result.displacement_mm[1][ys, xs] / spacing[1]
    dx = result.displacement_mm[0][ys, xs] / spacing[2]
    count = ys.size
    positions = np.stack([np.full(count, result.index), ys.ravel(), xs.ravel()], axis=1)
    projections = np.stack([np.zeros(count), dy.ravel(), dx.ravel()], axis=1)
    return np.stack([positions, projections], axis=1).astype(np.float32)


def metrics_html(result: SliceAttack) -> str:
    """A small table: Dice of S0 and S_DV per organ, the decrease, success at 30 %, and p."""
    metrics = result.metrics
    decrease = metrics.decrease()
    success = metrics.success()
    rows = []
    for organ, before in metrics.dice_s0.items():
        after = metrics.dice_dv_warped[organ]
        drop = decrease[organ]
        mark = " ✔" if success[organ] else ""
        rows.append(
            f"<tr><td>{organ}</td><td>{_fmt(before)}</td><td>{_fmt(after)}</td>"
            f"<td>{'-' if drop is None else f'{drop:.0f}%'}{mark}</td></tr>"
        )
    return (
        f"<b>Slice {result.index}</b>, reference: {metrics.reference} (S_DV against the "
        "reference moved by D)<table><tr><th>organ</th><th>S0</th><th>S_DV</th><th>drop</th></tr>"
        + "".join(rows)
        + f"</table>p = {metrics.p:.3f}"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
