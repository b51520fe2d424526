"""A second segmentation model on the explorer's attacks: the same I_DV, its own S0 and S_DV.

Qt-free. Users harden a model (fine-tune it against its attacker) and compare it with the
original on the very same attacked image. :class:`ComparedModel` takes each attack of an
:class:`~napari_advseg.explorer.ExplorerSession` (``attack_slice(..., compare=...)``) and segments
I0 and I_DV with the second model, fed as its own spec says:

- fed otherwise than f_seg, it gets I_DV in HU on the scan's grid (the scan's slice moved by D
  plus V, as the I_DV layer shows it), normalised with the scan's statistics for its spec, laid
  out, resampled and padded as :func:`~napari_advseg.inference.to_model_grid` does for I0. D, in
  mm on the scan's grid, is brought to its grid likewise to move the reference;
- fed exactly as f_seg (an equal :class:`~napari_advseg.model_spec.ModelSpec`), its grid is
  f_seg's, so it gets the very tensors f_seg was given: I_DV and D on that grid, not resampled
  back and forth.

Its S0 (cached per slice, like f_seg's), S_DV and metrics come from the session's own
:func:`~napari_advseg.explorer.segment_slice` and :func:`~napari_advseg.explorer.slice_metrics`:
Dice on its grid against the ground truth when the scan has labels, else against its own S0.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .data.resample import resize_images
from .data.slices import pad_to_multiple
from .data.volume import Volume
from .errors import InvalidInputError
from .explorer import (
    CACHED_SLICES,
    ExplorerSession,
    GridAttack,
    SegmentedSlice,
    SliceMetrics,
    fast_copy,
    labels_on_source,
    segment_slice,
    slice_metrics,
)
from .inference import ModelGridSlices, labels_to_model_grid, to_model_grid
from .segmentation import SegmentationModel

COMPARED_KEYS = ("S0", "S_DV")
"""The second model's planes, one layer each."""


@dataclass
class ComparedSlice:
    """The second model on one attacked slice: S0 and S_DV on the source grid, its metrics."""

    name: str
    s0: np.ndarray
    s_dv: np.ndarray
    metrics: SliceMetrics


@dataclass
class _Cached:
    image: torch.Tensor  # (1, 1, H', W') padded I0 on the model's device
    segmented: SegmentedSlice


