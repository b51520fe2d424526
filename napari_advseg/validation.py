"""Checks a request passes before any work starts: numbers, output locations, memory and disk.

Every check raises an :class:`~napari_advseg.errors.AdvsegError` subclass whose message names the
value and says what to do, so the command line prints one line and the widgets one notification.
The ``arg_*`` factories make argparse ``type=`` callables from the same checks.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InvalidInputError, ResourceError


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (``(low, high]`` with ``low_open``)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{name} must be a number, got {value!r}.") from error
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and (number <= low if low_open else number < low):
        relation = ">" if low_open else ">="
        raise InvalidInputError(f"{name} must be {relation} {low:g}, got {number:g}.")
    if high is not None and number > high:
        raise InvalidInputError(f"{name} must be <= {high:g}, got {number:g}.")
    return number


def check_integer(
    value: object, name: str, *, low: int | None = None, high: int | None = None
) -> int:
    """``value`` as an int in [low, high]; a float with a fractional part is refused."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.") from error
    if not math.isfinite(number) or number != int(number):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}.")
    integer = int(number)
    if low is not None and integer < low:
        raise InvalidInputError(f"{name} must be >= {low}, got {integer}.")
    if high is not None and integer > high:
        raise InvalidInputError(f"{name} must be <= {high}, got {integer}.")
    return integer


def arg_float(
    low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float in range (NaN and inf are refused)."""
    import argparse

    def parse(text: str) -> float:
        try:
            return check_number(text, "value", low=low, high=high, low_open=low_open)
        except InvalidInputError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ")) from error

    parse.__name__ = "number"
    return parse


def arg_int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in range."""
    import argparse

    def parse(text: str) -> int:
        try:
            return check_integer(text, "value", low=low, high=high)
        except InvalidInputError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ")) from error

    parse.__name__ = "integer"
    return parse


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the one test that read-only mounts cannot fool."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".advseg-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InvalidInputError(
            f"{what}: cannot write into {folder} ({reason}); choose a writable location."
        ) from error


def check_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is or can become a writable folder.

    Refused: an existing file, a path under a file, and a location that cannot be written (no
    permission, a read-only file system). Nothing is created.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{what} {path}: is a file, not a folder; choose a folder.")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise InvalidInputError(
            f"{what} {path}: {existing} is a file, so no folder can be made under it."
        )
    _probe_writable(existing, f"{what} {path}")
    return path


def check_output_file(
    path: str | os.PathLike[str], what: str = "--json", suffixes: tuple[str, ...] = ()
) -> Path:
    """Check, before any work, that a file can be written at ``path`` (not a folder, writable)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InvalidInputError(f"{what} {path}: is a folder; give a file name.")
    if suffixes and not str(path).lower().endswith(suffixes):
        raise InvalidInputError(f"{what} {path}: must end in {' or '.join(suffixes)}.")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise InvalidInputError(
            f"{what} {path}: {existing} is a file, so nothing can be written under it."
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidInputError(f"{what} {path}: exists and is not writable.")
    _probe_writable(existing, f"{what} {path}")
    return path


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``count`` bytes in a readable unit (1.5 GB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


def check_memory(needed: float, what: str) -> None:
    """Refuse a request that needs more memory than the machine has free."""
    free = available_memory()
    if free is not None and needed > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed)} of memory but {format_bytes(free)} is "
            "free; use a smaller request."
        )


def check_disk(path: str | os.PathLike[str], needed: float, what: str) -> None:
    """Refuse a request that needs more disk at ``path`` than is free there."""
    free = shutil.disk_usage(_nearest_existing(Path(path).expanduser())).free
    if needed > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(needed)} of disk at {path} but "
            f"{format_bytes(free)} is free; write fewer outputs or free some space."
        )
