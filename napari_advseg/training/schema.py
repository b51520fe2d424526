"""Checks of a checkpoint's ``config.json`` before anything is built from it.

A config edited by hand or damaged on disk (a null where a mapping belongs, a list for an
architecture, a string for a size) must end in one :class:`CheckpointError` line naming the
entry, never in a traceback from deep inside the loader. These checks look at types and shape;
the ranges are checked by the dataclasses the entries become (``UNetConfig``, ``ModelSpec``,
``AttackerConfig``, ...), whose errors the loaders turn into the same kind of line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import AdvsegError, CheckpointError

_KINDS: dict[str, Callable[[Any], bool]] = {
    "a mapping": lambda v: isinstance(v, Mapping),
    "a list": lambda v: isinstance(v, list),
    "a string": lambda v: isinstance(v, str),
    "true or false": lambda v: isinstance(v, bool),
    "a whole number": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and math.isfinite(v) and v == int(v))
    ),
    "a finite number": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ),
}


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigChecker:
    """Type checks of one config file, each failing with one line that names the entry."""

    def __init__(self, folder: str | Path) -> None:
        self.where = Path(folder) / "config.json"

    def fail(self, key: str, message: str) -> CheckpointError:
        """The error for entry ``key``."""
        return CheckpointError(
            f"{self.where}: {key} {message}; the checkpoint is damaged or was edited by hand."
        )

    def expect(self, value: Any, kind: str, key: str, *, optional: bool = False) -> Any:
        """``value`` if it is of ``kind`` (a key of the kinds above), else raise."""
        if optional and value is None:
            return value
        if not _KINDS[kind](value):
            raise self.fail(
                key, f"must be {kind}{' or null' if optional else ''}, got {_short(value)}"
            )
        return value

    def entry(self, data: Mapping[str, Any], name: str, kind: str, prefix: str = "") -> Any:
        """``data[name]``, required and of ``kind``."""
        key = f"{prefix}{name}"
        if name not in data:
            raise self.fail(key, "is missing")
        return self.expect(data[name], kind, key)

    def numbers(self, value: Any, key: str, length: int) -> list[float]:
        """A list of exactly ``length`` finite numbers."""
        self.expect(value, "a list", key)
        if len(value) != length:
            raise self.fail(key, f"must hold {length} numbers, got {_short(value)}")
        for index, item in enumerate(value):
            self.expect(item, "a finite number", f"{key}[{index}]")
        return value

    def fields(
        self,
        data: Mapping[str, Any],
        key: str,
        kinds: Mapping[str, str],
        required: tuple[str, ...] = (),
    ) -> None:
        """A mapping whose entries are all known, of their kinds, and hold ``required``."""
        self.expect(data, "a mapping", key)
        for name in required:
            if name not in data:
                raise self.fail(f"{key}.{name}", "is missing")
        for name, value in data.items():
            if name not in kinds:
                raise self.fail(f"{key}.{name}", f"is not a known entry ({', '.join(kinds)})")
            self.expect(value, kinds[name], f"{key}.{name}")

    def build(self, what: str, make: Callable[[], Any]) -> Any:
        """Call ``make``; turn the errors of a well-typed but invalid entry into one line."""
        try:
            return make()
        except (AdvsegError, KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, CheckpointError):
                raise
            message = str(error).rstrip(".") or type(error).__name__
            raise CheckpointError(
                f"{self.where}: invalid {what} ({message}); the checkpoint is damaged or was "
                "edited by hand."
            ) from error


UNET_ARCHITECTURE = {
    "name": "a string",
    "num_classes": "a whole number",
    "base_channels": "a whole number",
    "depth": "a whole number",
    "in_channels": "a whole number",
}
ATTACKER_ARCHITECTURE = {
    "latent_dim_d": "a whole number",
    "latent_dim_v": "a whole number",
    "base_channels": "a whole number",
    "depth": "a whole number",
    "output_stride": "a whole number",
    "mode": "a string",
}
CRITIC_ARCHITECTURE = {
    "base_channels": "a whole number",
    "depth": "a whole number",
    "norm": "a string",
}


def check_model_spec(checker: ConfigChecker, config: Mapping[str, Any]) -> None:
    """Types of a model config's spec: its ``spec`` entry (version 2) or version 1's entries.

    A version-2 spec is checked by :meth:`ModelSpec.from_dict` itself (through ``build``), whose
    one-line errors name the key.
    """
    if "spec" in config:
        checker.entry(config, "spec", "a mapping")
        return
    label_map = checker.entry(config, "label_map", "a mapping")
    labels = checker.entry(label_map, "labels", "a list", "label_map.")
    for index, label in enumerate(labels):
        key = f"label_map.labels[{index}]"
        checker.fields(
            label,
            key,
            {"id": "a whole number", "name": "a string", "color": "a list"},
            ("id", "name", "color"),
        )
        color = label["color"]
        if len(color) != 3 or not all(_KINDS["a whole number"](c) and 0 <= c <= 255 for c in color):
            raise checker.fail(f"{key}.color", f"must be 3 integers 0-255, got {_short(color)}")
    checker.numbers(checker.entry(config, "pixel_spacing_mm", "a list"), "pixel_spacing_mm", 2)
    normalization = checker.entry(config, "normalization", "a mapping")
    checker.entry(normalization, "method", "a string", "normalization.")
    clip = normalization.get("clip_hu")
    if clip is not None:
        checker.numbers(clip, "normalization.clip_hu", 2)
    checker.entry(config, "input_multiple", "a whole number")
    checker.entry(config, "min_size", "a whole number")


def check_unet_config(folder: str | Path, config: Mapping[str, Any]) -> ConfigChecker:
    """Types and shape of a U-Net checkpoint's config; returns the checker for its builds."""
    checker = ConfigChecker(folder)
    architecture = checker.entry(config, "architecture", "a mapping")
    checker.fields(architecture, "architecture", UNET_ARCHITECTURE, ("name",))
    check_model_spec(checker, config)
    checker.expect(config.get("training", {}), "a mapping", "training")
    return checker


