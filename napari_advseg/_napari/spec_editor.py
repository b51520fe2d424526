"""The model spec in a widget: a spec-file field and the spec's fields, editable.

Both dock widgets put a :class:`SpecEditor` beside their model field. It shows the spec of the
chosen checkpoint folder (the shipped U-Net when the field is empty), which the checkpoint
carries itself: nothing is passed to the backend then. Loading a spec file, editing a field or
ticking *Use this spec* makes :meth:`SpecEditor.given` return the fields' spec, which the backend
uses for a TorchScript or ``.pt2`` file and refuses, in one line, for a checkpoint whose own
spec differs. A spec the user gave is never replaced behind their back: while *Use this spec* is
ticked, choosing another model only updates the note; unticking it shows the model's own spec.
Reading a checkpoint's ``config.json`` or a spec file is a few hundred bytes, so it happens on
the GUI thread; the model itself is loaded in the widgets' workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..data.normalization import KINDS, Normalization
from ..errors import AdvsegError, InvalidInputError
from ..labels import LabelMap, label_map_from_names
from ..model_spec import MAX_SPEC_BYTES, ORIENTATIONS, ModelSpec, load_spec_file
from ..nnunet.folder import derive_spec, is_nnunet_folder, read_nnunet_folder
from ..segmentation import default_model_path

SPEC_FILTER = "Model spec (*.json);;All files (*)"

WIDGET_WORDS = {
    "(--model-spec FILE)": "(load a Model spec file, or fill in its fields and tick Use this spec)",
    "--model-spec": "Model spec",
}
"""The command line's words in the backend's messages, and the widgets' controls."""


def widget_words(message: str) -> str:
    """A backend message with its command-line options named as the widgets' controls."""
    for words, control in WIDGET_WORDS.items():
        message = message.replace(words, control)
    return message


def checkpoint_spec(folder: Path) -> ModelSpec | None:
    """The spec a segmentation checkpoint folder carries, or None (not one, or unreadable).

    Only ``config.json`` is read (the backend checks the whole checkpoint when it loads it).
    """
    config = folder / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > MAX_SPEC_BYTES:
            return None
        return ModelSpec.from_config(json.loads(config.read_text(encoding="utf-8")))
    except (AdvsegError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class PathField(QWidget):
    """A line edit for a file or folder path with a *Browse...* button."""

    chosen = Signal(str)
    """A path was picked in the dialog or typed and confirmed (Enter, or leaving the field)."""

    def __init__(self, placeholder: str = "", folder: bool = False, file_filter: str = "") -> None:
        super().__init__()
        self.folder = folder
        self.file_filter = file_filter
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        self.browse = QPushButton("Browse...")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line, stretch=1)
        layout.addWidget(self.browse)
        self.browse.clicked.connect(self._browse)
        self.line.editingFinished.connect(self._confirmed)
        self._confirmed_text = ""

    def text(self) -> str:
        """The path as typed."""
        return self.line.text()

    def setText(self, text: str) -> None:
        """Show ``text`` (without emitting :attr:`chosen`)."""
        self.line.setText(text)
        self._confirmed_text = text

    def path(self) -> Path | None:
        """The path typed, with ``~`` expanded; None when the field is empty."""
        text = self.line.text().strip()
        return Path(text).expanduser() if text else None

    def _browse(self) -> None:
        start = self.line.text().strip() or str(Path.home())
        if self.folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", start, self.file_filter)
        if path:
            self.line.setText(path)
            self._confirmed()

    def _confirmed(self) -> None:
        text = self.line.text().strip()
        if text and text != self._confirmed_text:
            self._confirmed_text = text
            self.chosen.emit(text)


def _number_text(value: float | None) -> str:
    """A number as a field shows it: short when that is exact (``3``, ``-175``)."""
    if value is None:
        return ""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _number(field: QLineEdit, name: str) -> float:
    text = field.text().strip()
    try:
        return float(text)
    except ValueError as error:
        raise InvalidInputError(f"{name} must be a number, got {text!r}.") from error


def _pair(low: QLineEdit, high: QLineEdit, name: str) -> tuple[float, float] | None:
    """Two number fields as (low, high); both empty is None."""
    if not low.text().strip() and not high.text().strip():
        return None
    return _number(low, f"{name} (low)"), _number(high, f"{name} (high)")


