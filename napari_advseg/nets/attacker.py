"""The generator of Chen et al. 2019 (section 3.1): an encoder, two latents, two decoders.

Architecture
------------
Encoder: ``depth`` levels of two 3x3 convolutions, each followed by batch norm and
LeakyReLU(0.2); every level after the first halves the resolution with a stride-2 convolution.
The deepest features are averaged over the image and mapped by two linear heads to
``(mu_D, log sigma_D^2)`` and ``(mu_V, log sigma_V^2)``: low-dimensional latents, one slider each
in the app.

Decoders (D and V: same architecture, separate weights): each latent is broadcast over the
deepest feature map and concatenated with it (as in the probabilistic U-Net the paper cites), then
the decoder climbs back up, concatenating the encoder's features of I0 at each level, so D and V
follow the anatomy of I0. They stop at a quarter of the input resolution (``output_stride``) and
the field is upsampled bilinearly: D and V are smooth by construction. Their last convolution
starts at zero, so training starts from the identity (D = 0, V = 0).

D has two channels (displacement in pixels along x and y), V one (in I0's normalised units);
``I_DV = warp(I0, D) + V``. Modes ``"d"`` and ``"v"`` zero the other field (the paper's I_D and
I_V rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..validation import check_integer, check_number
from .unet import MAX_CHANNELS
from .warp import warp

MAX_LATENT = 4096
"""Upper bound of a latent size (each dimension is one slider in the app)."""

ATTACK_MODES = ("dv", "d", "v")
LATENT_SOURCES = ("posterior", "mean", "prior")


@dataclass(frozen=True)
class AttackerConfig:
    """Architecture of an :class:`Attacker`."""

    latent_dim_d: int = 8
    latent_dim_v: int = 8
    base_channels: int = 16
    depth: int = 4
    output_stride: int = 4
    mode: str = "dv"

    def __post_init__(self) -> None:
        if self.mode not in ATTACK_MODES:
            raise InvalidInputError(
                f"Attack mode must be one of {ATTACK_MODES}, got {self.mode!r}."
            )
        check_integer(self.latent_dim_d, "attacker latent_dim_d", low=1, high=MAX_LATENT)
        check_integer(self.latent_dim_v, "attacker latent_dim_v", low=1, high=MAX_LATENT)
        check_integer(self.base_channels, "attacker base_channels", low=1, high=MAX_CHANNELS)
        check_integer(self.depth, "attacker depth", low=2, high=10)
        check_integer(self.output_stride, "attacker output_stride", low=1)
        levels = self.output_stride.bit_length() - 1
        if self.output_stride < 1 or 2**levels != self.output_stride or levels >= self.depth:
            raise InvalidInputError(
                "output_stride must be a power of two below 2**(depth - 1); "
                f"got {self.output_stride}."
            )

    @property
    def stride(self) -> int:
        """Inputs must be padded to a multiple of this."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackerConfig:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"Not an attacker architecture: {data!r}.")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"Unknown attacker architecture entries {sorted(unknown)}.")
        return cls(
            **{
                k: (str(v) if k == "mode" else check_integer(v, f"attacker {k}"))
                for k, v in data.items()
            }
        )


@dataclass
class Posterior:
    """Means and standard deviations of q(z_D | I0) and q(z_V | I0), each (B, latent size)."""

    mu_d: torch.Tensor
    sigma_d: torch.Tensor
    mu_v: torch.Tensor
    sigma_v: torch.Tensor
    logvar_d: torch.Tensor
    logvar_v: torch.Tensor


@dataclass
class Encoding:
    """The encoder's features of I0 (shallow to deep) and its latent posterior."""

    features: list[torch.Tensor]
    posterior: Posterior


