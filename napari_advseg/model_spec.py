"""The model spec: how a segmentation network is fed and what its outputs mean.

One schema serves hand-written spec files (``--model-spec FILE``) and the ``spec`` entry of a
checkpoint's ``config.json`` (format version 2; version-1 configs, which held the same facts at
the top level, still load)::

    {"labels": {"1": "liver", "2": "spleen", "3": "kidneys", "4": "pancreas"},
     "pixel_spacing_mm": [1.5, 1.5],
     "normalization": {"kind": "window", "window_hu": [-175, 250], "output_range": [0, 1]},
     "input_multiple": 16,
     "orientation": "radiological"}

``min_size`` (smallest side the network takes, default twice ``input_multiple``) and
``description`` (free text) are optional; any other key is refused, so a typo is caught.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.normalization import Normalization
from .errors import InvalidInputError
from .labels import DEFAULT_LABEL_MAP, Label, LabelMap, label_map_from_names
from .validation import check_integer, check_number

ORIENTATIONS = ("radiological", "ras", "file")
"""How a model expects its axial slices laid out (see :mod:`napari_advseg.data.orientation`)."""

SPEC_KEYS = (
    "labels",
    "pixel_spacing_mm",
    "normalization",
    "input_multiple",
    "min_size",
    "orientation",
    "description",
)
REQUIRED_KEYS = ("labels", "pixel_spacing_mm", "normalization")
MAX_SPEC_BYTES = 1_000_000
"""A spec file is a few hundred bytes; a larger one is not a spec."""


@dataclass(frozen=True)
class ModelSpec:
    """How a segmentation network must be fed, and what its outputs mean.

    Attributes
    ----------
    label_map
        Names and colors of output channels 1..C (channel 0 is background).
    pixel_spacing
        In-plane pixel size (rows, columns) in mm that the network was trained at.
    normalization
        Intensity normalisation applied to Hounsfield units before the network.
    input_multiple
        Input height and width are padded to a multiple of this.
    min_size
        Smallest height or width, at the model's spacing, that the network accepts.
    orientation
        Layout of the axial slices the network expects: ``radiological`` (rows anterior to
        posterior, columns from the patient's right to left), ``ras`` (``data[:, :, k]`` of the
        volume reoriented to RAS+) or ``file`` (the voxel order stored in the file).
    """

    label_map: LabelMap = DEFAULT_LABEL_MAP
    pixel_spacing: tuple[float, float] = (3.0, 3.0)
    normalization: Normalization = field(default_factory=Normalization)
    input_multiple: int = 8
    min_size: int = 16
    orientation: str = "radiological"

    def __post_init__(self) -> None:
        if not isinstance(self.label_map, LabelMap):
            raise InvalidInputError(f"label_map must be a LabelMap, got {self.label_map!r}.")
        if not isinstance(self.normalization, Normalization):
            raise InvalidInputError(
                f"normalization must be a Normalization, got {self.normalization!r}."
            )
        if not isinstance(self.pixel_spacing, tuple | list) or len(self.pixel_spacing) != 2:
            raise InvalidInputError(
                f"pixel spacing must be two numbers (rows, columns), got {self.pixel_spacing!r}."
            )
        spacing = tuple(
            check_number(value, "pixel spacing (mm)", low=0.0, high=1000.0, low_open=True)
            for value in self.pixel_spacing
        )
        object.__setattr__(self, "pixel_spacing", spacing)
        check_integer(self.input_multiple, "input_multiple", low=1, high=4096)
        check_integer(self.min_size, "min_size", low=1, high=65536)
        if self.orientation not in ORIENTATIONS:
            raise InvalidInputError(
                f"orientation must be one of {', '.join(ORIENTATIONS)}, got {self.orientation!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec-file form (also the ``spec`` entry of a version-2 config)."""
        labels: dict[str, Any] = {}
        default = label_map_from_names({str(label.id): label.name for label in self.label_map})
        for label, usual in zip(self.label_map, default.labels, strict=True):
            same = label.color == usual.color
            labels[str(label.id)] = (
                label.name if same else {"name": label.name, "color": list(label.color)}
            )
        return {
            "labels": labels,
            "pixel_spacing_mm": list(self.pixel_spacing),
            "normalization": self.normalization.to_spec_dict(),
            "input_multiple": self.input_multiple,
            "min_size": self.min_size,
            "orientation": self.orientation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """A spec from its spec-file form; raises :class:`InvalidInputError` naming the key."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"a model spec must be a JSON object, got {_short(data)}.")
        unknown = [key for key in data if key not in SPEC_KEYS]
        if unknown:
            raise InvalidInputError(
                f"unknown key {unknown[0]!r} (a spec holds {', '.join(SPEC_KEYS)})."
            )
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise InvalidInputError(
                f"{missing[0]!r} is missing (needed: {', '.join(REQUIRED_KEYS)})."
            )
        spacing = data["pixel_spacing_mm"]
        if isinstance(spacing, int | float) and not isinstance(spacing, bool):
            spacing = [spacing, spacing]
        if not isinstance(spacing, list | tuple) or len(spacing) != 2:
            raise InvalidInputError(
                f"pixel_spacing_mm must be [rows, columns] in mm, got {_short(spacing)}."
            )
        multiple = _whole(data.get("input_multiple", 1), "input_multiple")
        min_size = _whole(data.get("min_size", max(16, 2 * multiple)), "min_size")
        return cls(
            label_map=_labels(data["labels"]),
            pixel_spacing=(_finite(spacing[0]), _finite(spacing[1])),
            normalization=_normalization(data["normalization"]),
            input_multiple=multiple,
            min_size=min_size,
            orientation=_orientation(data.get("orientation", "radiological")),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelSpec:
        """The spec of a checkpoint config: its ``spec`` entry, or version 1's top-level keys."""
        if "spec" in config:
            return cls.from_dict(config["spec"])
        return cls(
            label_map=LabelMap.from_dict(config["label_map"]),
            pixel_spacing=tuple(config["pixel_spacing_mm"]),  # type: ignore[arg-type]
            normalization=Normalization.from_dict(config["normalization"]),
            input_multiple=check_integer(config["input_multiple"], "input_multiple"),
            min_size=check_integer(config["min_size"], "min_size"),
        )

    def describe(self) -> str:
        """One line: how the model is fed (for logs and the command line)."""
        organs = ", ".join(self.label_map.names[:6])
        if len(self.label_map) > 6:
            organs += f", ... ({len(self.label_map)} organs)"
        return (
            f"{organs}; {_mm(self.pixel_spacing)} pixels; {self.normalization.describe()}; "
            f"padded to multiples of {self.input_multiple}; {self.orientation} slices"
        )

    def differences(self, other: ModelSpec) -> list[str]:
        """What differs between this spec and ``other``, one short phrase each."""
        found = []
        if self.label_map.names != other.label_map.names:
            found.append(f"labels {self.label_map.names} vs {other.label_map.names}")
        if self.pixel_spacing != other.pixel_spacing:
            found.append(f"pixel spacing {_mm(self.pixel_spacing)} vs {_mm(other.pixel_spacing)}")
        if self.normalization != other.normalization:
            found.append(
                f"normalisation {self.normalization.describe()} vs {other.normalization.describe()}"
            )
        if self.input_multiple != other.input_multiple:
            found.append(f"input multiple {self.input_multiple} vs {other.input_multiple}")
        if self.orientation != other.orientation:
            found.append(f"orientation {self.orientation} vs {other.orientation}")
        return found


def load_spec_file(path: str | os.PathLike[str]) -> ModelSpec:
    """Read a spec JSON file; any problem ends in one line naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such model spec file.")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise InvalidInputError(f"{path}: {path.stat().st_size} bytes is not a model spec file.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{path}: not valid JSON ({error}).") from error
    try:
        return ModelSpec.from_dict(data)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path}: {str(error).rstrip('.')}.") from error


def save_spec_file(path: str | os.PathLike[str], spec: ModelSpec) -> Path:
    """Write ``spec`` as a spec file (what :func:`load_spec_file` reads)."""
    path = Path(path)
    path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mm(spacing: tuple[float, float]) -> str:
    return f"{spacing[0]:g}x{spacing[1]:g} mm"


def _finite(value: Any, name: str = "pixel_spacing_mm") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must hold finite numbers, got {_short(value)}.")
    return float(value)


def _whole(value: Any, name: str) -> int:
    number = _finite(value, name)
    if number != int(number):
        raise InvalidInputError(f"{name} must be a whole number, got {_short(value)}.")
    return int(number)


def _orientation(value: Any) -> str:
    if value not in ORIENTATIONS:
        raise InvalidInputError(
            f"orientation must be one of {', '.join(ORIENTATIONS)}, got {_short(value)}."
        )
    return str(value)


def _normalization(value: Any) -> Normalization:
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            'normalization must be an object such as {"kind": "zscore", "clip_hu": [-1000, '
            f"1000]}}, got {_short(value)}."
        )
    known = ("kind", "method", "clip_hu", "window_hu", "output_range", "mean", "std")
    unknown = [key for key in value if key not in known]
    if unknown:
        raise InvalidInputError(
            f"normalization: unknown key {unknown[0]!r} (known: {', '.join(known)})."
        )
    if "kind" not in value and "method" not in value:
        raise InvalidInputError("normalization: 'kind' is missing (zscore, window or dataset).")
    for key in ("mean", "std"):
        if key in value:
            _finite(value[key], f"normalization.{key}")
    return Normalization.from_dict(value)


def _labels(value: Any) -> LabelMap:
    """A spec's ``labels``: channel -> name, or channel -> {"name", "color"}."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            'labels must map output channels to organ names, e.g. {"1": "liver"}, got '
            f"{_short(value)}."
        )
    names: dict[str, str] = {}
    colors: dict[str, tuple[int, int, int]] = {}
    for key, entry in value.items():
        if isinstance(entry, Mapping):
            if set(entry) - {"name", "color"} or "name" not in entry:
                raise InvalidInputError(
                    f'labels: channel {key}: give a name or {{"name": ..., "color": [r, g, b]}}.'
                )
            color = entry.get("color")
            if color is not None:
                if (
                    not isinstance(color, list | tuple)
                    or len(color) != 3
                    or not all(
                        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                        for c in color
                    )
                ):
                    raise InvalidInputError(
                        f"labels: channel {key}: color must be 3 integers 0-255, got "
                        f"{_short(color)}."
                    )
                colors[_channel_key(key)] = (color[0], color[1], color[2])
            entry = entry["name"]
        names[str(key)] = entry
    label_map = label_map_from_names(names)
    if not colors:
        return label_map
    return LabelMap(
        tuple(
            Label(label.id, label.name, colors.get(str(label.id), label.color))
            for label in label_map
        )
    )


def _channel_key(key: Any) -> str:
    try:
        return str(int(key))
    except (TypeError, ValueError):
        return str(key)
