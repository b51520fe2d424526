"""Choosing the torch device: CUDA, then Apple MPS, then the CPU, unless told otherwise."""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def select_device(preference: str = "auto") -> torch.device:
    """Return the device to run on.

    Parameters
    ----------
    preference
        ``"auto"`` picks CUDA when present, then MPS, then the CPU; ``"cuda"``, ``"cuda:1"``,
        ``"mps"`` or ``"cpu"`` force one and fail clearly if it is not there.
    """
    name = preference.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise InvalidInputError(
            f"Unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "CUDA was asked for but this torch sees no CUDA GPU; use --device auto or cpu."
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(
            "MPS was asked for but is not available here; use --device auto or cpu."
        )
    return torch.device(name)
