"""Evaluating an attack on volumes (section 4): Dice before and after, the 30 % rule, p.

``p`` (eq. 7: mean |I_DV - I0| in normalised units over the whole field of view, the paper's
Table 1), ``max_displacement`` (model pixels), ``folding`` and ``ssim`` are measured on f_seg's
grid (normalised slices at its pixel spacing; padding cropped off). On the scan's own slices,
with D and V applied to the scan at its own resolution (:func:`batch_on_source`):

- Dice: S0 and S_DV are f_seg's probabilities resampled to the scan's grid, then argmax, as
  ``eval-seg`` scores (so Table 1's U-Net row is ``eval-seg``'s Dice); the reference is the
  scan's own labels, moved by D converted to the scan's pixels;
- ``p_hu_fov``: mean |I_DV - I0| in Hounsfield units over every voxel;
- ``p_hu_body``: the same over the body only (:func:`.body_mask.body_mask`: per slice, the
  largest connected component above -500 HU with its holes filled), so that a change in the air
  around the patient does not count;
- ``max_displacement_body``: the largest |D| in the body, mm;
- ``folding_body``: the fraction of the body's pixels where D folds (Jacobian determinant <= 0).

The reference R is the ground truth when a volume has labels, else S0 (f_seg's own answer on
I0). Dice of S0 is scored against R; Dice of S_DV against two references, labelled as such:

- ``warped``: R moved by D (soft warp of its one-hot map, then argmax), the anatomy-consistent
  reference: a deformation moves the organs, so a correct segmentation of I_DV is the moved one;
- ``original``: R itself, as in the paper's Table 1.

Per subject, Dice is 3D over its slices. The cohort's decrease and success per organ follow the
one rule of :mod:`.decrease`: paired over the subjects where both Dice values are defined
(missing is never 0), ``100 * (mean before - mean after) / mean before``, success at 30 %.
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
from ..inference import ModelGridSlices, to_model_grid
from ..nets.warp import warp
from ..segmentation import SegmentationModel
from ..training.distributed import SINGLE, World, current_world
from .attack_metrics import (
    folding_fraction,
    masked_abs_sum,
    masked_folding,
    masked_max_displacement,
    max_displacement,
    perceptibility,
    ssim,
)
from .attacks import AttackMethod, attacked_images
from .body_mask import body_mask
from .decrease import SUCCESS_DECREASE, OrganDecrease, decreases, paired_decrease, successes
from .metrics import dice_per_label, mean_dice

__all__ = [
    "SUCCESS_DECREASE",
    "AttackReport",
    "SliceBatch",
    "SourceSlices",
    "SubjectResult",
    "attack_slices",
    "attack_success",
    "batch_on_source",
    "dice_decrease",
    "evaluate_attack",
    "fields_on_source",
    "source_slices",
    "unpadded",
    "warp_labels",
    "warp_on_source",
]


@dataclass
class SourceSlices:
    """A batch's slices on the scan's own grid, where the HU and body measures are taken.

    Attributes
    ----------
    grid
        The volume's slices on f_seg's grid (padded, with its crop): how fields laid out as an
        attack returns them reach the scan.
    image_hu
        (N, H, W) source slices in HU, canonical layout.
    body
        (N, H, W) their body (:func:`.body_mask.body_mask`).
    spacing
        The slices' (rows, columns) pixel size in mm.
    """

    grid: ModelGridSlices
    image_hu: torch.Tensor
    body: torch.Tensor
    spacing: tuple[float, float]

    @property
    def crop(self) -> Crop:
        """Where the unpadded slice lies in the padded model-grid slices."""
        return self.grid.crop

    @property
    def body_pixels(self) -> int:
        """How many source pixels of the batch lie in the body."""
        return int(self.body.sum())

    def on_source(
        self, displacement: torch.Tensor, intensity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """I_DV (HU), D (mm) and V (HU) on the scan for padded (D, V) as an attack returns them."""
        return fields_on_source(
            self.grid, displacement.cpu(), intensity.cpu(), self.image_hu, self.spacing
        )

    def p_hu_body(self, displacement: torch.Tensor, intensity: torch.Tensor) -> float | None:
        """Mean |I_DV - I0| in HU over the batch's body voxels (None where there are none).

        The evaluation's ``p_hu_body`` of the same fields, voxel for voxel.
        """
        count = self.body_pixels
        if count == 0:
            return None
        attacked, _, _ = self.on_source(displacement, intensity)
        return masked_abs_sum(attacked, self.image_hu, self.body) / count


@dataclass
class SliceBatch:
    """One batch of attacked slices on f_seg's grid, padding cropped off.

    ``source`` holds the batch's scan slices and body where :func:`attack_slices` was given the
    volume.
    """

    image: torch.Tensor
    displacement: torch.Tensor
    intensity: torch.Tensor
    attacked: torch.Tensor
    s0: torch.Tensor
    s_dv: torch.Tensor
    probabilities_s0: torch.Tensor
    probabilities_dv: torch.Tensor
    source: SourceSlices | None = None


def source_slices(volume: Volume, grid: ModelGridSlices, start: int, stop: int) -> SourceSlices:
    """Slices ``start:stop`` of ``volume`` on its own grid, with their body."""
    image_hu = torch.from_numpy(np.asarray(volume.image[start:stop], np.float32))
    body = torch.from_numpy(body_mask(image_hu.numpy()))
    return SourceSlices(grid, image_hu, body, (volume.spacing[1], volume.spacing[2]))


def attack_slices(
    seg_model: SegmentationModel,
    method: AttackMethod,
    grid: ModelGridSlices,
    batch_size: int = 16,
    volume: Volume | None = None,
) -> Iterator[SliceBatch]:
    """Attack every slice of a volume on f_seg's grid, batch by batch.

    With ``volume`` (the volume ``grid`` was made from), each batch carries its scan slices and
    body (:class:`SourceSlices`), and a method with ``uses_source`` is given them as ``source``.
    """
    device = seg_model.device
    for start in range(0, grid.images.shape[0], batch_size):
        images = grid.images[start : start + batch_size].to(device)
        source = None
        if volume is not None:
            source = source_slices(volume, grid, start, start + images.shape[0])
        if source is not None and getattr(method, "uses_source", False):
            displacement, intensity = method(images, source=source)  # type: ignore[call-arg]
        else:
            displacement, intensity = method(images)
        with torch.no_grad():
            attacked = attacked_images(images, displacement, intensity)
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
            source,
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
    pixels = displacement_mm[moving] / _spacing_xy(spacing, displacement_mm)
    moved = image_hu.clone()
    moved[moving] = warp(image_hu[moving][:, None], pixels.to(image_hu.dtype))[:, 0]
    return moved


def _spacing_xy(spacing: tuple[float, float], like: torch.Tensor) -> torch.Tensor:
    """(1, 2, 1, 1): the columns' then the rows' pixel size, to turn mm along (x, y) to pixels."""
    spacing_y, spacing_x = spacing
    scale = torch.tensor([spacing_x, spacing_y], dtype=like.dtype, device=like.device)
    return scale.view(1, 2, 1, 1)


def fields_on_source(
    grid: ModelGridSlices,
    displacement: torch.Tensor,
    intensity: torch.Tensor,
    image_hu: torch.Tensor,
    spacing: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """I_DV (HU), D (mm) and V (HU) on the source grid for fields laid out on ``grid``.

    ``displacement`` (N, 2, H', W') in model pixels and ``intensity`` (N, 1, H', W') are cropped
    by ``grid.crop`` (use :func:`unpadded` for fields already cropped), resampled to the source
    grid (the model's layout undone), D converted to mm and V to HU (V * std), and
    ``I_DV = warp(I0, D) + V`` there: nothing is clipped, and a zero attack gives I0 exactly.
    """
    displacement_mm = grid.displacement_to_source_mm(displacement)
    intensity_hu = grid.to_source(intensity)[:, 0] * grid.stats.std
    attacked_hu = warp_on_source(image_hu, displacement_mm, spacing) + intensity_hu
    return attacked_hu, displacement_mm, intensity_hu


def batch_on_source(
    batch: SliceBatch, grid: ModelGridSlices, image_hu: torch.Tensor, spacing: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """I_DV (HU), D (mm) and V (HU) of a batch on the source grid, with D and V applied there.

    ``image_hu`` holds the batch's (N, H, W) source slices in HU, canonical layout, and
    ``spacing`` their (rows, columns) pixel size in mm; see :func:`fields_on_source`.
    Returns (N, H, W), (N, 2, H, W) and (N, H, W) tensors.
    """
    return fields_on_source(unpadded(grid), batch.displacement, batch.intensity, image_hu, spacing)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Move a label map with D: bilinear warp of its one-hot map, then argmax."""
    one_hot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return class_map(warp(one_hot, displacement))


def dice_decrease(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, float | None]:
    """One subject's decrease (%) per organ, by :func:`.decrease.paired_decrease`.

    ``None`` where either Dice is undefined or the Dice before is 0.
    """
    return decreases(paired_decrease([before], [after], before.keys()))


def attack_success(decrease: dict[str, float | None]) -> dict[str, bool | None]:
    """Whether each organ's Dice fell by at least :data:`SUCCESS_DECREASE` percent."""
    return {organ: OrganDecrease(None, None, v, 1).success for organ, v in decrease.items()}


@dataclass
class SubjectResult:
    """One subject: 3D Dice per organ and the attack's measures (see the module docstring).

    ``p`` is in normalised units on f_seg's grid (mean over slices), ``max_displacement`` in
    model pixels (largest over slices), ``folding`` and ``ssim`` means over slices on f_seg's
    grid. ``p_hu_fov`` (HU, every voxel), ``p_hu_body`` (HU, the body's voxels pooled),
    ``max_displacement_body`` (mm) and ``folding_body`` (fraction of the body's pixels) are on
    the scan's own grid; the body ones are None for a scan with no body at all.
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
    p_hu_body: float | None = None
    max_displacement_body: float | None = None
    folding_body: float | None = None


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _max(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.max(defined)) if defined else None


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
        """Cohort figures: Dice, paired decreases (%) and success per organ, and the measures.

        Dice, by organ: ``dice_s0`` is the mean over the subjects where it is defined (f_seg's
        own row); ``dice`` (S_DV against R) and ``dice_warped`` (against R moved by D) are the
        means over the subjects paired with S0 (:func:`.decrease.paired_decrease`), whose S0
        means are ``dice_s0_paired`` and ``dice_s0_paired_warped`` and whose counts are
        ``subjects_paired`` and ``subjects_paired_warped``; ``decrease``/``decrease_warped``
        (%) and ``success``/``success_warped`` come from those pairs.

        Measures, means over subjects unless said: ``p`` (normalised, f_seg's grid), ``p_hu_fov``
        (HU, every voxel of the scan), ``p_hu_body`` (HU, the body), ``max_displacement`` (model
        pixels, the largest), ``max_displacement_body`` (mm on the scan, the largest),
        ``folding`` (fraction of f_seg's pixels), ``folding_body`` (fraction of the body's
        pixels), ``ssim``; ``seconds`` and ``slices`` of the whole evaluation.
        """
        before = [s.dice_s0 for s in self.subjects]
        original = paired_decrease(before, [s.dice_dv for s in self.subjects], self.organs)
        warped = paired_decrease(before, [s.dice_dv_warped for s in self.subjects], self.organs)
        return {
            "method": self.method,
            "reference": self.reference,
            "dice_s0": mean_dice(before, self.organs),
            "dice": {o: original[o].after for o in self.organs},
            "dice_warped": {o: warped[o].after for o in self.organs},
            "decrease": decreases(original),
            "decrease_warped": decreases(warped),
            "success": successes(original),
            "success_warped": successes(warped),
            "dice_s0_paired": {o: original[o].before for o in self.organs},
            "dice_s0_paired_warped": {o: warped[o].before for o in self.organs},
            "subjects_paired": {o: original[o].subjects for o in self.organs},
            "subjects_paired_warped": {o: warped[o].subjects for o in self.organs},
            "p": float(np.mean([s.p for s in self.subjects])),
            "p_hu_fov": float(np.mean([s.p_hu_fov for s in self.subjects])),
            "p_hu_body": _mean([s.p_hu_body for s in self.subjects]),
            "max_displacement": float(np.max([s.max_displacement for s in self.subjects])),
            "max_displacement_body": _max([s.max_displacement_body for s in self.subjects]),
            "folding": float(np.mean([s.folding for s in self.subjects])),
            "folding_body": _mean([s.folding_body for s in self.subjects]),
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
    world: World | None = None,
) -> AttackReport:
    """Attack every slice of every volume and measure the damage; see the module docstring.

    ``volumes`` is read once, in order, one volume at a time, so a :class:`LazyVolumes` cohort
    is evaluated holding one volume and the per-subject results. A volume with labels is measured
    against them, one without against S0; :attr:`AttackReport.reference` says which.

    With several processes (``world``, default: those the command joined) every rank must call
    this alike: each evaluates its shard of the subjects and all get the whole report, the same
    as one process's (``seconds`` is the sum of the ranks'). A method that is not
    ``order_free`` (random draws run on from subject to subject) is evaluated by rank 0 alone,
    so that its draws are those of one process.
    """
    world = world or current_world()
    if world.is_distributed and not getattr(method, "order_free", False):
        alone = evaluate_attack(seg_model, method, volumes, batch_size, SINGLE)
        return world.broadcast(alone if world.is_main else None)
    report = _evaluate_shard(seg_model, method, world.shard(volumes), batch_size)
    if world.is_distributed:
        parts = world.all_parts(report)
        report.subjects = world.interleave([part.subjects for part in parts], len(volumes))
        report.seconds = sum(part.seconds for part in parts)
        report.slices = sum(part.slices for part in parts)
        references = {part.reference for part in parts if part.subjects}
        report.reference = _reference_name(references)
    return report


def _reference_name(references: set[str]) -> str:
    """What the subjects' Dice is measured against, given each subject's kind of reference."""
    if len(references) == 1:
        return next(iter(references))
    return "ground truth where given, else S0" if references else "S0"


def _evaluate_shard(
    seg_model: SegmentationModel,
    method: AttackMethod,
    volumes: Sequence[Volume],
    batch_size: int,
) -> AttackReport:
    """:func:`evaluate_attack` of one process's volumes."""
    spec = seg_model.spec
    organs = spec.label_map.names
    report = AttackReport(method.name, "S0", organs)
    references: set[str] = set()
    for volume in volumes:
        has_truth = volume.labels is not None and bool(volume.labels.any())
        references.add("ground truth" if has_truth else "S0")
        report.reference = _reference_name(references)
        grid = to_model_grid(volume, spec)
        whole = unpadded(grid)
        truth = torch.from_numpy(volume.labels.astype(np.int64)) if has_truth else None
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("ref", "ref_w", "s0", "dv")}
        keys = ("p", "p_hu", "max_d", "fold", "ssim")
        per_slice: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        body = {"sum": 0.0, "voxels": 0, "folded": 0, "seen": 0}
        max_d_body: list[float] = []
        start = 0
        tick = time.perf_counter()
        for batch in attack_slices(seg_model, method, grid, batch_size, volume):
            count = batch.image.shape[0]
            # Dice on the scan's own grid, as eval-seg scores: S0 and S_DV resampled there
            s0 = class_map(whole.to_source(batch.probabilities_s0))
            s_dv = class_map(whole.to_source(batch.probabilities_dv))
            reference = truth[start : start + count] if truth is not None else s0
            source = batch.source
            assert source is not None  # attack_slices was given the volume
            attacked_hu, displacement_mm, _ = batch_on_source(
                batch, grid, source.image_hu, source.spacing
            )
            per_slice["p_hu"].append(perceptibility(attacked_hu, source.image_hu))
            body["sum"] += masked_abs_sum(attacked_hu, source.image_hu, source.body)
            body["voxels"] += source.body_pixels
            largest = masked_max_displacement(displacement_mm, source.body)
            if largest is not None:
                max_d_body.append(largest)
            pixels = displacement_mm / _spacing_xy(source.spacing, displacement_mm)
            folded, seen = masked_folding(pixels, source.body)
            body["folded"] += folded
            body["seen"] += seen
            start += count
            parts["ref"].append(reference)
            parts["ref_w"].append(warp_labels(reference, pixels, spec.label_map.num_classes))
            parts["s0"].append(s0)
            parts["dv"].append(s_dv)
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
                p_hu_body=body["sum"] / body["voxels"] if body["voxels"] else None,
                max_displacement_body=max(max_d_body) if max_d_body else None,
                folding_body=body["folded"] / body["seen"] if body["seen"] else None,
            )
        )
    return report
