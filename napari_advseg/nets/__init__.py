"""Pure-torch networks: the U-Net to be attacked (and, later, the attacker and critic)."""

from .unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