@dataclass
class AttackOutput:
    """A generated attack: deformation D (B, 2, H, W), intensity change V (B, 1, H, W), I_DV."""

    displacement: torch.Tensor
    intensity: torch.Tensor
    image: torch.Tensor


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and LeakyReLU(0.2); the first may stride."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class Decoder(nn.Module):
    """Latent + encoder features -> a smooth field of ``out_channels`` at full resolution."""

    def __init__(
        self, widths: list[int], latent_dim: int, out_channels: int, levels_up: int
    ) -> None:
        super().__init__()
        self.bottom = conv_block(widths[-1] + latent_dim, widths[-1])
        self.up = nn.ModuleList()
        width = widths[-1]
        for level in range(levels_up):
            skip = widths[-2 - level]
            self.up.append(conv_block(width + skip, skip))
            width = skip
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, features: list[torch.Tensor], z: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Decode ``z`` (B, latent) against the encoder's ``features``; upsample to ``size``."""
        deep = features[-1]
        tiled = z[:, :, None, None].expand(-1, -1, *deep.shape[-2:])
        x = self.bottom(torch.cat([deep, tiled], dim=1))
        for level, block in enumerate(self.up):
            skip = features[-2 - level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


class Attacker(nn.Module):
    """The generator f_gen: I0 -> (D, V, I_DV). See the module docstring."""

    def __init__(self, config: AttackerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AttackerConfig()
        widths = [config.base_channels * 2**level for level in range(config.depth)]
        self.encoder = nn.ModuleList(
            conv_block(1 if level == 0 else widths[level - 1], width, stride=1 if level == 0 else 2)
            for level, width in enumerate(widths)
        )
        self.head_d = nn.Linear(widths[-1], 2 * config.latent_dim_d)
        self.head_v = nn.Linear(widths[-1], 2 * config.latent_dim_v)
        levels_up = config.depth - 1 - (config.output_stride.bit_length() - 1)
        self.decoder_d = Decoder(widths, config.latent_dim_d, 2, levels_up)
        self.decoder_v = Decoder(widths, config.latent_dim_v, 1, levels_up)

    def encode(self, image: torch.Tensor) -> Encoding:
        """Features of I0 and the posterior of both latents."""
        features = []
        x = image
        for block in self.encoder:
            x = block(x)
            features.append(x)
        pooled = x.mean(dim=(2, 3))
        mu_d, logvar_d = self.head_d(pooled).chunk(2, dim=1)
        mu_v, logvar_v = self.head_v(pooled).chunk(2, dim=1)
        logvar_d = logvar_d.clamp(-10.0, 10.0)
        logvar_v = logvar_v.clamp(-10.0, 10.0)
        posterior = Posterior(
            mu_d, torch.exp(0.5 * logvar_d), mu_v, torch.exp(0.5 * logvar_v), logvar_d, logvar_v
        )
        return Encoding(features, posterior)

    def sample_latents(
        self,
        posterior: Posterior,
        source: str = "posterior",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw (z_D, z_V): from the posterior, its mean, or the prior N(0, I).

        ``temperature`` scales the standard deviation of the draw; with a seeded ``generator``
        the draw is deterministic.
        """
        if source not in LATENT_SOURCES:
            raise InvalidInputError(
                f"Latent source must be one of {LATENT_SOURCES}, got {source!r}."
            )
        if source == "mean":
            return posterior.mu_d, posterior.mu_v
        temperature = check_number(temperature, "temperature", low=0.0, high=100.0)

        def noise(like: torch.Tensor) -> torch.Tensor:
            sample = torch.randn(like.shape, generator=generator, dtype=like.dtype)
            return sample.to(like.device) * temperature

        if source == "prior":
            return noise(posterior.mu_d), noise(posterior.mu_v)
        return (
            posterior.mu_d + posterior.sigma_d * noise(posterior.mu_d),
            posterior.mu_v + posterior.sigma_v * noise(posterior.mu_v),
        )

    def decode(
        self, encoding: Encoding, image: torch.Tensor, z_d: torch.Tensor, z_v: torch.Tensor
    ) -> AttackOutput:
        """D, V and I_DV for latents ``z_d``, ``z_v`` and the encoded ``image`` (I0)."""
        size = tuple(image.shape[-2:])
        if self.config.mode == "v":
            displacement = image.new_zeros(image.shape[0], 2, *size)
        else:
            displacement = self.decoder_d(encoding.features, z_d, size)
        if self.config.mode == "d":
            intensity = image.new_zeros(image.shape[0], 1, *size)
        else:
            intensity = self.decoder_v(encoding.features, z_v, size)
        attacked = warp(image, displacement) + intensity
        return AttackOutput(displacement, intensity, attacked)

    def generate(self, image: torch.Tensor, z_d: torch.Tensor, z_v: torch.Tensor) -> AttackOutput:
        """Encode I0, then decode the given latents."""
        return self.decode(self.encode(image), image, z_d, z_v)

    def forward(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[AttackOutput, Posterior]:
        """Training pass: sample the posterior by the reparameterisation trick and decode."""
        encoding = self.encode(image)
        z_d, z_v = self.sample_latents(encoding.posterior, "posterior", 1.0, generator)
        return self.decode(encoding, image, z_d, z_v), encoding.posterior
