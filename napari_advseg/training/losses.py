"""The losses of Chen et al. 2019, eq. 2 to 6, and the KL term we add.

How each term is averaged (the paper gives sums without saying):

- eq. 2: ``lambda_D * mean over pixels of (D_x^2 + D_y^2)`` and ``lambda_V * mean of V^2``, then
  the mean over the batch; pixels, not sums, so the weights mean the same at any image size.
- eq. 5: the masked cross-entropy of each image is ``sum(M * CE) / sum(M)``: the mean
  cross-entropy per organ pixel, so xi is in nats per organ pixel whatever the organ's size.
  Its reference comes in three forms (:data:`EQ5_FORMS`, :func:`eq5_reference`): ``"hard"``
  (default) the one-hot of S0's labels, moved by D as labels are moved; ``"kl"`` S0's
  probabilities (warped bilinearly) with the reference's own entropy subtracted, i.e.
  KL(ref || S_DV); ``"soft"`` the cross-entropy against S0's warped probabilities, as
  attackers trained before the choice existed were. CE against soft targets is
  H(ref) + KL(ref || S_DV), and a bilinear warp raises H(ref): under ``"soft"`` D earns xi by
  blurring the reference, without fooling f_seg. A one-hot reference has no entropy for D to
  raise, and the KL form takes it out.
- eq. 4: ``(xi - f_xent^M)^2`` per image, then the mean over the batch.
- eq. 3: WGAN losses as differences of the critic's batch means.
- KL(q(z | I0) || N(0, I)): summed over latent dimensions, mean over the batch, for both latents.
- diversity (our option, off in the paper): for two latent draws on the same image,
  ``min(mean|field_1 - field_2| / (cap * mean|z_1 - z_2|), 1)`` per image, mean over the batch,
  as in diversity-sensitive conditional GANs (Yang et al. 2019); the generator maximises it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..class_map import class_map
from ..nets.attacker import Posterior
from ..nets.warp import warp

REFERENCES = ("warped", "original")
"""Reference of eq. 4: S0 warped by D (anatomy-consistent, default) or S0 itself (literal)."""

EQ5_FORMS = ("hard", "kl", "soft")
"""Forms of eq. 5: against S0's (moved) one-hot labels (default), KL against S0's (warped)
probabilities, or CE against them (the form of attackers trained before the choice existed)."""


def segmentation_reference(
    s0: torch.Tensor, displacement: torch.Tensor, reference: str = "warped"
) -> torch.Tensor:
    """The segmentation that I_DV should have if f_seg were right.

    ``"original"``: S0, the paper's literal eq. 4. ``"warped"``: S0 moved with the anatomy by D
    (a soft, bilinear warp of the class probabilities), since a deformation moves the organs.
    """
    if reference == "original":
        return s0
    if reference != "warped":
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    return warp(s0, displacement)


def check_eq5(eq5: str) -> str:
    """``eq5`` if it is one of :data:`EQ5_FORMS`, else a one-line ``ValueError``."""
    if eq5 not in EQ5_FORMS:
        raise ValueError(f"eq5 must be one of {EQ5_FORMS}, got {eq5!r}")
    return eq5


def move_labels(labels: torch.Tensor, displacement: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Move (B, H, W) labels with D as the evaluation does: warp the one-hot map, then argmax.

    No gradient flows through the result (labels have none).
    """
    with torch.no_grad():
        one_hot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2)
        return class_map(warp(one_hot.to(displacement.dtype), displacement.detach()))


def eq5_reference(
    s0: torch.Tensor, displacement: torch.Tensor, reference: str = "warped", eq5: str = "hard"
) -> torch.Tensor:
    """The reference of eq. 5 in form ``eq5`` (:data:`EQ5_FORMS`), (B, C + 1, H, W).

    ``"hard"``: the one-hot of S0's labels, moved by D as labels are (:func:`move_labels`) for
    ``reference="warped"``, as they are for ``"original"``; constant, so D can neither raise its
    entropy (0) nor reach the loss through it. ``"kl"`` and ``"soft"``:
    :func:`segmentation_reference`, S0's probabilities (warped bilinearly for ``"warped"``).
    """
    check_eq5(eq5)
    if eq5 != "hard":
        return segmentation_reference(s0, displacement, reference)
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    num_classes = s0.shape[1]
    with torch.no_grad():
        labels = class_map(s0)
        if reference == "warped":
            labels = move_labels(labels, displacement, num_classes)
        return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(s0.dtype)


def pixel_cross_entropy(
    reference: torch.Tensor, logits_dv: torch.Tensor, eq5: str = "soft"
) -> torch.Tensor:
    """(B, H, W) cross-entropy of S_DV against ``reference``; for ``"kl"`` minus H(reference).

    ``"hard"`` and ``"soft"`` are the plain cross-entropy (a one-hot reference has H = 0).
    """
    check_eq5(eq5)
    cross_entropy = -(reference * torch.log_softmax(logits_dv, dim=1)).sum(dim=1)
    if eq5 == "kl":
        # + sum(ref * log ref) = - H(ref); clamped so that a zero probability (float32 softmax
        # underflow) gives 0 with a finite gradient, where xlogy's would be infinite.
        tiny = torch.finfo(reference.dtype).tiny
        log_reference = torch.log(reference.clamp_min(tiny))
        cross_entropy = cross_entropy + (reference * log_reference).sum(dim=1)
    return cross_entropy


