"""The label map: the one source of truth for organ names, ids and colors."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError

MAX_LISTED = 10
"""At most this many unknown label values are named in an error message."""


@dataclass(frozen=True)
class Label:
    """One foreground class: integer id, name and RGB color (0-255)."""

    id: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex_color(self) -> str:
        """Color as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass(frozen=True)
class LabelMap:
    """Foreground labels with consecutive ids ``1..C``; id 0 is always background."""

    labels: tuple[Label, ...]

    def __post_init__(self) -> None:
        ids = [label.id for label in self.labels]
        if ids != list(range(1, len(ids) + 1)):
            raise InvalidInputError(
                f"Label ids must be 1, 2, ..., C in order (0 is background); got {ids}."
            )
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names) or "background" in names:
            raise InvalidInputError(
                f"Label names must be unique and not 'background'; got {names}."
            )

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        """Foreground names in id order."""
        return [label.name for label in self.labels]

    @property
    def num_classes(self) -> int:
        """Number of network output channels, background included (C + 1)."""
        return len(self.labels) + 1

    def by_name(self, name: str) -> Label:
        """Return the label called ``name``."""
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"No label named {name!r}; known: {', '.join(self.names)}.")

    def colors_rgba(self) -> dict[int, tuple[float, float, float, float]]:
        """Colors as RGBA floats in [0, 1] by id, with transparent background (for viewers)."""
        colors: dict[int, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
        for label in self.labels:
            r, g, b = (c / 255.0 for c in label.color)
            colors[label.id] = (r, g, b, 1.0)
        return colors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in a model's config."""
        return {
            "labels": [
                {"id": label.id, "name": label.name, "color": list(label.color)}
                for label in self.labels
            ]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelMap:
        """Inverse of :meth:`to_dict`."""
        try:
            labels = tuple(
                Label(int(item["id"]), str(item["name"]), tuple(int(c) for c in item["color"]))
                for item in data["labels"]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"Malformed label map {dict(data)!r}: {error}.") from error
        return cls(labels)

    def check_values(self, values: np.ndarray, source: str) -> None:
        """Raise if ``values`` holds a label id that this map does not know.

        Parameters
        ----------
        values
            An integer label array.
        source
            Where the values come from, for the message (a file name or a layer name).
        """
        values = np.asarray(values)
        if values.size == 0:
            return
        if 0 <= values.min() and values.max() <= len(self.labels):
            return  # the common case, without sorting the whole volume
        present = np.unique(values)
        unknown = present[(present < 0) | (present > len(self.labels))]
        if unknown.size:
            known = ", ".join(f"{label.id} {label.name}" for label in self.labels)
            shown = ", ".join(f"{value:g}" for value in unknown[:MAX_LISTED].tolist())
            listed = (
                f"[{shown}]"
                if unknown.size <= MAX_LISTED
                else f"[{shown}, ...] ({unknown.size} in all; is this an image, not labels?)"
            )
            raise InvalidInputError(
                f"{source}: unknown label values {listed}; this label map has "
                f"0 background, {known}. Relabel the volume or use a model trained on its labels."
            )


DEFAULT_LABEL_MAP = LabelMap(
    (
        Label(1, "pancreas", (31, 119, 255)),
        Label(2, "kidneys", (44, 200, 44)),
        Label(3, "liver", (255, 150, 20)),
        Label(4, "spleen", (230, 30, 30)),
    )
)
"""The paper's four organs in its colors: pancreas blue, kidneys green, liver orange, spleen red."""

PAPER_COLORS = {label.name: label.color for label in DEFAULT_LABEL_MAP}
"""The paper's colour of each of its organs, kept whatever channel a model gives the organ."""


def palette_color(index: int) -> tuple[int, int, int]:
    """A distinct, saturated colour for the ``index``-th class (golden-ratio hues, any count)."""
    hue = (0.13 + index * 0.618033988749895) % 1.0
    value = 1.0 if index % 2 == 0 else 0.8
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, value)
    return (round(red * 255), round(green * 255), round(blue * 255))


def label_map_from_names(names: Mapping[str | int, str]) -> LabelMap:
    """The label map of a spec's ``labels`` entry: output channel (1..C) -> organ name.

    Channels may be given in any order, as strings (JSON keys) or integers, for any number of
    classes; they must be exactly 1..C. The paper's four organs keep the paper's colours, other
    organs get palette colours.

    Raises
    ------
    InvalidInputError
        If a channel is not a whole number, the channels are not 1..C, or a name is empty.
    """
    if not isinstance(names, Mapping) or not names:
        raise InvalidInputError(
            'labels must map output channels to organ names, e.g. {"1": "liver", "2": "spleen"}.'
        )
    channels: dict[int, str] = {}
    for key, name in names.items():
        try:
            channel = int(key)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(
                f"labels: channel {key!r} is not a whole number (channels are 1..C)."
            ) from error
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"labels: channel {channel} needs an organ name.")
        channels[channel] = name.strip()
    if sorted(channels) != list(range(1, len(channels) + 1)):
        raise InvalidInputError(
            f"labels: channels must be 1..{len(channels)} (0 is background), got "
            f"{sorted(channels)}."
        )
    labels = []
    for channel in sorted(channels):
        name = channels[channel]
        color = PAPER_COLORS.get(name.lower(), palette_color(channel - 1))
        labels.append(Label(channel, name, color))
    return LabelMap(tuple(labels))
