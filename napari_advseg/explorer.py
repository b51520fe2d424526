"""The state behind the latent-space explorer: one volume, f_seg, an attacker, slice by slice.

Qt-free, so the napari widget stays thin: it turns slider values into :meth:`attack_slice`
calls (in a worker thread) and the returned arrays into layers (on the main thread).

What does not depend on the latents is computed once per slice and cached (a bounded number of
slices): the encoder's features and posterior, f_seg's answer S0 on I0 (on f_seg's grid and on
the source grid), the reference and the Dice of S0. Moving a latent slider then only decodes,
warps, segments I_DV, brings D, V and S_DV back to the source grid and applies D and V to the
scan there (at its own resolution, so a zero attack returns the scan itself). A lock serialises
the calls, so a worker thread and the main thread may share a session.

A second model can be shown on the same attacks (:mod:`napari_advseg.explorer_compare`): pass it
to :meth:`ExplorerSession.attack_slice`; it is segmented and scored as f_seg is, by
:func:`segment_slice` and :func:`slice_metrics`.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .class_map import class_map
from .data.volume import Volume
from .errors import InvalidInputError
from .evaluation.attack_eval import attack_success, dice_decrease, warp_labels, warp_on_source
from .evaluation.metrics import dice_per_label
from .inference import ModelGridSlices, labels_to_model_grid, to_model_grid
from .labels import LabelMap
from .nets.attacker import Encoding
from .nets.warp import warp
from .segmentation import SegmentationModel
from .training.attacker_io import LoadedAttacker

if TYPE_CHECKING:
    from .explorer_compare import ComparedModel, ComparedSlice

CACHED_SLICES = 32
"""How many slices keep their latent-independent results (features, S0) in memory."""


def fast_network(network: torch.nn.Module) -> torch.nn.Module:
    """A channels-last copy of a plain torch network (faster convolutions on CPU).

    TorchScript and other modules that refuse the copy or the layout are returned as they are.
    """
    if isinstance(network, torch.jit.ScriptModule):
        return network
    try:
        return copy.deepcopy(network).to(memory_format=torch.channels_last).eval()
    except Exception:  # a user's module may refuse to be copied: use it as it is
        return network


def fast_copy(seg_model: SegmentationModel) -> SegmentationModel:
    """``seg_model`` with its network in the channels-last layout; the original is unchanged."""
    network = fast_network(seg_model.network)
    if network is seg_model.network:
        return seg_model
    fast = copy.copy(seg_model)
    fast.network = network
    return fast


@dataclass
class SliceMetrics:
    """Per organ: Dice of S0 and S_DV against the reference and the warped reference; p.

    ``p`` is mean |I_DV - I0| in normalised units on f_seg's grid, ``p_hu_fov`` the same in
    Hounsfield units over the slice on the scan's own grid.
    """

    reference: str
    dice_s0: dict[str, float | None]
    dice_dv: dict[str, float | None]
    dice_dv_warped: dict[str, float | None]
    p: float
    p_hu_fov: float

    def decrease(self, warped: bool = True) -> dict[str, float | None]:
        """Relative Dice decrease (%) per organ; ``None`` where S0's Dice is 0 or undefined."""
        return dice_decrease(self.dice_s0, self.dice_dv_warped if warped else self.dice_dv)

    def success(self, warped: bool = True) -> dict[str, bool | None]:
        """Whether each organ's Dice fell by at least 30 %."""
        return attack_success(self.decrease(warped))


@dataclass
class SliceAttack:
    """One attacked slice on the volume's own grid (2D arrays, rows x columns).

    ``compare``: a second model's S0, S_DV and metrics on the same I_DV, when one was given.
    """

    index: int
    attacked_hu: np.ndarray
    displacement_mm: np.ndarray
    intensity_hu: np.ndarray
    s0: np.ndarray
    s_dv: np.ndarray
    metrics: SliceMetrics
    compare: ComparedSlice | None = None


@dataclass
class GridAttack:
    """One attack as f_seg met it, for a second model (tensors on f_seg's padded grid)."""

    index: int
    attacked: torch.Tensor  # (1, 1, H', W') I_DV, normalised
    displacement: torch.Tensor  # (1, 2, H', W') D in f_seg's pixels
    moved: bool  # whether D was applied (else it is zero)
    attacked_hu: np.ndarray  # (H, W) I_DV in HU on the source grid
    displacement_mm: np.ndarray  # (2, H, W) D in mm on the source grid
    p_hu_fov: float


@dataclass
class SegmentedSlice:
    """One model's answer on I0 of one slice: what every attack of the slice is scored with."""

    s0_model: torch.Tensor  # (1, h, w) S0 on the model's grid, cropped, CPU
    s0_source: np.ndarray  # (H, W) uint8 S0 on the source grid
    reference: torch.Tensor  # (1, h, w) ground truth (or S0) on the model's grid, CPU
    dice_s0: dict[str, float | None]


def labels_on_source(slices: ModelGridSlices, probabilities: torch.Tensor) -> np.ndarray:
    """Argmax of padded (1, C, H', W') probabilities brought back to the source grid."""
    source = slices.to_source(probabilities.cpu())
    return class_map(source)[0].numpy().astype(np.uint8)