def parse_labels(text: str) -> dict[str, str]:
    """``"1: liver, 2: spleen"`` (or ``"liver, spleen"``, numbered 1..C) as channel -> name."""
    parts = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    if not parts:
        raise InvalidInputError("labels: give the organ of each output channel, e.g. 1: liver.")
    numbered = [":" in part for part in parts]
    if not any(numbered):
        return {str(i): name for i, name in enumerate(parts, start=1)}
    if not all(numbered):
        plain = parts[numbered.index(False)]
        raise InvalidInputError(
            f"labels: {plain!r} has no channel; write every label as channel: name, "
            "e.g. 1: liver, 2: spleen."
        )
    names: dict[str, str] = {}
    for part in parts:
        channel, name = (piece.strip() for piece in part.split(":", 1))
        if channel in names:
            raise InvalidInputError(f"labels: channel {channel} is given twice.")
        names[channel] = name
    return names


class SpecEditor(QWidget):
    """A spec-file field, *Use this spec*, and the spec's fields (shown on demand).

    Attributes
    ----------
    file
        The spec file's path field (loading it fills the fields).
    use_box
        Whether :meth:`given` returns the fields' spec; ticked by loading a file or editing.
    note
        Where the fields come from, or why a spec file could not be read.
    """

    def __init__(self) -> None:
        super().__init__()
        self._filling = False
        self._loaded_file = ""
        self._label_map: LabelMap | None = None
        self._model = ""
        self.file = PathField("a spec JSON file (needed for a TorchScript / .pt2 model)")
        self.file.file_filter = SPEC_FILTER
        self.use_box = QCheckBox("Use this spec")
        self.use_box.setToolTip(
            "Feed the model as these fields say. Off: a checkpoint folder's own spec is used."
        )
        self.fields_button = QToolButton()
        self.fields_button.setText("Fields")
        self.fields_button.setCheckable(True)
        self.fields_button.setArrowType(Qt.ArrowType.RightArrow)
        self.fields_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self._make_fields()
        self.fields = QGroupBox()
        self.fields.setLayout(self._form)
        self.fields.setVisible(False)
        top = QHBoxLayout()
        top.addWidget(self.use_box)
        top.addStretch()
        top.addWidget(self.fields_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.file)
        layout.addLayout(top)
        layout.addWidget(self.note)
        layout.addWidget(self.fields)
        self._connect()
        self.set_spec(ModelSpec())

    # -- building -------------------------------------------------------------------------
    def _make_fields(self) -> None:
        self.labels = QLineEdit()
        self.labels.setToolTip("Output channel: organ, e.g. 1: liver, 2: spleen (0 is background)")
        self.spacing_rows, self.spacing_cols = QLineEdit(), QLineEdit()
        self.kind = QComboBox()
        self.kind.addItems(list(KINDS))
        self.clip_low, self.clip_high = QLineEdit(), QLineEdit()
        self.clip_low.setPlaceholderText("none")
        self.clip_high.setPlaceholderText("none")
        self.out_low, self.out_high = QLineEdit(), QLineEdit()
        self.mean, self.std = QLineEdit(), QLineEdit()
        self.input_multiple = QSpinBox()
        self.input_multiple.setRange(1, 4096)
        self.min_size = QSpinBox()
        self.min_size.setRange(1, 65536)
        self.orientation = QComboBox()
        self.orientation.addItems(list(ORIENTATIONS))
        self.orientation.setToolTip(
            "radiological: rows anterior to posterior, columns patient right to left; "
            "ras: data[:, :, k] of the volume in RAS+; file: the file's voxel order"
        )
        self.clip_label = QLabel("HU clip")
        self.output_label = QLabel("Output range")
        self.stats_label = QLabel("Mean, std (HU)")
        form = QFormLayout()
        form.addRow("Labels", self.labels)
        form.addRow("Pixel spacing (mm)", self._pair_row(self.spacing_rows, self.spacing_cols))
        form.addRow("Normalisation", self.kind)
        self.clip_row = self._pair_row(self.clip_low, self.clip_high)
        self.output_row = self._pair_row(self.out_low, self.out_high)
        self.stats_row = self._pair_row(self.mean, self.std)
        form.addRow(self.clip_label, self.clip_row)
        form.addRow(self.output_label, self.output_row)
        form.addRow(self.stats_label, self.stats_row)
        form.addRow("Input multiple", self.input_multiple)
        form.addRow("Minimum size", self.min_size)
        form.addRow("Orientation", self.orientation)
        self._form = form

    @staticmethod
    def _pair_row(first: QWidget, second: QWidget) -> QWidget:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(first)
        row.addWidget(second)
        return holder

    def _line_edits(self) -> list[QLineEdit]:
        return [
            self.labels,
            self.spacing_rows,
            self.spacing_cols,
            self.clip_low,
            self.clip_high,
            self.out_low,
            self.out_high,
            self.mean,
            self.std,
        ]

    def _connect(self) -> None:
        for line in self._line_edits():
            line.textChanged.connect(self._edited)
        for spin in (self.input_multiple, self.min_size):
            spin.valueChanged.connect(self._edited)
        for combo in (self.kind, self.orientation):
            combo.currentIndexChanged.connect(self._edited)
        self.kind.currentIndexChanged.connect(self._show_kind_fields)
        self.fields_button.toggled.connect(self._show_fields)
        self.file.chosen.connect(self._file_chosen)
        self.use_box.toggled.connect(self._use_toggled)

    # -- slots ----------------------------------------------------------------------------
    def _edited(self, *_: object) -> None:
        if not self._filling:
            self.use_box.setChecked(True)
            self.note.setText("Edited: these fields are the spec used.")

    def _show_kind_fields(self, *_: object) -> None:
        kind = self.kind.currentText()
        self.clip_label.setText("HU window" if kind == "window" else "HU clip")
        for label, row, shown in (
            (self.output_label, self.output_row, kind == "window"),
            (self.stats_label, self.stats_row, kind == "dataset"),
        ):
            label.setVisible(shown)
            row.setVisible(shown)

    def _show_fields(self, shown: bool) -> None:
        self.fields.setVisible(shown)
        arrow = Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        self.fields_button.setArrowType(arrow)

    def _use_toggled(self, used: bool) -> None:
        if not used:  # the fields no longer say what is given: show the model's own spec
            self.file.setText("")
            self._loaded_file = ""
            self.note.setText("")
            self.show_model(self._model)

    def _file_chosen(self, path: str) -> None:
        try:
            self.load_file(path)
        except AdvsegError as error:
            self.note.setText(str(error))

    # -- the spec -------------------------------------------------------------------------
    def set_spec(self, spec: ModelSpec, source: str = "") -> None:
        """Show ``spec`` in the fields (neither ticking nor unticking *Use this spec*)."""
        self._filling = True
        try:
            self._label_map = spec.label_map
            self.labels.setText(", ".join(f"{lab.id}: {lab.name}" for lab in spec.label_map))
            self.labels.setCursorPosition(0)
            self.spacing_rows.setText(_number_text(spec.pixel_spacing[0]))
            self.spacing_cols.setText(_number_text(spec.pixel_spacing[1]))
            norm = spec.normalization
            self.kind.setCurrentText(norm.kind)
            clip = norm.clip_hu or (None, None)
            self.clip_low.setText(_number_text(clip[0]))
            self.clip_high.setText(_number_text(clip[1]))
            self.out_low.setText(_number_text(norm.output_range[0]))
            self.out_high.setText(_number_text(norm.output_range[1]))
            self.mean.setText(_number_text(norm.mean))
            self.std.setText(_number_text(norm.std))
            self.input_multiple.setValue(spec.input_multiple)
            self.min_size.setValue(spec.min_size)
            self.orientation.setCurrentText(spec.orientation)
        finally:
            self._filling = False
        self._show_kind_fields()
        self.note.setText(source)

    def spec(self) -> ModelSpec:
        """The spec the fields hold.

        Raises
        ------
        InvalidInputError
            One line naming the field that is wrong.
        """
        try:
            return self._build()
        except InvalidInputError as error:
            raise InvalidInputError(f"Model spec fields: {error}") from error

    def _build(self) -> ModelSpec:
        names = parse_labels(self.labels.text())
        label_map = self._label_map
        if label_map is None or [names.get(str(i)) for i in range(1, len(names) + 1)] != (
            label_map.names
        ):
            label_map = label_map_from_names(names)  # else keep the colours it was shown with
        spacing = (
            _number(self.spacing_rows, "pixel spacing (rows)"),
            _number(self.spacing_cols, "pixel spacing (columns)"),
        )
        kind = self.kind.currentText()
        clip = _pair(self.clip_low, self.clip_high, "HU window" if kind == "window" else "HU clip")
        if kind == "window":
            output = _pair(self.out_low, self.out_high, "output range")
            normalization = Normalization(clip, "window", output or (0.0, 1.0))
        elif kind == "dataset":
            mean = _number(self.mean, "mean") if self.mean.text().strip() else None
            std = _number(self.std, "std") if self.std.text().strip() else None
            normalization = Normalization(clip, "dataset", mean=mean, std=std)
        else:
            normalization = Normalization(clip)
        return ModelSpec(
            label_map=label_map,
            pixel_spacing=spacing,
            normalization=normalization,
            input_multiple=self.input_multiple.value(),
            min_size=self.min_size.value(),
            orientation=self.orientation.currentText(),
        )

    def load_file(self, path: str | os.PathLike[str]) -> ModelSpec:
        """Read a spec file into the fields and tick *Use this spec*; returns the spec.

        Raises
        ------
        InvalidInputError
            One line naming the file and what is wrong with it (the fields are left as they were).
        """
        path = Path(path).expanduser()
        spec = load_spec_file(path)
        self.set_spec(spec, f"Loaded {path.name}.")
        self.file.setText(str(path))
        self._loaded_file = str(path)
        self.use_box.setChecked(True)
        return spec

    def given(self) -> ModelSpec | None:
        """The spec to pass to the backend: the fields' when *Use this spec* is ticked, else None.

        A spec file typed but not yet loaded is loaded first.

        Raises
        ------
        InvalidInputError
            One line, for an unreadable spec file or a wrong field.
        """
        typed = self.file.text().strip()
        if typed and typed != self._loaded_file:
            self.load_file(typed)
        return self.spec() if self.use_box.isChecked() else None

    def show_model(self, model: str | os.PathLike[str] | None) -> None:
        """Follow the model field: show a checkpoint folder's own spec (empty: the shipped U-Net).

        A checkpoint's spec is shown, not given. While *Use this spec* is ticked the fields are
        the user's and stay; the note says that a checkpoint carries its own spec. For a file
        (TorchScript, ``.pt2``) the fields stay as they are.
        """
        text = "" if model is None else str(model).strip()
        self._model = text
        folder = Path(text).expanduser() if text else default_model_path()
        if text and is_nnunet_folder(folder):
            self._show_nnunet(folder)
            return
        spec = checkpoint_spec(folder) if folder.is_dir() else None
        name = "the shipped U-Net" if not text else f"checkpoint {folder.name}"
        if self.use_box.isChecked():
            if spec is not None:
                self.note.setText(
                    f"{name[0].upper()}{name[1:]} carries its own spec; these fields must match "
                    "it. Untick Use this spec to use its own."
                )
            return
        if spec is None:
            if text and Path(text).expanduser().is_file():
                self.note.setText(
                    "A TorchScript or .pt2 model needs its spec: load a spec file, or fill in "
                    "the fields and tick Use this spec."
                )
            return
        self.set_spec(spec, f"The spec of {name} (it carries its own; a different one is refused).")

    def _show_nnunet(self, folder: Path) -> None:
        """An nnU-Net folder: the spec its plans give (JSON only), or why it is refused."""
        try:
            found = read_nnunet_folder(folder)
            spec = derive_spec(found)
        except AdvsegError as error:
            self.note.setText(str(error))
            return
        where = f"{found.describe()}; a fold_N folder chooses another fold"
        if self.use_box.isChecked():
            self.note.setText(
                f"The nnU-Net plans give this model's spec ({where}); these fields must match it. "
                "Untick Use this spec to use it."
            )
            return
        self.set_spec(spec, f"Derived from the nnU-Net plans: {where}.")
