"""A standard 2D U-Net (Ronneberger et al. 2015) with batch normalisation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_integer

MAX_CHANNELS = 2**20
"""Upper bound of any channel count: a guard against absurd values; whether a network fits is
decided by the memory estimate of :mod:`napari_advseg.training.memory`."""


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`.

    Attributes
    ----------
    num_classes
        Output channels, background included (C + 1).
    base_channels
        Feature maps at the first level; each level down doubles them.
    depth
        Resolution levels; inputs are padded to a multiple of ``2 ** (depth - 1)``.
    in_channels
        Input channels (1 for CT).
    """

    num_classes: int = 5
    base_channels: int = 16
    depth: int = 4
    in_channels: int = 1

    def __post_init__(self) -> None:
        check_integer(self.num_classes, "U-Net num_classes", low=2, high=256)
        check_integer(self.base_channels, "U-Net base_channels", low=1, high=MAX_CHANNELS)
        check_integer(self.depth, "U-Net depth", low=2, high=7)
        check_integer(self.in_channels, "U-Net in_channels", low=1, high=16)

    @property
    def stride(self) -> int:
        """Total downsampling factor; input sizes are padded to a multiple of it."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": "unet", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or data.get("name") != "unet":
            raise InvalidInputError(f"Not a U-Net architecture: {data!r}.")
        unknown = set(data) - {"name", *cls.__dataclass_fields__}
        if unknown:
            raise InvalidInputError(f"Unknown U-Net architecture entries {sorted(unknown)}.")
        return cls(
            **{
                key: check_integer(value, f"U-Net {key}")
                for key, value in data.items()
                if key != "name"
            }
        )


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Maps (B, in_channels, H, W) images to (B, num_classes, H, W) logits.

    H and W must be multiples of ``config.stride``; :mod:`napari_advseg.inference` pads and crops.
    """

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.depth)]
        self.down = nn.ModuleList()
        in_channels = config.in_channels
        for width in widths:
            self.down.append(ConvBlock(in_channels, width))
            in_channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.up.append(ConvBlock(width * 2, width))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of the same height and width as ``x``."""
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)
