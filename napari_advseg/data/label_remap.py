"""Matching a dataset's label values to a model's output channels, by organ name or a file.

A dataset numbers its organs its own way (an nnU-Net or Decathlon ``dataset.json`` says
``1 liver, 2 spleen``); a model has its own channels (``1 pancreas, 2 kidneys, 3 liver,
4 spleen``). :func:`match_labels` pairs them by name and returns a value -> channel table that
:func:`remap_array` applies to each label volume.

Rules
-----
* Names match after :func:`normalize_name` (case-folded, with runs of spaces, ``_`` and ``-``
  made one space), so ``Liver_Tumour`` matches ``liver tumour``. The one synonym is
  ``kidney``/``kidneys``; anything else (``left kidney`` + ``right kidney`` -> ``kidneys``)
  needs a label-map file.
* Without a file, every data label must match a model organ and every model organ must be in
  the data.
* A label-map file (``--label-map FILE``) is a JSON object ``{"<data value or name>": "<model
  organ or background>"}``. Data labels it does not name are still matched by name; several data
  labels may go to one organ; ``background`` drops a label. With a file, model organs that no
  data label maps to are allowed (the user says the data is labelled partially);
  :func:`unmapped_organs` lists them so that a caller can say so.
* Label volumes without names (plain ``--labels`` files): their values are the model's channels,
  unless a file keyed by value says what each value is; values it does not list are refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..labels import MAX_LISTED, LabelMap
from .json_file import read_json_object
from .lazy import LazyVolumes
from .nifti import lazy_volumes
from .volume import Volume, integer_labels

BACKGROUND = "background"
SYNONYMS = {"kidney": "kidneys"}
"""Normalised names taken as another (the singular of an organ that models name in plural)."""

MAX_LABEL_VALUE = 65535
"""Largest label value read (a lookup table this long is cheap; NIfTI labels are small ints)."""

MAX_FILE_BYTES = 1 << 20
"""A label-map file is a few lines; anything bigger than this is not one."""

PathLike = str | os.PathLike[str]


def normalize_name(name: str) -> str:
    """An organ name as names are compared: ``"Liver_Tumour "`` -> ``"liver tumour"``."""
    return re.sub(r"[\s_\-]+", " ", str(name).casefold()).strip()


def _canonical(name: str) -> str:
    normal = normalize_name(name)
    return SYNONYMS.get(normal, normal)


def _model_channel(name: str, model: LabelMap) -> int | None:
    """The model channel an organ name matches (0 for background), or None."""
    if normalize_name(name) == BACKGROUND:
        return 0
    for label in model:
        if normalize_name(label.name) == normalize_name(name):
            return label.id
    for label in model:
        if _canonical(label.name) == _canonical(name):
            return label.id
    return None


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown}, ... ({len(items)} in all)"


def _organs(model: LabelMap) -> str:
    return _listing([f"{label.id} {label.name}" for label in model])


def _values(labels: Mapping[int, str]) -> str:
    return _listing([f"{value} {name}" for value, name in sorted(labels.items())]) or "none"


def read_label_map_file(path: PathLike) -> dict[str, str]:
    """Read a label-map file: a JSON object of data label (value or name) -> model organ name.

    Only the form is checked here (a non-empty object of text to text, no key twice);
    :func:`match_labels` checks the keys against the data and the values against the model.

    Raises
    ------
    InvalidInputError
        If the file is missing, too big, not JSON, or not such an object.
    """
    path = Path(path)
    example = 'e.g. {"left kidney": "kidneys", "right kidney": "kidneys", "2": "background"}'
    data = read_json_object(path, "a label-map file", MAX_FILE_BYTES, f"; {example}")
    if not data:
        raise InvalidInputError(
            f"{path}: a label-map file must be a non-empty JSON object of data label -> model "
            f"organ, {example}."
        )
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip() or not key.strip():
            raise InvalidInputError(
                f"{path}: entry {key!r}: {value!r} must map a data label to a model organ name "
                f"(or 'background'), {example}."
            )
    entries = {key.strip(): value.strip() for key, value in data.items()}
    if len(entries) != len(data):
        raise InvalidInputError(f"{path}: a key is given twice (with other spaces); keep one.")
    return entries


def _data_value(key: str, data_labels: Mapping[int, str] | None, file: Path, source: str) -> int:
    """The data label value a label-map file key names (a value or a data name)."""
    if re.fullmatch(r"\d+", key):
        value = int(key)
        if value > MAX_LABEL_VALUE:
            raise InvalidInputError(f"{file}: label value {value} is too large (0..65535).")
        if data_labels is not None and value != 0 and value not in data_labels:
            raise InvalidInputError(
                f"{file}: key {key!r} matches no label of {source} ({_values(data_labels)})."
            )
        return value
    if data_labels is None:
        raise InvalidInputError(
            f"{file}: key {key!r} is a name, but {source} has no label names; key the file by "
            'label value, e.g. {"1": "liver", "2": "spleen"}.'
        )
    found = [v for v, name in data_labels.items() if normalize_name(name) == normalize_name(key)]
    if not found:
        raise InvalidInputError(
            f"{file}: key {key!r} matches no label of {source} ({_values(data_labels)})."
        )
    return found[0]


def _file_mapping(
    file: Path, data_labels: Mapping[int, str] | None, model: LabelMap, source: str
) -> dict[int, int]:
    """Data value -> model channel for the entries of a label-map file."""
    mapping: dict[int, int] = {}
    keys: dict[int, str] = {}
    for key, organ in read_label_map_file(file).items():
        value = _data_value(key, data_labels, file, source)
        if value in keys:
            raise InvalidInputError(
                f"{file}: keys {keys[value]!r} and {key!r} both name data label {value}; keep one."
            )
        keys[value] = key
        channel = _model_channel(organ, model)
        if channel is None:
            raise InvalidInputError(
                f"{file}: {organ!r} (for {key!r}) is not an organ of the model; its organs are "
                f"{_organs(model)} (or 'background' to drop a label)."
            )
        if value == 0 and channel != 0:
            raise InvalidInputError(
                f"{file}: label 0 is background and can only map to 'background', not {organ!r}."
            )
        mapping[value] = channel
    return mapping


def _words(name: str) -> set[str]:
    return {word.removesuffix("s") for word in normalize_name(name).split()}


def _example(unmatched: Sequence[str], missing: Sequence[str], matched: Mapping[str, str]) -> str:
    """A label-map file that would do, guessing an organ that shares a word, else background."""
    example: dict[str, str] = {}
    for name in unmatched[:3]:
        guesses = [organ for organ in missing if _words(organ) & _words(name)]
        example[name] = guesses[0] if guesses else BACKGROUND
    if not example:  # only organs missing: a file naming the data's labels says it is partial
        example = dict(list(matched.items())[:2])
    return json.dumps(example)


def _unmatched_error(
    source: str,
    unmatched: Sequence[str],
    missing: Sequence[str],
    matched: Mapping[str, str],
    file: Path | None,
) -> InvalidInputError:
    parts = []
    if unmatched:
        names = _listing([repr(name) for name in unmatched])
        parts.append(f"labels {names} of {source} match no model organ")
    if missing:
        parts.append(f"model organs {_listing([repr(o) for o in missing])} are not in {source}")
    example = _example(unmatched, missing, matched)
    if file is not None:
        advice = f"add them to {file}, e.g. {example} ('background' drops a label)"
    else:
        advice = (
            "write a JSON label-map file of data label -> model organ and give it with "
            f"--label-map FILE, e.g. {example} ('background' drops a label"
            + ("; with a file, model organs may be missing from the data)" if missing else ")")
        )
    return InvalidInputError(f"{'; '.join(parts)}: {advice}.")


def match_labels(
    data_labels: Mapping[int, str] | None,
    model: LabelMap,
    label_map_file: PathLike | None = None,
    source: str = "the data",
) -> dict[int, int]:
    """Data label value -> model channel (0 background), by organ name or a label-map file.

    Parameters
    ----------
    data_labels
        The data's foreground labels, value -> organ name (background 0 may be left out), or
        None for label volumes without names (their values are then the model's channels,
        unless the file, keyed by value, says otherwise).
    model
        The model's label map (channel -> organ).
    label_map_file
        An optional JSON file of data label (value or name) -> model organ or ``background``.
    source
        Where the data labels come from, for messages (e.g. a ``dataset.json`` path).

    Returns
    -------
    dict
        Every data value (0 included) -> a model channel in ``0..C``.

    Raises
    ------
    InvalidInputError
        If a name matches no organ or an organ no data label (without a file), or the file is
        wrong; the message lists the names and shows a label-map file that would do.
    """
    file = None if label_map_file is None else Path(label_map_file)
    if data_labels is None:
        if file is None:
            return {channel: channel for channel in range(model.num_classes)}
        return {0: 0, **_file_mapping(file, None, model, source)}
    labels = {int(value): str(name) for value, name in data_labels.items() if int(value) != 0}
    mapping = {0: 0, **({} if file is None else _file_mapping(file, labels, model, source))}
    unmatched = []
    for value, name in sorted(labels.items()):
        if value in mapping:
            continue
        channel = _model_channel(name, model)
        if channel is None:
            unmatched.append(name)
        else:
            mapping[value] = channel
    missing = [] if file is not None else unmapped_organs(mapping, model)
    if unmatched or missing:
        model_names = {label.id: label.name for label in model}
        matched = {
            labels[value]: model_names.get(channel, BACKGROUND)
            for value, channel in mapping.items()
            if value in labels
        }
        raise _unmatched_error(source, unmatched, missing, matched, file)
    return mapping


def unmapped_organs(mapping: Mapping[int, int], model: LabelMap) -> list[str]:
    """The model organs that no data label maps to (their channel is never labelled)."""
    found = set(mapping.values())
    return [label.name for label in model if label.id not in found]


def describe_mapping(
    mapping: Mapping[int, int], data_labels: Mapping[int, str] | None, model: LabelMap
) -> list[str]:
    """One line per data label, ``"2 spleen -> 4 spleen"``, for a log or a summary."""
    names = {0: BACKGROUND, **{label.id: label.name for label in model}}
    data = {0: BACKGROUND, **(data_labels or {})}
    return [
        f"{value} {data.get(value, '')}".rstrip() + f" -> {channel} {names[channel]}"
        for value, channel in sorted(mapping.items())
    ]


def remap_array(
    labels: np.ndarray, mapping: Mapping[int, int], source: str = "labels"
) -> np.ndarray:
    """Apply a value -> channel table to a label array, as uint8 through a lookup table.

    Raises
    ------
    InvalidInputError
        If the array holds a value the table lacks (named, at most 10), or non-integer values.
    """
    labels = integer_labels(np.asarray(labels), source)
    if not all(0 <= channel <= 255 for channel in mapping.values()):
        raise ValueError(f"channels must be 0..255, got {sorted(set(mapping.values()))}")
    size = max(mapping, default=0) + 1
    table = np.zeros(size, np.uint8)
    known = np.zeros(size, bool)
    for value, channel in mapping.items():
        table[value] = channel
        known[value] = True
    if labels.size == 0:
        return np.zeros(labels.shape, np.uint8)
    low, high = int(labels.min()), int(labels.max())
    outside: list[int] = []
    if low < 0 or high >= size:
        flat = labels.ravel()
        outside = np.unique(flat[(flat < 0) | (flat >= size)]).tolist()
        inside = flat[(flat >= 0) & (flat < size)]
    else:
        inside = labels.ravel()
    counts = np.bincount(inside.astype(np.intp, copy=False), minlength=size) if inside.size else []
    present = np.flatnonzero(counts)
    unknown = sorted([int(v) for v in present if not known[v]] + outside)
    if unknown:
        known_values = ", ".join(str(v) for v in sorted(mapping))
        raise InvalidInputError(
            f"{source}: label values [{_listing(unknown)}] are not among the labels read for it "
            f"({known_values}); map them in a --label-map file ('background' drops a label)."
        )
    return table[labels]


def relabel_volume(volume: Volume, mapping: Mapping[int, int], label_map: LabelMap) -> Volume:
    """``volume`` with its labels mapped to ``label_map``'s channels (no labels: unchanged)."""
    labels = None
    if volume.labels is not None:
        labels = remap_array(volume.labels, mapping, volume.name)
    return Volume(volume.image, volume.spacing, labels, volume.name, volume.grid, label_map)


