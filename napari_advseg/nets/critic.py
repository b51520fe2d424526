"""The WGAN critic f_disc of section 3.2: a CNN that scores how real a CT slice looks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_integer
from .unet import MAX_CHANNELS

NORMS = ("layer", "none", "batch")
"""Normalisations after the critic's convolutions (none after the first, as in DCGAN)."""


@dataclass(frozen=True)
class CriticConfig:
    """Architecture of a :class:`Critic`.

    ``norm`` (after each convolution but the first):

    - ``"layer"`` (default): per-sample normalisation over channels and pixels
      (``GroupNorm(1, C)``). Each image's score depends on that image alone, which the gradient
      penalty assumes (Gulrajani et al. 2017 recommend it), and the activations keep their
      scale when weight clipping shrinks the weights.
    - ``"none"``: per-sample as well; what the shipped attackers' critics use.
    - ``"batch"``: the paper's batch norm, for its weight-clipping setting. Its statistics couple
      the images of a batch: scored in separate passes, a batch-wide intensity shift (what V
      does) is normalised away. The trainer scores real and fake in one pass for it.
    """

    base_channels: int = 16
    depth: int = 4
    norm: str = "layer"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InvalidInputError(
                f"Critic norm must be one of {', '.join(NORMS)}, got {self.norm!r}."
            )
        check_integer(self.base_channels, "critic base_channels", low=1, high=MAX_CHANNELS)
        check_integer(self.depth, "critic depth", low=1, high=10)

    @property
    def per_sample(self) -> bool:
        """Whether an image's score depends on that image alone (no batch statistics)."""
        return self.norm != "batch"

    @property
    def min_size(self) -> int:
        """Smallest image side the critic takes (each level halves it)."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CriticConfig:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"Not a critic architecture: {data!r}.")
        return cls(
            check_integer(data["base_channels"], "critic base_channels"),
            check_integer(data["depth"], "critic depth"),
            str(data["norm"]),
        )


class Critic(nn.Module):
    """Maps (B, 1, H, W) images to (B,) realism scores (unbounded, WGAN style)."""

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CriticConfig()
        layers: list[nn.Module] = []
        in_channels = 1
        for level in range(config.depth):
            width = config.base_channels * 2**level
            # Biases only without normalisation: the layout "batch" and "none" checkpoints hold.
            layers.append(
                nn.Conv2d(in_channels, width, 4, stride=2, padding=1, bias=config.norm == "none")
            )
            if config.norm == "batch" and level > 0:
                layers.append(nn.BatchNorm2d(width))
            elif config.norm == "layer" and level > 0:
                layers.append(nn.GroupNorm(1, width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(in_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Realism score of each image."""
        return self.score(self.features(image).mean(dim=(2, 3)))[:, 0]