def check_attacker_config(folder: str | Path, config: Mapping[str, Any]) -> ConfigChecker:
    """Types and shape of an attacker checkpoint's config; returns the checker for its builds."""
    checker = ConfigChecker(folder)
    checker.fields(
        checker.entry(config, "attacker", "a mapping"), "attacker", ATTACKER_ARCHITECTURE
    )
    critic = config.get("critic")
    if critic is not None:
        checker.fields(critic, "critic", CRITIC_ARCHITECTURE, tuple(CRITIC_ARCHITECTURE))
    attack = checker.entry(config, "attack", "a mapping")
    checker.entry(attack, "xi", "a finite number", "attack.")
    for name, value in attack.items():
        if isinstance(value, (Mapping, list)) or value is None:
            raise checker.fail(
                f"attack.{name}", f"must be a number, text or true/false, got {_short(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise checker.fail(f"attack.{name}", f"must be a finite number, got {value!r}")
    if "eq5" in attack:
        from .losses import EQ5_FORMS

        if attack["eq5"] not in EQ5_FORMS:
            raise checker.fail(
                "attack.eq5", f"must be one of {', '.join(EQ5_FORMS)}, got {_short(attack['eq5'])}"
            )
    target = config.get("target", {})
    checker.expect(target, "a mapping", "target")
    checker.expect(target.get("name"), "a string", "target.name", optional=True)
    checker.expect(target.get("weights_sha256"), "a string", "target.weights_sha256", optional=True)
    labels = checker.expect(target.get("labels"), "a list", "target.labels", optional=True)
    for index, name in enumerate(labels or []):
        checker.expect(name, "a string", f"target.labels[{index}]")
    if target.get("spec") is not None:
        from ..model_spec import ModelSpec

        checker.expect(target["spec"], "a mapping", "target.spec")
        checker.build("target.spec", lambda: ModelSpec.from_dict(target["spec"]))
    training = checker.expect(config.get("training", {}), "a mapping", "training")
    if "step" in training:
        checker.expect(training["step"], "a whole number", "training.step")
    if "resume" in training:
        checker.expect(training["resume"], "a mapping", "training.resume")
    return checker
