"""Ways to attack a batch of slices: the learned generator and the two baselines.

Each method maps normalised slices I0 (B, 1, H, W), padded to f_seg's stride, to a deformation
D (B, 2, H, W) in pixels and an intensity change V (B, 1, H, W); I_DV = warp(I0, D) + V.

A method that sets ``uses_source = True`` is also given, as ``source``, the batch's own scan
slices (a :class:`SourceView`) when it is evaluated (:func:`.attack_eval.attack_slices` with the
volume): the random baseline measures its size there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..data.slices import Crop
from ..errors import InvalidInputError
from ..nets.warp import warp
from ..segmentation import SegmentationModel
from ..training import losses
from ..training.attacker_io import LoadedAttacker


class AttackMethod(Protocol):
    """Anything that turns I0 into (D, V).

    ``order_free`` says that a batch's (D, V) depend on that batch alone, not on the batches
    before it (no random stream runs on from one to the next): its subjects can then be
    evaluated in any order, or shared among processes (:func:`.attack_eval.evaluate_attack`).
    """

    name: str
    order_free: bool

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V) for a batch of normalised slices."""
        ...


class SourceView(Protocol):
    """A batch's own scan slices, as :class:`.attack_eval.SourceSlices` gives them."""

    @property
    def crop(self) -> Crop:
        """Where the unpadded slice lies in the padded model-grid slices the attack sees."""
        ...

    @property
    def body_pixels(self) -> int:
        """How many of the batch's source pixels lie in the body."""
        ...

    def p_hu_body(self, displacement: torch.Tensor, intensity: torch.Tensor) -> float | None:
        """Mean |I_DV - I0| in HU over the body on the scan's grid, for the method's (D, V)."""
        ...


def attacked_images(
    images: torch.Tensor, displacement: torch.Tensor, intensity: torch.Tensor
) -> torch.Tensor:
    """I_DV = warp(I0, D) + V; a slice whose D is exactly zero is not interpolated (I0 + V)."""
    moving = displacement.flatten(1).ne(0).any(dim=1)
    if bool(moving.all()):
        return warp(images, displacement) + intensity
    warped = images.clone()
    if bool(moving.any()):
        warped[moving] = warp(images[moving], displacement[moving])
    return warped + intensity


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
        self.order_free = source == "mean"  # draws run on from batch to batch

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


MATCH_RTOL = 1e-6
"""The random baseline's size is matched to within this fraction of the requested size."""
MAX_SCALE = 2.0**14
"""The largest factor the random baseline's fields are scaled by (a size out of reach stops
there)."""


def match_scale(size: Callable[[float], float], target: float, steps: int = 60) -> float:
    """The factor s >= 0 at which ``size(s)`` is ``target``, to within :data:`MATCH_RTOL`.

    ``size(0)`` is taken to be 0 (no attack). The root is bracketed by doubling from 1, then
    narrowed by regula falsi with the Illinois modification (a bisection step wherever the
    secant leaves the bracket), which keeps the bracket like bisection and needs a handful of
    evaluations where ``size`` is smooth. Where ``size`` stays under ``target`` up to
    :data:`MAX_SCALE`, that is returned.
    """
    if target <= 0:
        return 0.0
    low, f_low = 0.0, -target
    high, f_high = 1.0, size(1.0) - target
    while f_high < 0 and high < MAX_SCALE:
        low, f_low = high, f_high
        high *= 2.0
        f_high = size(high) - target
    if f_high < 0:
        return high
    if f_high <= MATCH_RTOL * target:
        return high
    side = 0
    for _ in range(steps):
        middle = (low * f_high - high * f_low) / (f_high - f_low)
        if not low < middle < high:
            middle = 0.5 * (low + high)
        f_middle = size(middle) - target
        if abs(f_middle) <= MATCH_RTOL * target:
            return middle
        if f_middle < 0:
            low, f_low = middle, f_middle
            if side < 0:
                f_high *= 0.5
            side = -1
        else:
            high, f_high = middle, f_middle
            if side > 0:
                f_low *= 0.5
            side = 1
        if high - low <= 1e-12 * high:
            break
    return low if abs(f_low) < abs(f_high) else high


def _smooth_noise(shape: tuple[int, ...], stride: int, generator: torch.Generator) -> torch.Tensor:
    batch, channels, height, width = shape
    coarse = torch.randn(
        batch, channels, max(2, height // stride), max(2, width // stride), generator=generator
    )
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)


