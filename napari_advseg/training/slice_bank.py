"""The attacker's training data: f_seg-grid slices that show an organ, sampled as random crops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.volume import Volume
from ..errors import InvalidInputError
from ..inference import to_model_grid
from ..segmentation import SegmentationModel


class SliceBank:
    """Normalised axial slices at f_seg's grid, padded to at least one crop, for training.

    Only slices on which f_seg finds an organ (at least ``min_organ_pixels``) are kept: the
    attack targets organs, and eq. 5's mask is empty elsewhere. No labels are needed.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        seg_model: SegmentationModel,
        crop_size: int,
        min_organ_pixels: int = 20,
    ) -> None:
        self.crop_size = crop_size
        self.slices: list[torch.Tensor] = []
        for volume in volumes:
            images = to_model_grid(volume, seg_model.spec, pad=False).images
            keep = images[seg_model.organ_pixels(images) >= min_organ_pixels]
            fill = float(images.min())
            for image in keep:
                self.slices.append(pad_to_at_least(image, crop_size, fill))
        if not self.slices:
            raise InvalidInputError(
                "No slice of the training volumes shows an organ to f_seg; the attacker has "
                "nothing to attack. Check the scans and the segmentation model."
            )

    def __len__(self) -> int:
        return len(self.slices)

    def sample(self, count: int, rng: np.random.Generator) -> torch.Tensor:
        """A (count, 1, crop, crop) batch of random slices and random crops."""
        batch = []
        for index in rng.integers(0, len(self.slices), count):
            image = self.slices[index]
            y = int(rng.integers(0, image.shape[-2] - self.crop_size + 1))
            x = int(rng.integers(0, image.shape[-1] - self.crop_size + 1))
            batch.append(image[:, y : y + self.crop_size, x : x + self.crop_size])
        return torch.stack(batch)

    def fixed(self, count: int) -> torch.Tensor:
        """A deterministic batch of evenly spaced slices (centre crops) to monitor progress."""
        indices = np.linspace(0, len(self.slices) - 1, min(count, len(self.slices))).astype(int)
        batch = []
        for index in indices:
            image = self.slices[index]
            y = (image.shape[-2] - self.crop_size) // 2
            x = (image.shape[-1] - self.crop_size) // 2
            batch.append(image[:, y : y + self.crop_size, x : x + self.crop_size])
        return torch.stack(batch)


def pad_to_at_least(image: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    """Pad (..., H, W) with ``fill``, centred, so that both sides are at least ``size``."""
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not (pad_h or pad_w):
        return image
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return F.pad(image, pads, value=fill)
