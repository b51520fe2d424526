"""Evaluating an attack on volumes (section 4): Dice before and after, the 30 % rule, p.

Everything is measured on f_seg's grid (normalised slices at its pixel spacing; padding cropped
off), except ``p_hu_fov``: mean |I_DV - I0| in Hounsfield units over the scan's own slices, with
D and V applied to the scan at its own resolution (:func:`batch_on_source`). The reference is the
ground truth when a volume has labels, else S0 (f_seg's own answer on I0). Dice of S_DV is
reported against two references, labelled as such:

- ``original``: the reference itself, as in the paper's Table 1;
- ``warped``: the reference moved by D (soft warp of its one-hot map, then argmax), the
  anatomy-consistent reference: a deformation moves the organs, so a correct segmentation of
  I_DV is the moved one.

Cohort figures are means over subjects of 3D Dice; the decrease of an organ is
``100 * (Dice(S0) - Dice(S_DV)) / Dice(S0)`` on those means, and an attack succeeds on the organ
when the decrease is at least 30 % (the paper's rule).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..class_map import class_map
from ..data.slices import Crop
from ..data.volume import Volume
from ..inference import ModelGridSlices, labels_to_model_grid, to_model_grid
from ..nets.warp import warp
from ..segmentation import SegmentationModel
from .attack_metrics import folding_fraction, max_displacement, perceptibility, ssim
from .attacks import AttackMethod
from .metrics import dice_per_label, mean_dice

SUCCESS_DECREASE = 30.0
"""An attack succeeds on an organ when its Dice decreases by at least this many percent."""


@dataclass
class SliceBatch:
    """One batch of attacked slices on f_seg's grid, padding cropped off."""

    image: torch.Tensor
    displacement: torch.Tensor
    intensity: torch.Tensor
    attacked: torch.Tensor
    s0: torch.Tensor
    s_dv: torch.Tensor
    probabilities_s0: torch.Tensor
    probabilities_dv: torch.Tensor


def attack_slices(
    seg_model: SegmentationModel, method: AttackMethod, grid: ModelGridSlices, batch_size: int = 16
) -> Iterator[SliceBatch]:
    """Attack every slice of a volume on f_seg's grid, batch by batch."""
    device = seg_model.device
    for start in range(0, grid.images.shape[0], batch_size):
        images = grid.images[start : start + batch_size].to(device)
        displacement, intensity = method(images)
        with torch.no_grad():
            attacked = warp(images, displacement) + intensity
            p0 = torch.softmax(seg_model(images).float(), dim=1)
            pdv = torch.softmax(seg_model(attacked).float(), dim=1)
        crop: Crop = grid.crop
        yield SliceBatch(
            crop(images).cpu(),
            crop(displacement).cpu(),
            crop(intensity).cpu(),
            crop(attacked).cpu(),
            class_map(crop(p0)).cpu(),
            class_map(crop(pdv)).cpu(),
            crop(p0).cpu(),
            crop(pdv).cpu(),
        )


def unpadded(grid: ModelGridSlices) -> ModelGridSlices:
    """``grid`` for maps already cropped to the unpadded slice (those of a :class:`SliceBatch`)."""
    return replace(grid, crop=Crop(slice(None), slice(None)))


def warp_on_source(
    image_hu: torch.Tensor, displacement_mm: torch.Tensor, spacing: tuple[float, float]
) -> torch.Tensor:
    """Move (N, H, W) slices by a (N, 2, H, W) field in mm (channel 0 along x), on their grid.

    ``spacing`` is the slices' (rows, columns) pixel size in mm. A slice whose field is exactly
    zero is returned as it is, not interpolated.
    """
    moving = displacement_mm.flatten(1).ne(0).any(dim=1)
    if not bool(moving.any()):
        return image_hu
    spacing_y, spacing_x = spacing
    scale = torch.tensor([spacing_x, spacing_y], dtype=displacement_mm.dtype)
    pixels = displacement_mm[moving] / scale.to(displacement_mm.device).view(1, 2, 1, 1)
    moved = image_hu.clone()
    moved[moving] = warp(image_hu[moving][:, None], pixels.to(image_hu.dtype))[:, 0]
    return moved


