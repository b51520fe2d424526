"""The explorer's output layers: made once per session, then updated slice by slice in place.

Main thread only. The layers display the arrays of an
:class:`~napari_advseg.explorer_volume.AttackedVolume` without copying them, so writing a slice
is a copy of a few planes followed by a refresh of the layers that show it. A second model's S0
and S_DV (:class:`~napari_advseg.explorer_compare.ComparedVolume`) get two more layers, named
after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.experimental import link_layers, unlink_layers
from napari.layers import Image, Labels, Layer, Vectors
from qtpy.QtCore import QTimer

from ..explorer_compare import COMPARED_KEYS, ComparedVolume
from ..explorer_volume import AttackedVolume, SlicePlanes
from ..labels import LabelMap
from .layer_data import GRID_KEY, label_colormap

if TYPE_CHECKING:
    import napari

VECTOR_LENGTH = 3.0
"""Arrows of D are drawn this many times longer than the displacement (it is often < 1 px)."""

THUMBNAIL_DELAY_MS = 300
"""Layer-list thumbnails are redrawn this long after the last change, not on every step."""

HIDDEN_AT_START = ("V", "|D|", "D", "changed")
"""Made hidden (one click away in the layer list): the first view is I_DV under S0 and S_DV."""

LAYER_NAMES = {
    "I_DV": "I_DV",
    "V": "V",
    "|D|": "|D| (mm)",
    "S0": "S0",
    "S_DV": "S_DV",
    "D": "D",
    "changed": "S0 != S_DV",
}
"""What each output layer is called, after the scan's name."""


def layer_name(source: str, key: str, model: str | None = None) -> str:
    """A layer's name: ``"<scan> S_DV"``, or ``"<scan> S_DV [<model>]"`` for a second model."""
    name = f"{source} {LAYER_NAMES[key]}"
    return f"{name} [{model}]" if model else name