def displacement_to_model(slices: ModelGridSlices, displacement_mm: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) D in mm on the source grid as (N, 2, h, w) pixels of the model's grid.

    Channel 0 is along x, 1 along y, before and after; the result is unpadded. The inverse of
    :meth:`~napari_advseg.inference.ModelGridSlices.displacement_to_source_mm` (up to
    resampling): the layout is applied to the maps and to the vectors, then the model's
    spacing.
    """
    layout = slices.layout
    along_cols, along_rows = displacement_mm[:, 0], displacement_mm[:, 1]
    if layout.transpose:
        along_cols, along_rows = along_rows, along_cols
    if layout.flip_cols:
        along_cols = -along_cols
    if layout.flip_rows:
        along_rows = -along_rows
    maps = layout.apply(torch.stack([along_cols, along_rows], dim=1))
    resized = resize_images(maps, slices.model_shape)
    rows_mm, cols_mm = slices.pixel_spacing
    scale = torch.tensor([cols_mm, rows_mm], dtype=resized.dtype, device=resized.device)
    return resized / scale.view(1, 2, 1, 1)


class ComparedModel:
    """A second model run on the attacks of one :class:`ExplorerSession` (see the module).

    Parameters
    ----------
    seg_model
        The model to compare with f_seg; it must segment the same organs.
    session
        The session whose attacks it is shown.
    cache_size
        How many slices keep the model's S0.

    Raises
    ------
    InvalidInputError
        If it segments other organs than f_seg, or the scan cannot be fed to it.
    ResourceError
        If the scan's slices on its grid do not fit in free memory.
    """

    def __init__(
        self,
        seg_model: SegmentationModel,
        session: ExplorerSession,
        cache_size: int = CACHED_SLICES,
    ) -> None:
        explored = session.seg_model
        organs, explored_organs = seg_model.spec.label_map.names, explored.spec.label_map.names
        if organs != explored_organs:
            raise InvalidInputError(
                f"{seg_model.name} segments {', '.join(organs)} but {explored.name} segments "
                f"{', '.join(explored_organs)}; compare models of the same organs, in that order."
            )
        self.seg_model = seg_model
        self.session = session
        self._seg = fast_copy(seg_model)
        spec = seg_model.spec
        self.same_grid = spec == explored.spec
        volume = session.volume
        if self.same_grid:
            self.slices, self.truth = session.slices, session.truth
        else:
            self.slices = to_model_grid(volume, spec)
            has_truth = session.truth is not None
            self.truth = labels_to_model_grid(volume, spec) if has_truth else None
        lowest = np.asarray([volume.image.min()], np.float32)  # what to_model_grid pads with
        self._pad_value = float(spec.normalization.apply(lowest, self.slices.stats)[0][0])
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, _Cached] = OrderedDict()

    @property
    def name(self) -> str:
        """The model's name (its folder's or file's)."""
        return self.seg_model.name

    def _on_device(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self._seg.device)
        return image.contiguous(memory_format=torch.channels_last)

    def _slice(self, index: int) -> _Cached:
        """The padded I0 and the S0 of slice ``index`` (computed on first use)."""
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        image = self._on_device(self.slices.images[index : index + 1])
        truth = self.truth[index : index + 1] if self.truth is not None else None
        cached = _Cached(image, segment_slice(self._seg, image, self.slices, truth))
        self._cache[index] = cached
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return cached

    def model_input(self, attacked_hu: np.ndarray) -> torch.Tensor:
        """An (H, W) slice in HU on the source grid as this model's padded (1, 1, H', W') input.

        Normalised with the scan's statistics (those of its I0), laid out, resampled and padded
        as :func:`~napari_advseg.inference.to_model_grid` does: the scan's own slice gives the
        model exactly its I0.
        """
        slices, spec = self.slices, self.seg_model.spec
        normalized, _ = spec.normalization.apply(attacked_hu[None], slices.stats)
        laid_out = slices.layout.apply(torch.from_numpy(normalized))[:, None]
        images = resize_images(laid_out, slices.model_shape)
        padded, _ = pad_to_multiple(images, spec.input_multiple, value=self._pad_value)
        return padded

    @torch.no_grad()
    def attack(self, session: ExplorerSession, attack: GridAttack) -> ComparedSlice:
        """The model's S0, S_DV (on the source grid) and metrics for one attack of ``session``.

        Called by :meth:`ExplorerSession.attack_slice`, under its lock.
        """
        if session is not self.session:
            raise InvalidInputError(
                f"{self.name} was prepared for another scan; choose it again to compare."
            )
        cached = self._slice(attack.index)
        if self.same_grid:
            attacked = self._on_device(attack.attacked)
            displacement = self.slices.crop(attack.displacement) if attack.moved else None
        else:
            attacked = self._on_device(self.model_input(attack.attacked_hu))
            displacement = None
            if attack.moved:
                field = torch.from_numpy(np.asarray(attack.displacement_mm, np.float32))[None]
                displacement = displacement_to_model(self.slices, field)
        probabilities = torch.softmax(self._seg(attacked).float(), dim=1)
        metrics = slice_metrics(
            cached.segmented,
            self.slices,
            self.seg_model.spec.label_map,
            self.truth is not None,
            cached.image,
            attacked,
            probabilities,
            displacement,
            attack.p_hu_fov,
        )
        s_dv = labels_on_source(self.slices, probabilities)
        return ComparedSlice(self.name, cached.segmented.s0_source, s_dv, metrics)


def compared_volume_bytes(volume: Volume) -> int:
    """Memory a :class:`ComparedVolume` of ``volume`` takes."""
    return int(volume.image.size) * len(COMPARED_KEYS)


class ComparedVolume:
    """The second model's S0 and S_DV for the whole volume, (z, y, x) uint8 (the layers' data).

    Slices not attacked yet hold zeros.
    """

    def __init__(self, shape: tuple[int, int, int], name: str) -> None:
        self.name = name
        self.arrays = {key: np.zeros(shape, np.uint8) for key in COMPARED_KEYS}

    def write(self, index: int, compared: ComparedSlice) -> None:
        """Copy one slice's S0 and S_DV in."""
        self.arrays["S0"][index] = compared.s0
        self.arrays["S_DV"][index] = compared.s_dv
