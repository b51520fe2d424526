"""Ways to attack a batch of slices: the learned generator and the two baselines.

Each method maps normalised slices I0 (B, 1, H, W), padded to f_seg's stride, to a deformation
D (B, 2, H, W) in pixels and an intensity change V (B, 1, H, W); I_DV = warp(I0, D) + V.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ..nets.warp import warp
from ..segmentation import SegmentationModel
from ..training import losses
from ..training.attacker_io import LoadedAttacker


class AttackMethod(Protocol):
    """Anything that turns I0 into (D, V)."""

    name: str

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V) for a batch of normalised slices."""
        ...


class LearnedAttack:
    """The trained generator: one forward pass per batch.

    ``source`` is ``"mean"`` (posterior mean, the default for evaluation), ``"posterior"`` or
    ``"prior"``, with a ``temperature`` and a seed that makes draws repeatable.
    """

    def __init__(
        self, loaded: LoadedAttacker, source: str = "mean", temperature: float = 1.0, seed: int = 0
    ) -> None:
        self.loaded = loaded
        self.source = source
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.name = f"{loaded.mode} xi={loaded.xi:g}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V)."""
        attacker = self.loaded.attacker.to(images.device)
        stride = attacker.config.stride
        pad_h, pad_w = -images.shape[-2] % stride, -images.shape[-1] % stride
        padded = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images
        encoding = attacker.encode(padded)
        z_d, z_v = attacker.sample_latents(
            encoding.posterior, self.source, self.temperature, self.generator
        )
        output = attacker.decode(encoding, padded, z_d, z_v)
        height, width = images.shape[-2:]
        return (
            output.displacement[..., :height, :width],
            output.intensity[..., :height, :width],
        )


def _smooth_noise(shape: tuple[int, ...], stride: int, generator: torch.Generator) -> torch.Tensor:
    batch, channels, height, width = shape
    coarse = torch.randn(
        batch, channels, max(2, height // stride), max(2, width // stride), generator=generator
    )
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)


class RandomAttack:
    """Random smooth D and V with no learning, scaled so that p matches ``target_p``.

    The fields are Gaussian noise on a grid ``stride`` times coarser than the image, upsampled
    (bicubic), like the generator's own quarter-resolution fields. D starts at 1 px and V at
    0.1 normalised units per standard deviation; one common factor, found by bisection per
    batch, then brings the batch's mean |I_DV - I0| to ``target_p``. ``mode`` zeroes D or V as
    for the learned attack.
    """

    def __init__(self, target_p: float, mode: str = "dv", stride: int = 8, seed: int = 0) -> None:
        self.target_p = target_p
        self.mode = mode
        self.stride = stride
        self.generator = torch.Generator().manual_seed(seed)
        self.name = f"random {mode} p={target_p:.3f}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V)."""
        batch, _, height, width = images.shape
        base_d = _smooth_noise((batch, 2, height, width), self.stride, self.generator)
        base_v = 0.1 * _smooth_noise((batch, 1, height, width), self.stride, self.generator)
        if self.mode == "v":
            base_d.zero_()
        if self.mode == "d":
            base_v.zero_()
        base_d, base_v = base_d.to(images.device), base_v.to(images.device)

        def p(scale: float) -> float:
            attacked = warp(images, scale * base_d) + scale * base_v
            return float((attacked - images).abs().mean())

        low, high = 0.0, 1.0
        while p(high) < self.target_p and high < 1e4:
            high *= 2.0
        for _ in range(30):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if p(middle) < self.target_p else (low, middle)
        scale = 0.5 * (low + high)
        return scale * base_d, scale * base_v


class OptimizedAttack:
    """Per-image optimisation: D and V fitted directly to each batch with the generator's loss.

    The same eq. 4 target (xi, masked cross-entropy against the same reference) and eq. 2
    penalties, no critic and no generator: D and V live on a grid ``stride`` times coarser than
    the image (smooth like the generator's) and are optimised with Adam for ``steps`` steps.
    """

    def __init__(
        self,
        seg_model: SegmentationModel,
        xi: float = 2.0,
        lambda_d: float = 0.1,
        lambda_v: float = 0.01,
        reference: str = "warped",
        mode: str = "dv",
        steps: int = 100,
        learning_rate: float = 0.05,
        stride: int = 4,
    ) -> None:
        self.seg_model = seg_model
        self.xi = xi
        self.lambda_d = lambda_d
        self.lambda_v = lambda_v
        self.reference = reference
        self.mode = mode
        self.steps = steps
        self.learning_rate = learning_rate
        self.stride = stride
        self.name = f"optimised {mode} xi={xi:g}"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V) after ``steps`` optimisation steps."""
        batch, _, height, width = images.shape
        coarse = (max(2, height // self.stride), max(2, width // self.stride))
        field_d = torch.zeros(batch, 2, *coarse, device=images.device, requires_grad=True)
        field_v = torch.zeros(batch, 1, *coarse, device=images.device, requires_grad=True)
        optimizer = torch.optim.Adam([field_d, field_v], lr=self.learning_rate)
        with torch.no_grad():
            s0 = torch.softmax(self.seg_model.logits(images), dim=1)

        def fields() -> tuple[torch.Tensor, torch.Tensor]:
            d = F.interpolate(field_d, size=(height, width), mode="bilinear", align_corners=False)
            v = F.interpolate(field_v, size=(height, width), mode="bilinear", align_corners=False)
            return (d * 0 if self.mode == "v" else d), (v * 0 if self.mode == "d" else v)

        with torch.enable_grad():
            for _ in range(self.steps):
                d, v = fields()
                attacked = warp(images, d) + v
                reference = losses.segmentation_reference(s0, d, self.reference)
                xent = losses.masked_cross_entropy(reference, self.seg_model.logits(attacked))
                loss = (
                    losses.xi_loss(xent, self.xi)
                    + losses.displacement_penalty(d, self.lambda_d)
                    + losses.intensity_penalty(v, self.lambda_v)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        d, v = fields()
        return d.detach(), v.detach()
