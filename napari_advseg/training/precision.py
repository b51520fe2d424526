"""Speed options of the trainers: bfloat16 autocast and channels-last memory."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..errors import InvalidInputError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else one line that says so."""
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}."
        )
    return precision


def autocast(device: torch.device | str, precision: str) -> Any:
    """The forward passes' context: bfloat16 autocast on ``device`` for ``"bf16"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` when asked, else the default layout."""
    return torch.channels_last if channels_last else torch.contiguous_format