def segment_slice(
    seg: SegmentationModel,
    image: torch.Tensor,
    slices: ModelGridSlices,
    truth: torch.Tensor | None,
) -> SegmentedSlice:
    """S0 of ``seg`` on a padded (1, 1, H', W') I0 and its Dice against ``truth`` (else S0).

    ``truth`` is the slice's (1, h, w) ground truth on the model's grid, or None.
    """
    probabilities = torch.softmax(seg(image).float(), dim=1)
    s0_model = class_map(slices.crop(probabilities)).cpu()
    reference = truth if truth is not None else s0_model
    dice_s0 = dice_per_label(s0_model.numpy(), reference.numpy(), seg.spec.label_map)
    return SegmentedSlice(s0_model, labels_on_source(slices, probabilities), reference, dice_s0)


def slice_metrics(
    segmented: SegmentedSlice,
    slices: ModelGridSlices,
    label_map: LabelMap,
    has_truth: bool,
    image: torch.Tensor,
    attacked: torch.Tensor,
    probabilities: torch.Tensor,
    displacement: torch.Tensor | None,
    p_hu_fov: float,
) -> SliceMetrics:
    """Dice and p on the model's grid, padding cropped off, with ``p_hu_fov`` as given.

    ``image``, ``attacked`` and ``probabilities`` are padded; ``displacement`` is D on the
    model's grid, cropped, in its pixels (None: D is zero, so the reference does not move).
    """
    crop = slices.crop
    s_dv = class_map(crop(probabilities)).cpu().numpy()
    reference = segmented.reference
    if displacement is not None:
        warped_reference = warp_labels(reference, displacement.cpu(), label_map.num_classes)
    else:
        warped_reference = reference  # warping by zero is the identity
    return SliceMetrics(
        "ground truth" if has_truth else "S0",
        segmented.dice_s0,
        dice_per_label(s_dv, reference.numpy(), label_map),
        dice_per_label(s_dv, warped_reference.numpy(), label_map),
        p=float((crop(attacked) - crop(image)).abs().mean()),
        p_hu_fov=p_hu_fov,
    )


@dataclass
class _SliceCache:
    """What one slice needs for every attack, whatever the latents."""

    image: torch.Tensor  # (1, 1, H', W') padded I0 on the model's device
    encoding: Encoding
    segmented: SegmentedSlice