RANDOM_MEASURES = ("p_hu_body", "p")
"""What the random baseline's size is matched on: mean |I_DV - I0| in HU inside the body on the
scan's grid (the default), or eq. 7's p over f_seg's whole (unpadded) grid in normalised units."""


class RandomAttack:
    """Random smooth D and V with no learning, scaled so that its size matches ``target_p``.

    The fields are Gaussian noise on a grid ``stride`` times coarser than the image, upsampled
    (bicubic), like the generator's own quarter-resolution fields. D starts at 1 px and V at
    0.1 normalised units per standard deviation; one common factor, found per batch by
    :func:`match_scale` (to within :data:`MATCH_RTOL`), then brings the batch's size to
    ``target_p``. ``mode`` zeroes D or V as for the learned attack.

    ``measure`` says which size (:data:`RANDOM_MEASURES`):

    - ``"p_hu_body"`` (default): mean |I_DV - I0| in HU over the batch's body voxels on the
      scan's own grid, computed by the same code as the evaluation's ``p_hu_body`` (D and V
      resampled to the scan, padding cropped off), so that the baseline cannot spend its
      budget in the air around the patient. It needs the scan (``source``), which
      :func:`.attack_eval.evaluate_attack` gives; a batch with no body gets D = V = 0.
    - ``"p"``: eq. 7's mean |I_DV - I0| in normalised units over f_seg's grid, the padding
      cropped off where ``source`` says where it is (the old behaviour, kept for comparison).
    """

    uses_source = True

    def __init__(
        self,
        target_p: float,
        mode: str = "dv",
        stride: int = 8,
        seed: int = 0,
        measure: str = "p_hu_body",
    ) -> None:
        if measure not in RANDOM_MEASURES:
            raise InvalidInputError(
                f"Unknown size measure {measure!r} for the random baseline; use one of "
                f"{', '.join(RANDOM_MEASURES)}."
            )
        self.target_p = target_p
        self.mode = mode
        self.stride = stride
        self.measure = measure
        self.generator = torch.Generator().manual_seed(seed)
        self.order_free = False  # one random stream over all the batches
        size = f"{target_p:.1f} HU" if measure == "p_hu_body" else f"{target_p:.3f}"
        self.name = f"random {mode} {measure}={size}"

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, source: SourceView | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (D, V)."""
        batch, _, height, width = images.shape
        base_d = _smooth_noise((batch, 2, height, width), self.stride, self.generator)
        base_v = 0.1 * _smooth_noise((batch, 1, height, width), self.stride, self.generator)
        if self.mode == "v":
            base_d.zero_()
        if self.mode == "d":
            base_v.zero_()
        base_d, base_v = base_d.to(images.device), base_v.to(images.device)

        if self.measure == "p_hu_body":
            if source is None:
                raise InvalidInputError(
                    "The random baseline matches its size inside the body on the scan's own "
                    "slices; evaluate it with evaluate_attack, which gives them."
                )
            if source.body_pixels == 0:
                return base_d * 0.0, base_v * 0.0

            def size(scale: float) -> float:
                value = source.p_hu_body(scale * base_d, scale * base_v)
                return 0.0 if value is None else value

        else:
            crop = source.crop if source is not None else Crop(slice(None), slice(None))

            def size(scale: float) -> float:
                attacked = attacked_images(images, scale * base_d, scale * base_v)
                return float(crop(attacked - images).abs().mean())

        scale = match_scale(size, self.target_p)
        return scale * base_d, scale * base_v


class OptimizedAttack:
    """Per-image optimisation: D and V fitted directly to each batch with the generator's loss.

    The same eq. 4 target (xi, masked cross-entropy against the same reference, in the form
    ``eq5``: the trainer's default, ``hard``) and eq. 2 penalties, no critic and no generator: D
    and V live on a grid ``stride`` times coarser than the image (smooth like the generator's)
    and are optimised with Adam for ``steps`` steps.
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
        eq5: str = "hard",
    ) -> None:
        losses.check_eq5(eq5)
        self.eq5 = eq5
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
        self.order_free = True

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
                reference = losses.eq5_reference(s0, d, self.reference, self.eq5)
                logits = self.seg_model.logits(attacked)
                xent = losses.masked_cross_entropy(reference, logits, eq5=self.eq5)
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