def masked_cross_entropy(
    reference: torch.Tensor, logits_dv: torch.Tensor, eq5: str = "soft"
) -> torch.Tensor:
    """Eq. 5 per image: cross-entropy of S_DV against ``reference``, weighted by the organ mask.

    Parameters
    ----------
    reference
        (B, C + 1, H, W) class probabilities (:func:`eq5_reference`); channel 0 is background.
    logits_dv
        (B, C + 1, H, W) logits of f_seg on I_DV.
    eq5
        The form (:data:`EQ5_FORMS`): ``"kl"`` subtracts the reference's entropy from each
        pixel's cross-entropy; ``"hard"`` and ``"soft"`` do not (the reference decides them).

    Returns
    -------
    torch.Tensor
        (B,) mean cross-entropy (KL for ``"kl"``) per organ pixel, M = sum of the organ
        channels of ``reference``.
    """
    mask = reference[:, 1:].sum(dim=1)
    cross_entropy = pixel_cross_entropy(reference, logits_dv, eq5)
    return (mask * cross_entropy).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1e-6)


def xi_loss(masked_xent: torch.Tensor, xi: float) -> torch.Tensor:
    """Eq. 4: ``(xi - f_xent^M)^2``, mean over the batch."""
    return ((xi - masked_xent) ** 2).mean()


def organ_cross_entropy(
    reference: torch.Tensor, logits_dv: torch.Tensor, min_pixels: float = 4.0, eq5: str = "soft"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 split by organ: (B, C) mean cross-entropy over each organ's soft mask, and presence.

    An organ counts as present in an image when its soft mask sums to at least ``min_pixels``.
    ``eq5`` as for :func:`masked_cross_entropy`.
    """
    cross_entropy = pixel_cross_entropy(reference, logits_dv, eq5)[:, None]
    mass = reference[:, 1:].sum(dim=(2, 3))
    per_organ = (reference[:, 1:] * cross_entropy).sum(dim=(2, 3)) / mass.clamp_min(1e-6)
    return per_organ, mass >= min_pixels


def organ_xi_loss(per_organ: torch.Tensor, present: torch.Tensor, xi: float) -> torch.Tensor:
    """Eq. 4 per organ (our option): mean of ``(xi - f_xent^M_c)^2`` over the present organs.

    The paper's single target can be met by destroying small organs and sparing a large,
    confident one; a target per organ pushes every organ present by the same amount.
    """
    squared = (xi - per_organ) ** 2
    return (squared * present).sum() / present.sum().clamp_min(1)


def displacement_penalty(displacement: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 2, L(D): ``lambda_D`` times the mean squared displacement length (pixels^2)."""
    return weight * displacement.pow(2).sum(dim=1).mean()


def intensity_penalty(intensity: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 2, L(V): ``lambda_V`` times the mean squared intensity change."""
    return weight * intensity.pow(2).mean()


def generator_adversarial_loss(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 3, L_adv^gen = f_disc(I0) - f_disc(I_DV)."""
    return score_real.mean() - score_fake.mean()


def critic_loss(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 3, L_adv^disc = f_disc(I_DV) - f_disc(I0); its negative estimates the W-distance."""
    return score_fake.mean() - score_real.mean()


def gradient_penalty(
    critic: torch.nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP: ``(||grad f_disc(x)|| - 1)^2`` on random interpolates of real and fake.

    The mixing weights are drawn on the CPU from ``generator`` (the trainer's seeded one; the
    global generator without it), so a run is reproducible on any device. The penalty assumes a
    per-sample critic (norm ``"layer"`` or ``"none"``): each image's gradient is its own.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator, dtype=real.dtype)
    alpha = alpha.to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def diversity(
    field_a: torch.Tensor,
    field_b: torch.Tensor,
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    cap: float,
) -> torch.Tensor:
    """How much a field changes per unit change of its latent, as a fraction of ``cap``, at most 1.

    Without it nothing in eq. 6 rewards the decoders for using z, and different latent draws
    collapse to the same attack. The term saturates once draws differ by ``cap`` (field units per
    unit of z), so it cannot grow the fields without bound; it is to be maximised.
    """
    change = (field_a - field_b).abs().flatten(1).mean(dim=1)
    distance = (z_a - z_b).abs().mean(dim=1).clamp_min(1e-6)
    return (change / (cap * distance)).clamp_max(1.0).mean()


def kl_divergence(posterior: Posterior) -> torch.Tensor:
    """KL(q(z_D|I0) || N(0, I)) + KL(q(z_V|I0) || N(0, I)), summed over dims, batch mean."""
    total = 0.0
    for mu, logvar in ((posterior.mu_d, posterior.logvar_d), (posterior.mu_v, posterior.logvar_v)):
        total = total + 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    return total.mean()
