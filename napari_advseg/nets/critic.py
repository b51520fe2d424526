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


@dataclass(frozen=True)
class CriticConfig:
    """Architecture of a :class:`Critic`.

    ``norm="batch"`` follows the paper (batch norm after convolutions) and suits weight clipping;
    use ``"none"`` with the gradient penalty, whose per-sample gradients batch norm would mix.
    """

    base_channels: int = 16
    depth: int = 4
    norm: str = "batch"

    def __post_init__(self) -> None:
        if self.norm not in ("batch", "none"):
            raise InvalidInputError(f"Critic norm must be 'batch' or 'none', got {self.norm!r}.")
        check_integer(self.base_channels, "critic base_channels", low=1, high=MAX_CHANNELS)
        check_integer(self.depth, "critic depth", low=1, high=10)

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
            layers.append(
                nn.Conv2d(in_channels, width, 4, stride=2, padding=1, bias=config.norm == "none")
            )
            if config.norm == "batch" and level > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(in_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Realism score of each image."""
        return self.score(self.features(image).mean(dim=(2, 3)))[:, 0]