def relabeled_volumes(
    volumes: LazyVolumes,
    data_labels: LabelMap,
    model_labels: LabelMap,
    label_map_file: PathLike | None = None,
) -> LazyVolumes:
    """Volumes labelled in ``data_labels`` (e.g. the bundled samples) in the model's channels.

    The labels are matched by name (or through ``label_map_file``) as for a dataset folder; the
    same label map gives the volumes back as they are.
    """
    if data_labels == model_labels and label_map_file is None:
        return volumes
    names = {label.id: label.name for label in data_labels}
    mapping = match_labels(names, model_labels, label_map_file, source="the sample data")
    return volumes.map(partial(relabel_volume, mapping=mapping, label_map=model_labels))


def remapped_lazy_volumes(
    items: Sequence[tuple[str, PathLike, PathLike | None]],
    mapping: Mapping[int, int],
    label_map: LabelMap,
    cache_bytes: int = 0,
) -> LazyVolumes:
    """``(name, image, labels)`` triples as volumes read when used, labels remapped.

    Every file's header is checked first, as :func:`napari_advseg.data.nifti.lazy_volumes` does;
    each label file's values go through :func:`remap_array` before they are checked.
    """
    names = [name for name, _, _ in items]
    images = [image for _, image, _ in items]
    labels = [label for _, _, label in items]
    table = dict(mapping)

    def remap(values: np.ndarray, source: str) -> np.ndarray:
        return remap_array(values, table, source)

    return lazy_volumes(images, labels, label_map, cache_bytes, remap=remap, names=names)


def remapped_file_volumes(
    images: Sequence[PathLike],
    labels: Sequence[PathLike | None] | None,
    model_labels: LabelMap,
    label_map_file: PathLike | None = None,
    cache_bytes: int = 0,
) -> LazyVolumes:
    """Plain ``--images``/``--labels`` files, their label values mapped by an optional file.

    Without a file the values are the model's channels (as :func:`lazy_volumes` reads them);
    with one, keyed by value (``{"1": "liver", "6": "kidneys", "7": "kidneys"}``), every value in
    the label volumes must be listed there (or be 0).
    """
    if label_map_file is None:
        return lazy_volumes(images, labels, model_labels, cache_bytes)
    if labels is not None and len(labels) != len(images):
        raise InvalidInputError("Give one --labels file per --image file, in the same order.")
    mapping = match_labels(None, model_labels, label_map_file, source="the --labels files")
    pairs = list(zip(images, labels or [None] * len(images), strict=True))
    return remapped_lazy_volumes(
        [(Path(image).name, image, label) for image, label in pairs],
        mapping,
        model_labels,
        cache_bytes,
    )
