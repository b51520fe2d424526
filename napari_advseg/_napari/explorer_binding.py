"""Small slots that bind the explorer's controls and its evented state (main thread only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QWidget

from .explorer_state import ExplorerState
from .model_registry import REGISTRY


class FieldSetter:
    """A slot that writes a control's new value into one field of the state."""

    def __init__(self, state: ExplorerState, name: str) -> None:
        self.state = state
        self.name = name

    def __call__(self, value: object) -> None:
        setattr(self.state, self.name, value)


class Follow:
    """A slot for a state event: put the new value into a control unless it already shows it."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], object]) -> None:
        self.get = get
        self.put = put

    def __call__(self, event: Any) -> None:
        if self.get() != event.value:
            self.put(event.value)


class Disconnect:
    """A slot for ``destroyed``: stop following the model registry."""

    def __init__(self, callback: Any) -> None:
        self.callback = callback

    def __call__(self, *_: object) -> None:
        REGISTRY.events.changed.disconnect(self.callback)


def row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def model_box(placeholder: str, tooltip: str, *folders: Path) -> QComboBox:
    """An editable list of models: an empty first entry, ``folders``, and a typed path."""
    box = QComboBox()
    box.setEditable(True)
    box.addItem("")
    box.lineEdit().setPlaceholderText(placeholder)
    box.setToolTip(tooltip)
    for folder in folders:
        add_model(box, folder)
    return box


def add_model(box: QComboBox, folder: Path) -> None:
    """Offer ``folder`` in an editable model list (once), keeping the path being typed."""
    if box.findText(str(folder)) < 0:
        text = box.lineEdit().text()
        box.addItem(str(folder))
        box.lineEdit().setText(text)  # adding an item must not change the typed path