def viewer_grid(viewer: napari.viewer.Viewer) -> Any:
    """The grid settings: ``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


class ExplorerLayers:
    """I_DV, V, |D| (mm), S0, S_DV, D (arrows) and S0 != S_DV, aligned with the source layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.layers: dict[str, Layer] = {}
        self.attacked: AttackedVolume | None = None
        self.compared: dict[str, Labels] = {}
        self.compared_volume: ComparedVolume | None = None
        self._linked: tuple[Image, Image] | None = None
        self._shown_s0: int | None = None
        self.thumbnail_timer = QTimer()
        self.thumbnail_timer.setSingleShot(True)
        self.thumbnail_timer.setInterval(THUMBNAIL_DELAY_MS)
        self.thumbnail_timer.timeout.connect(self.refresh_thumbnails)

    def build(self, source: Image, attacked: AttackedVolume, label_map: LabelMap) -> None:
        """Show ``attacked``'s arrays as layers on ``source``'s grid (reusing earlier layers)."""
        for _ in self.build_steps(source, attacked, label_map):
            pass

    def build_steps(
        self, source: Image, attacked: AttackedVolume, label_map: LabelMap
    ) -> Iterator[str]:
        """:meth:`build`, one layer per step: run each step in its own turn of the event loop.

        Adding a layer to the viewer takes tens of milliseconds (more under a software OpenGL),
        so a caller that yields to the event loop between steps never stalls it for all seven.
        """
        self.attacked = attacked
        self._shown_s0 = None
        grid = source.metadata.get(GRID_KEY)  # File > Save of any output lands on the file grid
        common = {"scale": source.scale, "translate": source.translate}
        metadata = {GRID_KEY: grid} if grid is not None else {}
        colormap = label_colormap(label_map)
        name = source.name
        arrays = attacked.arrays
        makers: dict[str, Callable[[], Layer]] = {
            "I_DV": lambda: Image(
                arrays["I_DV"],
                name=layer_name(name, "I_DV"),
                colormap="gray",
                contrast_limits=source.contrast_limits,
                metadata=dict(metadata),
                **common,
            ),
            "V": lambda: Image(
                arrays["V"],
                name=layer_name(name, "V"),
                colormap="bwr",
                contrast_limits=(-100.0, 100.0),
                metadata=dict(metadata),
                **common,
            ),
            "|D|": lambda: Image(
                arrays["|D|"],
                name=layer_name(name, "|D|"),
                colormap="magma",
                contrast_limits=(0.0, 5.0),
                metadata=dict(metadata),
                **common,
            ),
            "S0": lambda: Labels(
                arrays["S0"],
                name=layer_name(name, "S0"),
                colormap=colormap,
                metadata=dict(metadata),
                **common,
            ),
            "S_DV": lambda: Labels(
                arrays["S_DV"],
                name=layer_name(name, "S_DV"),
                colormap=colormap,
                metadata=dict(metadata),
                **common,
            ),
            "D": lambda: Vectors(
                np.zeros((0, 2, 3), np.float32),
                name=layer_name(name, "D"),
                edge_color="cyan",
                edge_width=0.3,
                length=VECTOR_LENGTH,
                **common,
            ),
            "changed": lambda: Labels(
                arrays["changed"],
                name=layer_name(name, "changed"),
                metadata=dict(metadata),
                **common,
            ),
        }
        for key, make in makers.items():
            layer = self.layers.get(key)
            if layer is None or layer not in self.viewer.layers:
                layer = self.viewer.add_layer(make())
                layer.visible = key not in HIDDEN_AT_START
                self.layers[key] = layer
            elif key == "D":
                layer.data = np.zeros((0, 2, 3), np.float32)
            else:
                layer.data = arrays[key]
                layer.scale, layer.translate = source.scale, source.translate
                layer.metadata = dict(metadata)
            yield key
        self.layers["I_DV"].contrast_limits = source.contrast_limits
        self._link_contrast(source, self.layers["I_DV"])

    def _link_contrast(self, source: Image, attacked: Image) -> None:
        """I_DV follows I0's contrast limits and I0 follows I_DV's (napari layer linking)."""
        if self._linked == (source, attacked):
            return
        if self._linked is not None:
            unlink_layers(self._linked, ("contrast_limits",))
        link_layers([source, attacked], ("contrast_limits",))
        self._linked = (source, attacked)

    def compared_steps(
        self, source: Image, compared: ComparedVolume | None, label_map: LabelMap
    ) -> Iterator[str]:
        """Show a second model's S0 and S_DV as two layers named after it, one per step.

        None removes them. Its S0 is made hidden: the first view adds its S_DV.
        """
        if compared is None:
            self.remove_compared()
            return
        self.compared_volume = compared
        grid = source.metadata.get(GRID_KEY)
        metadata = {GRID_KEY: grid} if grid is not None else {}
        colormap = label_colormap(label_map)
        common = {"scale": source.scale, "translate": source.translate}
        for key in COMPARED_KEYS:
            name = layer_name(source.name, key, compared.name)
            layer = self.compared.get(key)
            if layer is None or layer not in self.viewer.layers:
                layer = Labels(
                    compared.arrays[key],
                    name=name,
                    colormap=colormap,
                    metadata=dict(metadata),
                    **common,
                )
                layer.visible = key != "S0"
                self.compared[key] = self.viewer.add_layer(layer)
            else:
                layer.data, layer.name, layer.colormap = compared.arrays[key], name, colormap
                layer.scale, layer.translate = source.scale, source.translate
                layer.metadata = dict(metadata)
            yield name

    def remove_compared(self) -> None:
        """Remove the second model's layers (and forget its arrays)."""
        layers, self.compared, self.compared_volume = self.compared, {}, None
        for layer in layers.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def owned(self) -> list[Layer]:
        """The layers made here (not offered as inputs)."""
        return [*self.layers.values(), *self.compared.values()]

    def write(self, planes: SlicePlanes, refresh: bool = True) -> None:
        """Copy one attacked slice into the arrays; refresh the layers when it is on screen.

        S0 depends on the slice only, so it is not rewritten while the same slice stays shown.
        """
        if self.attacked is None:
            return
        same_s0 = refresh and self._shown_s0 == planes.index
        self.attacked.write(planes, skip=("S0",) if same_s0 else ())
        compared = planes.attack.compare
        written = compared is not None and self.compared_volume is not None
        if written:
            self.compared_volume.write(planes.index, compared)
        if not refresh:
            return
        for key in planes.planes:
            layer = self.layers.get(key)
            if layer is not None and not (key == "S0" and same_s0):
                layer.refresh(thumbnail=False, extent=False)  # same shape; thumbnails come later
        for layer in self.compared.values() if written else ():
            layer.refresh(thumbnail=False, extent=False)
        self._show_vectors(planes.vectors)
        self._shown_s0 = planes.index
        self.thumbnail_timer.start()

    def _show_vectors(self, vectors: np.ndarray) -> None:
        """Update the arrows of D in place when their grid is unchanged.

        The data setter of a vectors layer recomputes its extent and thumbnail, which took longer
        than the whole attack.
        """
        layer = self.layers.get("D")
        if layer is None:
            return
        if layer.data.shape != vectors.shape:
            layer.data = vectors
            return
        moved = not np.array_equal(layer.data[:, 0], vectors[:, 0])
        layer.data[...] = vectors
        layer.refresh(thumbnail=False, extent=moved)

    def refresh_all(self) -> None:
        """Redraw every layer and its thumbnail (after many slices were written)."""
        self._shown_s0 = None
        for layer in self.owned():
            if layer in self.viewer.layers:
                layer.refresh()

    def refresh_thumbnails(self) -> None:
        """Bring the layer list's thumbnails up to date once a drag has paused."""
        for layer in self.owned():
            if layer in self.viewer.layers:
                layer.refresh(data_displayed=False, highlight=False, extent=False)

    def side_by_side(self, source: Image | None, enabled: bool) -> None:
        """Two grid cells: I0 with S0 over it, and I_DV with S_DV over it."""
        grid = viewer_grid(self.viewer)
        if not enabled:
            grid.enabled = False
            return
        if source is None or not self.layers:
            return
        order = [source, self.layers["S0"], self.layers["I_DV"], self.layers["S_DV"]]
        for layer in self.viewer.layers:
            layer.visible = layer in order
        for layer in order:
            self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
        grid.stride = 2
        grid.shape = (1, 2)
        grid.enabled = True
