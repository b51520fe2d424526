"""The state behind the latent-space explorer: one volume, f_seg, an attacker, slice by slice.

Qt-free, so the napari widget stays thin: it turns slider values into :meth:`attack_slice`
calls and the returned arrays into layers. The encoder's features of each slice are computed once
and cached, so moving a latent slider only decodes, warps and segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .attack import to_source_grid
from .class_map import class_map
from .data.volume import Volume
from .errors import InvalidInputError
from .evaluation.attack_eval import SliceBatch, attack_success, dice_decrease, warp_labels
from .evaluation.metrics import dice_per_label
from .inference import labels_to_model_grid, to_model_grid
from .nets.attacker import Encoding
from .nets.warp import warp
from .segmentation import SegmentationModel
from .training.attacker_io import LoadedAttacker


@dataclass
class SliceMetrics:
    """Per organ: Dice of S0 and S_DV against the reference and the warped reference; p."""

    reference: str
    dice_s0: dict[str, float | None]
    dice_dv: dict[str, float | None]
    dice_dv_warped: dict[str, float | None]
    p: float

    def decrease(self, warped: bool = True) -> dict[str, float | None]:
        """Relative Dice decrease (%) per organ; ``None`` where S0's Dice is 0 or undefined."""
        return dice_decrease(self.dice_s0, self.dice_dv_warped if warped else self.dice_dv)

    def success(self, warped: bool = True) -> dict[str, bool | None]:
        """Whether each organ's Dice fell by at least 30 %."""
        return attack_success(self.decrease(warped))


@dataclass
class SliceAttack:
    """One attacked slice on the volume's own grid (2D arrays, rows x columns)."""

    index: int
    attacked_hu: np.ndarray
    displacement_mm: np.ndarray
    intensity_hu: np.ndarray
    s0: np.ndarray
    s_dv: np.ndarray
    metrics: SliceMetrics


class ExplorerSession:
    """Generate attacks on single slices of ``volume`` for chosen latents."""

    def __init__(
        self, seg_model: SegmentationModel, attacker: LoadedAttacker, volume: Volume
    ) -> None:
        self.seg_model = seg_model
        self.loaded = attacker
        self.volume = volume
        self.slices = to_model_grid(volume, seg_model.spec)
        has_truth = volume.labels is not None and bool(volume.labels.any())
        self.truth = labels_to_model_grid(volume, seg_model.spec) if has_truth else None
        self._encodings: dict[int, Encoding] = {}
        self._s0: dict[int, torch.Tensor] = {}
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
    def encoding(self, index: int) -> Encoding:
        """The encoder's features and posterior for slice ``index`` (cached)."""
        self._check(index)
        if index not in self._encodings:
            image = self.slices.images[index : index + 1].to(self.seg_model.device)
            self._encodings[index] = self.loaded.attacker.to(image.device).encode(image)
        return self._encodings[index]

    @torch.no_grad()
    def s0_probabilities(self, index: int) -> torch.Tensor:
        """f_seg's probabilities on I0 for slice ``index`` (cached: latents do not change it)."""
        self._check(index)
        if index not in self._s0:
            image = self.slices.images[index : index + 1].to(self.seg_model.device)
            self._s0[index] = torch.softmax(self.seg_model(image).float(), dim=1)
        return self._s0[index]

    def posterior_mean(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The posterior means of z_D and z_V for slice ``index``."""
        posterior = self.encoding(index).posterior
        return posterior.mu_d[0].cpu().numpy(), posterior.mu_v[0].cpu().numpy()

    def sample(
        self, index: int, seed: int, temperature: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random posterior draw of (z_D, z_V) for slice ``index``."""
        generator = torch.Generator().manual_seed(seed)
        z_d, z_v = self.loaded.attacker.sample_latents(
            self.encoding(index).posterior, "posterior", temperature, generator
        )
        return z_d[0].cpu().numpy(), z_v[0].cpu().numpy()

    @torch.no_grad()
    def attack_slice(
        self, index: int, z_d: np.ndarray, z_v: np.ndarray, use_d: bool = True, use_v: bool = True
    ) -> SliceAttack:
        """D, V, I_DV, S0, S_DV and the metrics of slice ``index`` for the given latents."""
        encoding = self.encoding(index)
        device = self.seg_model.device
        image = self.slices.images[index : index + 1].to(device)
        z_d_t = torch.as_tensor(np.asarray(z_d, np.float32), device=device)[None]
        z_v_t = torch.as_tensor(np.asarray(z_v, np.float32), device=device)[None]
        output = self.loaded.attacker.decode(encoding, image, z_d_t, z_v_t)
        displacement = output.displacement if use_d else torch.zeros_like(output.displacement)
        intensity = output.intensity if use_v else torch.zeros_like(output.intensity)
        attacked = warp(image, displacement) + intensity
        p0 = self.s0_probabilities(index)
        pdv = torch.softmax(self.seg_model(attacked).float(), dim=1)
        crop = self.slices.crop
        batch = SliceBatch(
            *(crop(t).cpu() for t in (image, displacement, intensity, attacked)),
            class_map(crop(p0)).cpu(),
            class_map(crop(pdv)).cpu(),
            crop(p0).cpu(),
            crop(pdv).cpu(),
        )
        label_map = self.seg_model.spec.label_map
        reference = self.truth[index : index + 1] if self.truth is not None else batch.s0
        warped_reference = warp_labels(reference, batch.displacement, label_map.num_classes)
        s0, s_dv = batch.s0.numpy(), batch.s_dv.numpy()
        metrics = SliceMetrics(
            "ground truth" if self.truth is not None else "S0",
            dice_per_label(s0, reference.numpy(), label_map),
            dice_per_label(s_dv, reference.numpy(), label_map),
            dice_per_label(s_dv, warped_reference.numpy(), label_map),
            float((batch.attacked - batch.image).abs().mean()),
        )
        source = to_source_grid(batch, self.slices, self.seg_model.spec.pixel_spacing)
        return SliceAttack(
            index=index,
            **{key: value[0] for key, value in source.items()},
            metrics=metrics,
        )
