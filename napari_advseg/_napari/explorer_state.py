"""The explorer's state: an evented model that the widget binds to (main thread only).

User edits write into the state; the widget, the layers and the slice worker follow its events.
Workers never read it: each job gets the values it needs as arguments when it starts.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.events import EventedModel

from .._resources import default_attacker_name

DEFAULT_ATTACKER = default_attacker_name()
"""The shipped attacker chosen at first."""

IDLE = ""
"""The value of :attr:`ExplorerState.job` when no job runs."""


class ExplorerState(EventedModel):
    """What the explorer shows and does; every field emits ``events.<field>`` when it changes.

    Attributes
    ----------
    image_layer, labels_layer
        Names of the chosen CT layer and its optional labels layer ("" for none).
    seg_model
        A segmentation checkpoint folder or TorchScript file ("" for the shipped U-Net).
    compare_model
        A second model's checkpoint or nnU-Net folder, shown on the same attacks ("" for none).
    attacker
        The attacker checkpoint folder chosen in the list.
    attacker_path
        An attacker checkpoint folder typed by the user (wins over ``attacker`` when set).
    z_d, z_v
        The latents, in prior standard deviations (one slider each).
    use_d, use_v
        Whether the deformation D and the intensity change V are applied.
    temperature
        Scale of the posterior's standard deviation for *Sample*.
    current_slice
        The axial slice on screen.
    loaded
        Whether the models are loaded (a session exists).
    job
        The job running in a worker ("loading models", "attacking all slices", "exporting"), or
        "" when none: one job at a time.
    computing
        Whether the slider's slice attack is running in its worker.
    status
        A line for the user (what happened last).
    export_dir, export_slice_only
        Where *Export* writes, and whether it writes the current slice alone.
    side_by_side
        Whether the viewer shows I0 under S0 next to I_DV under S_DV.
    """

    image_layer: str = ""
    labels_layer: str = ""
    seg_model: str = ""
    compare_model: str = ""
    attacker: str = ""
    attacker_path: str = ""
    z_d: tuple[float, ...] = ()
    z_v: tuple[float, ...] = ()
    use_d: bool = True
    use_v: bool = True
    temperature: float = 1.0
    current_slice: int = 0
    loaded: bool = False
    job: str = IDLE
    computing: bool = False
    status: str = "Choose a CT layer and an attacker, then Start exploring."
    export_dir: str = str(Path.home() / "advseg_export")
    export_slice_only: bool = False
    side_by_side: bool = False

    @property
    def busy(self) -> bool:
        """Whether a job (loading, all slices, export) runs."""
        return self.job != IDLE

    def attacker_folder(self) -> Path | None:
        """The attacker to load: the typed folder, else the chosen one (None if neither)."""
        typed = self.attacker_path.strip()
        if typed:
            return Path(typed).expanduser()
        return Path(self.attacker) if self.attacker else None

    def seg_model_path(self) -> Path | None:
        """The segmentation model to load (None: the shipped U-Net)."""
        typed = self.seg_model.strip()
        return Path(typed).expanduser() if typed else None

    def compare_model_path(self) -> Path | None:
        """The model to compare with (None: no comparison)."""
        typed = self.compare_model.strip()
        return Path(typed).expanduser() if typed else None
