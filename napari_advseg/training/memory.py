"""Rough estimates of the memory a network or a training run needs, made before allocating.

The estimates count float32 activations kept for the backward pass (a few feature maps per
convolution block and level), the parameters with their gradients and optimizer state, and the
training data held in memory. They are meant to tell a run that fits from one that needs ten
times the machine (``base_channels 100000``, ``crop_size 100000``), not to predict a peak to the
megabyte; :func:`napari_advseg.validation.check_memory` compares them with the free memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..data.resample import grid_shape
from ..data.volume import Volume
from ..errors import CheckpointError, ResourceError
from ..nets.attacker import Attacker, AttackerConfig
from ..nets.critic import Critic, CriticConfig
from ..nets.unet import UNet, UNetConfig
from ..validation import check_memory, format_bytes

FLOAT_BYTES = 4
BACKWARD_FACTOR = 1.5
"""Activations kept for backward, plus the gradients alive at the peak of the backward pass."""


def parameter_count(factory: Callable[[], nn.Module]) -> int:
    """Parameters and buffers of the module ``factory`` builds, counted without allocating."""
    with torch.device("meta"):
        module = factory()
    return sum(t.numel() for t in (*module.parameters(), *module.buffers()))


def meta_state_shapes(factory: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict of the module ``factory`` builds, without allocating."""
    with torch.device("meta"):
        module = factory()
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _levels(base: int, depth: int, side: int, first_stride: int = 1) -> Iterable[tuple[int, int]]:
    """(channels, side) of each level of a network halving the resolution at each level."""
    for level in range(depth):
        yield base * 2**level, max(1, side // (first_stride * 2**level))


def unet_activation_bytes(config: UNetConfig, batch: int, side: int, backward: bool) -> float:
    """Activations of a U-Net on a (batch, 1, side, side) input.

    Down: 4 maps per block (two convolutions, two batch norms; ReLU in place). Up: the
    upsampled map, the concatenation (2x) and 4 maps of the block: 11 maps of the level's width,
    14 with the allocator's slack (measured: 378 MB for the default 16 x 96 x 96 step).
    """
    levels = _levels(config.base_channels, config.depth, side)
    maps = sum(width * level_side**2 for width, level_side in levels)
    total = batch * FLOAT_BYTES * (14 * maps + config.num_classes * side**2)
    return total * (BACKWARD_FACTOR if backward else 1.0)


def unet_training_bytes(config: UNetConfig, batch: int, patch: int) -> float:
    """A U-Net training step with Adam: activations, parameters, gradients, two moments."""
    parameters = parameter_count(lambda: UNet(config)) * FLOAT_BYTES * 4
    return parameters + unet_activation_bytes(config, batch, patch, backward=True)


def attack_training_bytes(
    attacker: AttackerConfig,
    critic: CriticConfig,
    target: UNetConfig | None,
    batch: int,
    crop: int,
    diversity: bool,
) -> float:
    """One attacker training step: generator, critic and f_seg with gradients to its input.

    The encoder keeps 4 maps per level; each decoder about 5 of its level's width (the resized
    input, the concatenation and its block), twice as many decoders with the diversity term
    (measured: 535 MB for a default step with the diversity term and the gradient penalty).
    ``target`` is f_seg's U-Net architecture, or None for a user's model (counted as the
    default U-Net).
    """
    levels = list(_levels(attacker.base_channels, attacker.depth, crop))
    encoder = sum(4 * width * side**2 for width, side in levels)
    decoders = sum(10 * width * side**2 for width, side in levels[: attacker.depth])
    if diversity:
        decoders *= 2
    critic_maps = sum(
        3 * width * side**2 for width, side in _levels(critic.base_channels, critic.depth, crop, 2)
    )
    generator = batch * FLOAT_BYTES * (encoder + decoders + 16 * crop**2)
    critic_bytes = batch * FLOAT_BYTES * critic_maps * 3  # the gradient penalty's double backward
    seg = unet_activation_bytes(target or UNetConfig(), batch, crop, backward=True)
    parameters = (
        (parameter_count(lambda: Attacker(attacker)) + parameter_count(lambda: Critic(critic)))
        * FLOAT_BYTES
        * 3
    )  # weights, gradients, RMSProp's running average
    return (generator + critic_bytes) * BACKWARD_FACTOR + seg + parameters


def slices_bytes(
    volumes: Sequence[Volume],
    pixel_spacing: tuple[float, float],
    min_side: int,
    bytes_per_pixel: int,
) -> float:
    """All axial slices of ``volumes`` at ``pixel_spacing``, each padded to ``min_side``."""
    total = 0.0
    for volume in volumes:
        height, width = grid_shape(volume.image.shape[1:], volume.spacing[1:], pixel_spacing)
        total += volume.image.shape[0] * max(height, min_side) * max(width, min_side)
    return total * bytes_per_pixel


def check_run_memory(
    host_bytes: float, compute_bytes: float, device: torch.device, what: str
) -> None:
    """Refuse a run needing more than is free: data in main memory, computation on ``device``.

    On the CPU both count against main memory; on a CUDA device ``compute_bytes`` counts against
    the GPU's free memory.
    """
    if device.type == "cuda":
        check_memory(host_bytes, what)
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):  # pragma: no cover - no usable CUDA here
            return
        if compute_bytes > free:
            raise ResourceError(
                f"{what} needs about {format_bytes(compute_bytes)} of GPU memory but "
                f"{format_bytes(free)} is free on {device}; use a smaller request."
            )
    else:
        check_memory(host_bytes + compute_bytes, what)


MISMATCH = (
    "{folder}: {what} weights do not fit the architecture in config.json; the checkpoint is "
    "inconsistent ({detail})."
)


def check_weights_fit(
    folder: str | os.PathLike[str],
    factory: Callable[[], nn.Module],
    weights: Mapping[str, torch.Tensor],
    what: str,
    mismatch: str = MISMATCH,
) -> None:
    """Check weights against ``factory()``'s names and shapes, and memory, before building it.

    ``mismatch`` is the refusal's text, formatted with ``folder``, ``what`` and ``detail`` (the
    first weight that does not fit). Nothing is allocated: the shapes come from the network built
    on the meta device, so a config of absurd size is refused without trying.

    Raises
    ------
    CheckpointError
        If a weight is missing, unexpected or of another shape.
    ResourceError
        If the network would not fit in the free memory.
    """
    shapes = meta_state_shapes(factory)
    given = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    if shapes != given:
        missing = sorted(set(shapes) - set(given))
        differing = sorted(n for n in set(shapes) & set(given) if shapes[n] != given[n])
        if differing:
            detail = f"{differing[0]} is {given[differing[0]]}, expected {shapes[differing[0]]}"
        elif missing:
            detail = f"missing {missing[0]}"
        else:
            detail = f"unexpected {sorted(set(given) - set(shapes))[0]}"
        raise CheckpointError(mismatch.format(folder=folder, what=what, detail=detail))
    check_memory(
        sum(math.prod(shape) for shape in shapes.values()) * FLOAT_BYTES, f"{folder}: its {what}"
    )