class ExplorerSession:
    """Generate attacks on single slices of ``volume`` for chosen latents.

    Parameters
    ----------
    seg_model
        The frozen network under attack.
    attacker
        A loaded attacker trained for ``seg_model``'s grid.
    volume
        The CT volume (and optionally its labels).
    cache_size
        How many slices keep their latent-independent results.
    """

    def __init__(
        self,
        seg_model: SegmentationModel,
        attacker: LoadedAttacker,
        volume: Volume,
        cache_size: int = CACHED_SLICES,
    ) -> None:
        self.seg_model = seg_model
        self.loaded = attacker
        self.volume = volume
        self._seg = fast_copy(seg_model)
        self._attacker = fast_network(attacker.attacker)
        self.slices = to_model_grid(volume, seg_model.spec)
        has_truth = volume.labels is not None and bool(volume.labels.any())
        self.truth = labels_to_model_grid(volume, seg_model.spec) if has_truth else None
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[int, _SliceCache] = OrderedDict()
        self._lock = threading.RLock()
        stride = attacker.attacker.config.stride
        if self.slices.images.shape[-1] % stride or self.slices.images.shape[-2] % stride:
            raise InvalidInputError(
                f"The attacker needs slices padded to {stride} pixels but f_seg pads to "
                f"{seg_model.spec.input_multiple}; use an attacker trained for this model."
            )

    @property
    def num_slices(self) -> int:
        """Number of axial slices."""
        return self.volume.num_slices

    @property
    def latent_dims(self) -> tuple[int, int]:
        """Dimensions of z_D and z_V (one slider each)."""
        config = self.loaded.attacker.config
        return config.latent_dim_d, config.latent_dim_v

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_slices:
            raise InvalidInputError(
                f"Slice {index} is outside the volume's {self.num_slices} slices."
            )

    @torch.no_grad()
    def _slice(self, index: int) -> _SliceCache:
        """The cached, latent-independent results of slice ``index`` (computed on first use)."""
        self._check(index)
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        device = self._seg.device
        image = self.slices.images[index : index + 1].to(device)
        image = image.contiguous(memory_format=torch.channels_last)
        encoding = self._attacker.encode(image)
        truth = self.truth[index : index + 1] if self.truth is not None else None
        cached = _SliceCache(image, encoding, segment_slice(self._seg, image, self.slices, truth))
        self._cache[index] = cached
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return cached

    def encoding(self, index: int) -> Encoding:
        """The encoder's features and posterior for slice ``index`` (cached)."""
        with self._lock:
            return self._slice(index).encoding

    def s0(self, index: int) -> np.ndarray:
        """f_seg's labels on I0 for slice ``index``, on the source grid (cached)."""
        with self._lock:
            return self._slice(index).segmented.s0_source

    def posterior_mean(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The posterior means of z_D and z_V for slice ``index``."""
        posterior = self.encoding(index).posterior
        return posterior.mu_d[0].cpu().numpy(), posterior.mu_v[0].cpu().numpy()

    def sample(
        self, index: int, seed: int, temperature: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random posterior draw of (z_D, z_V) for slice ``index``."""
        generator = torch.Generator().manual_seed(seed)
        z_d, z_v = self._attacker.sample_latents(
            self.encoding(index).posterior, "posterior", temperature, generator
        )
        return z_d[0].cpu().numpy(), z_v[0].cpu().numpy()

    def _fields(
        self,
        cached: _SliceCache,
        z_d: np.ndarray,
        z_v: np.ndarray,
        use_d: bool,
        use_v: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """D and V on the padded model grid; a field switched off is zero and not decoded."""
        attacker = self._attacker
        image = cached.image
        size = tuple(image.shape[-2:])
        mode = attacker.config.mode
        if use_d and mode != "v":
            z = torch.as_tensor(np.asarray(z_d, np.float32), device=image.device)[None]
            displacement = attacker.decoder_d(cached.encoding.features, z, size)
        else:
            displacement = image.new_zeros(1, 2, *size)
        if use_v and mode != "d":
            z = torch.as_tensor(np.asarray(z_v, np.float32), device=image.device)[None]
            intensity = attacker.decoder_v(cached.encoding.features, z, size)
        else:
            intensity = image.new_zeros(1, 1, *size)
        return displacement, intensity

    @torch.no_grad()
    def attack_slice(
        self,
        index: int,
        z_d: np.ndarray,
        z_v: np.ndarray,
        use_d: bool = True,
        use_v: bool = True,
        compare: ComparedModel | None = None,
    ) -> SliceAttack:
        """D, V, I_DV, S0, S_DV and the metrics of slice ``index`` for the given latents.

        Equal (up to float rounding) to attacking the slice with :meth:`Attacker.decode` and
        bringing the batch back with :func:`napari_advseg.attack.to_source_grid` (the fields
        switched off are zero), but a field switched off is not decoded, a zero D does not warp,
        S0 comes from the cache, and the networks run in the channels-last layout (about a
        quarter faster on CPU). I_DV in HU is the scan's slice warped by D at its own resolution
        plus V in HU: with D = 0 and V = 0 it is the scan's slice, voxel for voxel.

        ``compare``: a second model made for this session, run on the same I_DV
        (:attr:`SliceAttack.compare`).
        """
        with self._lock:
            cached = self._slice(index)
            displacement, intensity = self._fields(cached, z_d, z_v, use_d, use_v)
            moved = use_d and self.loaded.attacker.config.mode != "v"
            image = cached.image
            attacked = (warp(image, displacement) if moved else image) + intensity
            probabilities = torch.softmax(self._seg(attacked).float(), dim=1)
            attacked_hu, displacement_mm, intensity_hu, s_dv = self._on_source(
                index, displacement, intensity, probabilities
            )
            p_hu_fov = float(np.abs(attacked_hu - self.volume.image[index]).mean(dtype=np.float64))
            metrics = slice_metrics(
                cached.segmented,
                self.slices,
                self.seg_model.spec.label_map,
                self.truth is not None,
                image,
                attacked,
                probabilities,
                self.slices.crop(displacement) if moved else None,
                p_hu_fov,
            )
            compared = None
            if compare is not None:
                grid_attack = GridAttack(
                    index, attacked, displacement, moved, attacked_hu, displacement_mm, p_hu_fov
                )
                compared = compare.attack(self, grid_attack)
            return SliceAttack(
                index=index,
                attacked_hu=attacked_hu,
                displacement_mm=displacement_mm,
                intensity_hu=intensity_hu,
                s0=cached.segmented.s0_source,
                s_dv=s_dv,
                metrics=metrics,
                compare=compared,
            )

    def _on_source(
        self,
        index: int,
        displacement: torch.Tensor,
        intensity: torch.Tensor,
        probabilities: torch.Tensor,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """I_DV (HU), D (mm), V (HU) and S_DV of slice ``index`` on the source grid.

        D, V and the probabilities go back to the source grid (the model's layout undone); D and
        V are then applied to the scan's slice there.
        """
        grid = self.slices
        displacement_mm = grid.displacement_to_source_mm(displacement.cpu())
        maps = grid.to_source(torch.cat([intensity, probabilities], 1).cpu())
        intensity_hu = maps[:, 0] * grid.stats.std
        image_hu = torch.from_numpy(np.asarray(self.volume.image[index : index + 1], np.float32))
        spacing = (self.volume.spacing[1], self.volume.spacing[2])
        attacked_hu = warp_on_source(image_hu, displacement_mm, spacing) + intensity_hu
        return (
            attacked_hu[0].numpy(),
            displacement_mm[0].numpy(),
            intensity_hu[0].numpy(),
            class_map(maps[:, 1:])[0].numpy().astype(np.uint8),
        )