def batch_on_source(
    batch: SliceBatch, grid: ModelGridSlices, image_hu: torch.Tensor, spacing: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """I_DV (HU), D (mm) and V (HU) of a batch on the source grid, with D and V applied there.

    ``image_hu`` holds the batch's (N, H, W) source slices in HU, canonical layout, and
    ``spacing`` their (rows, columns) pixel size in mm. D and V are resampled to the source grid
    (the model's layout undone), D converted to source pixels and V to HU (V * std), and
    ``I_DV = warp(I0, D) + V`` there: nothing is clipped, and a zero attack gives I0 exactly.
    Returns (N, H, W), (N, 2, H, W) and (N, H, W) tensors.
    """
    whole = unpadded(grid)
    displacement_mm = whole.displacement_to_source_mm(batch.displacement)
    intensity_hu = whole.to_source(batch.intensity)[:, 0] * grid.stats.std
    attacked_hu = warp_on_source(image_hu, displacement_mm, spacing) + intensity_hu
    return attacked_hu, displacement_mm, intensity_hu


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Move a label map with D: bilinear warp of its one-hot map, then argmax."""
    one_hot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return class_map(warp(one_hot, displacement))


def dice_decrease(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, float | None]:
    """Relative decrease (%) per organ; ``None`` where the Dice before is 0 or undefined."""
    return {
        organ: None if not value or after[organ] is None else 100.0 * (value - after[organ]) / value
        for organ, value in before.items()
    }


def attack_success(decrease: dict[str, float | None]) -> dict[str, bool | None]:
    """Whether each organ's Dice fell by at least :data:`SUCCESS_DECREASE` percent."""
    return {organ: None if v is None else v >= SUCCESS_DECREASE for organ, v in decrease.items()}


@dataclass
class SubjectResult:
    """One subject: 3D Dice per organ and the attack's per-slice measures averaged.

    ``p`` is in normalised units on f_seg's grid; ``p_hu_fov`` in HU over the scan's own slices.
    """

    subject: str
    dice_s0: dict[str, float | None]
    dice_dv: dict[str, float | None]
    dice_dv_warped: dict[str, float | None]
    p: float
    p_hu_fov: float
    max_displacement: float
    folding: float
    ssim: float


@dataclass
class AttackReport:
    """An attack's evaluation on a cohort."""

    method: str
    reference: str
    organs: list[str]
    subjects: list[SubjectResult] = field(default_factory=list)
    seconds: float = 0.0
    slices: int = 0

    def summary(self) -> dict[str, Any]:
        """Cohort means, decreases (%) and success per organ, for both references."""
        s0 = mean_dice([s.dice_s0 for s in self.subjects], self.organs)
        dv = mean_dice([s.dice_dv for s in self.subjects], self.organs)
        dv_warped = mean_dice([s.dice_dv_warped for s in self.subjects], self.organs)

        drop, drop_warped = dice_decrease(s0, dv), dice_decrease(s0, dv_warped)

        return {
            "method": self.method,
            "reference": self.reference,
            "dice_s0": s0,
            "dice": dv,
            "dice_warped": dv_warped,
            "decrease": drop,
            "decrease_warped": drop_warped,
            "success": attack_success(drop),
            "success_warped": attack_success(drop_warped),
            "p": float(np.mean([s.p for s in self.subjects])),
            "p_hu_fov": float(np.mean([s.p_hu_fov for s in self.subjects])),
            "max_displacement": float(np.max([s.max_displacement for s in self.subjects])),
            "folding": float(np.mean([s.folding for s in self.subjects])),
            "ssim": float(np.mean([s.ssim for s in self.subjects])),
            "seconds": self.seconds,
            "slices": self.slices,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the per-subject rows."""
        return {**self.summary(), "subjects": [asdict(s) for s in self.subjects]}


def evaluate_attack(
    seg_model: SegmentationModel,
    method: AttackMethod,
    volumes: Sequence[Volume],
    batch_size: int = 16,
) -> AttackReport:
    """Attack every slice of every volume and measure the damage; see the module docstring.

    ``volumes`` is read once, in order, one volume at a time, so a :class:`LazyVolumes` cohort
    is evaluated holding one volume and the per-subject results. A volume with labels is measured
    against them, one without against S0; :attr:`AttackReport.reference` says which.
    """
    spec = seg_model.spec
    organs = spec.label_map.names
    report = AttackReport(method.name, "S0", organs)
    references: set[str] = set()
    for volume in volumes:
        has_truth = volume.labels is not None and bool(volume.labels.any())
        references.add("ground truth" if has_truth else "S0")
        report.reference = (
            next(iter(references)) if len(references) == 1 else "ground truth where given, else S0"
        )
        grid = to_model_grid(volume, spec)
        truth = labels_to_model_grid(volume, spec) if has_truth else None
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("ref", "ref_w", "s0", "dv")}
        keys = ("p", "p_hu", "max_d", "fold", "ssim")
        per_slice: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        spacing = (volume.spacing[1], volume.spacing[2])
        start = 0
        tick = time.perf_counter()
        for batch in attack_slices(seg_model, method, grid, batch_size):
            count = batch.image.shape[0]
            reference = truth[start : start + count] if truth is not None else batch.s0
            image_hu = torch.from_numpy(np.asarray(volume.image[start : start + count], np.float32))
            attacked_hu, _, _ = batch_on_source(batch, grid, image_hu, spacing)
            per_slice["p_hu"].append(perceptibility(attacked_hu, image_hu))
            start += count
            parts["ref"].append(reference)
            parts["ref_w"].append(
                warp_labels(reference, batch.displacement, spec.label_map.num_classes)
            )
            parts["s0"].append(batch.s0)
            parts["dv"].append(batch.s_dv)
            per_slice["p"].append(perceptibility(batch.attacked, batch.image))
            per_slice["max_d"].append(max_displacement(batch.displacement))
            per_slice["fold"].append(folding_fraction(batch.displacement))
            data_range = batch.image.flatten(1).amax(1) - batch.image.flatten(1).amin(1)
            per_slice["ssim"].append(ssim(batch.attacked, batch.image, data_range.clamp_min(1e-6)))
        report.seconds += time.perf_counter() - tick
        report.slices += start
        ref, ref_w, s0, dv = (torch.cat(parts[k]).numpy() for k in ("ref", "ref_w", "s0", "dv"))
        values = {k: torch.cat(v) for k, v in per_slice.items()}
        report.subjects.append(
            SubjectResult(
                subject=volume.name,
                dice_s0=dice_per_label(s0, ref, spec.label_map),
                dice_dv=dice_per_label(dv, ref, spec.label_map),
                dice_dv_warped=dice_per_label(dv, ref_w, spec.label_map),
                p=float(values["p"].mean()),
                p_hu_fov=float(values["p_hu"].double().mean()),
                max_displacement=float(values["max_d"].max()),
                folding=float(values["fold"].mean()),
                ssim=float(values["ssim"].mean()),
            )
        )
    return report
