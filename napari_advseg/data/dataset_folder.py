"""A user's dataset folder: an nnU-Net v2 raw dataset or a Medical Segmentation Decathlon task.

Both keep CT images in ``imagesTr`` (and ``imagesTs``), label volumes in ``labelsTr`` (and
optionally ``labelsTs``) and a ``dataset.json`` that names the label values:

* nnU-Net v2: ``{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
  "numTraining": 2, "file_ending": ".nii.gz"}``; images are ``<case>_0000.nii.gz``, labels
  ``<case>.nii.gz``.
* Decathlon: ``{"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}, ...}``;
  images and labels are both ``<case>.nii.gz`` (a folder converted for nnU-Net v1, whose
  images all end in ``_0000``, is read too).

Only one CT channel and NIfTI files are read. Hidden files (``.DS_Store``, ``._liver_0.nii.gz``
left by macOS) are ignored. Cases are sorted by name. Nothing is read from the NIfTI files
here; :func:`dataset_volumes` checks their headers and reads them when used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..labels import LabelMap, label_map_from_names
from .json_file import read_json_object
from .label_remap import MAX_LABEL_VALUE, match_labels, remapped_lazy_volumes
from .lazy import LazyVolumes
from .splits import PAPER_SPLIT, split_indices

NIFTI_ENDINGS = (".nii.gz", ".nii")
MAX_JSON_BYTES = 64 << 20
"""A dataset.json lists cases and labels; one bigger than this is not one."""

MIN_SPLIT_CASES = 3
"""With fewer cases :func:`split_cases` puts every case in train and none in val or test."""

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One subject: its name, CT image file and label file (None where it has none)."""

    name: str
    image: Path
    labels: Path | None


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset folder as read by :func:`read_dataset_folder`.

    Attributes
    ----------
    root
        The folder.
    name
        The dataset's name (``dataset.json``'s ``name``, else the folder's name).
    labels
        Label value -> organ name, background (0) left out, by value.
    training
        Cases of ``imagesTr`` with their ``labelsTr`` files.
    test
        Cases of ``imagesTs``, with ``labelsTs`` files where that folder exists, else None.
    """

    root: Path
    name: str
    labels: dict[int, str]
    training: tuple[Case, ...]
    test: tuple[Case, ...]

    def label_map(self) -> LabelMap:
        """The dataset's organs as model channels 1..C, in the order of their values."""
        return label_map_from_names(
            {
                str(channel): self.labels[value]
                for channel, value in enumerate(sorted(self.labels), 1)
            }
        )


def read_dataset_folder(root: str | Path) -> DatasetFolder:
    """Read an nnU-Net v2 or Decathlon dataset folder's ``dataset.json`` and list its cases.

    Raises
    ------
    InvalidInputError
        With one line naming the path, if the folder, ``imagesTr`` or ``dataset.json`` is missing
        or wrong, an image lacks its label file or a label file its image, the data has more than
        one channel or is not CT, there is no case, a label value is given twice or the files
        are not NIfTI.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root}: no such dataset folder.")
    meta = _read_json(root / "dataset.json")
    if "channel_names" in meta:
        labels, ending, channel_suffix = _nnunet_meta(meta, root / "dataset.json")
        endings: tuple[str, ...] = (ending,)
    elif "modality" in meta:
        labels = _msd_labels(meta, root / "dataset.json")
        _check_ct(meta["modality"], "modality", root / "dataset.json")
        endings, channel_suffix = NIFTI_ENDINGS, None
    else:
        raise InvalidInputError(
            f"{root / 'dataset.json'}: neither an nnU-Net v2 dataset.json (channel_names, labels, "
            "file_ending) nor a Decathlon one (modality, labels)."
        )
    images_tr = root / "imagesTr"
    if not images_tr.is_dir():
        raise InvalidInputError(f"{images_tr}: no such folder; a dataset folder needs imagesTr.")
    if channel_suffix is None:  # Decathlon, or converted for nnU-Net v1 when all end in _0000
        stems = _nifti_files(images_tr, endings)
        channel_suffix = bool(stems) and all(_CHANNEL.match(stem) for stem in stems)
    training = _cases(images_tr, root / "labelsTr", endings, channel_suffix, required=True)
    if not training:
        raise InvalidInputError(
            f"{images_tr}: no case found (no {' or '.join(endings)} image files)."
        )
    _check_count(meta, len(training), root / "dataset.json")
    test: tuple[Case, ...] = ()
    if (root / "imagesTs").is_dir():
        test = _cases(
            root / "imagesTs",
            root / "labelsTs",
            endings,
            channel_suffix,
            required=(root / "labelsTs").is_dir(),
        )
    name = meta.get("name")
    return DatasetFolder(
        root=root,
        name=name.strip() if isinstance(name, str) and name.strip() else root.name,
        labels=labels,
        training=training,
        test=test,
    )


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(
        path, "a dataset folder's dataset.json (nnU-Net v2 or Decathlon)", MAX_JSON_BYTES
    )


def _nnunet_meta(meta: Mapping[str, Any], path: Path) -> tuple[dict[int, str], str, bool]:
    """Labels and file ending of an nnU-Net v2 dataset.json."""
    _check_ct(meta["channel_names"], "channel_names", path)
    ending = meta.get("file_ending")
    if not isinstance(ending, str):
        raise InvalidInputError(f'{path}: no "file_ending" (such as ".nii.gz").')
    if ending.lower() not in NIFTI_ENDINGS:
        raise InvalidInputError(
            f"{path}: file_ending {ending!r}: only NIfTI (.nii, .nii.gz) is read; convert the "
            "dataset to NIfTI."
        )
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise InvalidInputError(f'{path}: "labels" must map organ names to values.')
    labels: dict[int, str] = {}
    for name, value in raw.items():
        if isinstance(value, list | tuple):
            raise InvalidInputError(
                f"{path}: label {name!r} is a region ({value}); region-based labels are not "
                "supported, give one value per organ."
            )
        _add_label(labels, _label_value(value, name, path), str(name), path)
    return _foreground(labels), ending, True


def _msd_labels(meta: Mapping[str, Any], path: Path) -> dict[int, str]:
    """Labels of a Decathlon dataset.json (value -> name)."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise InvalidInputError(f'{path}: "labels" must map values to organ names.')
    labels: dict[int, str] = {}
    for key, name in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"{path}: label {key!r} needs an organ name, got {name!r}.")
        _add_label(labels, _label_value(key, name, path), name, path)
    return _foreground(labels)


def _label_value(value: Any, name: Any, path: Path) -> int:
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_LABEL_VALUE:
        raise InvalidInputError(
            f"{path}: label {name!r} has value {value!r}; values must be whole numbers 0..65535."
        )
    return value


def _add_label(labels: dict[int, str], value: int, name: str, path: Path) -> None:
    name = name.strip()
    if value in labels:
        raise InvalidInputError(
            f"{path}: label value {value} is given twice ({labels[value]!r} and {name!r}); "
            "give each organ its own value."
        )
    known = {other.casefold(): v for v, other in labels.items()}
    if name.casefold() in known:
        raise InvalidInputError(
            f"{path}: label name {name!r} is given twice (values {known[name.casefold()]} and "
            f"{value}); give each value its own name."
        )
    labels[value] = name


def _foreground(labels: dict[int, str]) -> dict[int, str]:
    return {value: labels[value] for value in sorted(labels) if value != 0}


def _check_ct(channels: Any, key: str, path: Path) -> None:
    """One channel, and that one CT."""
    if not isinstance(channels, dict) or not channels:
        raise InvalidInputError(f'{path}: "{key}" must name the image channel, e.g. {{"0": "CT"}}.')
    if len(channels) > 1:
        listed = ", ".join(map(str, channels.values()))
        raise InvalidInputError(
            f"{path}: {key} lists {len(channels)} channels ({listed}); one CT channel only is read."
        )
    (modality,) = channels.values()
    if not isinstance(modality, str) or modality.strip().casefold() != "ct":
        raise InvalidInputError(
            f"{path}: the image channel is {modality!r}, not CT; only CT datasets are read."
        )


def _check_count(meta: Mapping[str, Any], found: int, path: Path) -> None:
    claimed = meta.get("numTraining")
    if isinstance(claimed, int) and not isinstance(claimed, bool) and claimed != found:
        raise InvalidInputError(
            f"{path}: numTraining is {claimed} but imagesTr holds {found} cases; is the dataset "
            "copied completely?"
        )


def _strip_ending(name: str, endings: Sequence[str]) -> str | None:
    for ending in endings:
        if name.lower().endswith(ending.lower()) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


def _nifti_files(folder: Path, endings: Sequence[str]) -> dict[str, Path]:
    """Visible files of ``folder`` with one of ``endings``, by name without the ending."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _strip_ending(path.name, endings)
        if path.name.startswith(".") or stem is None or not path.is_file():
            continue
        if stem in files:
            raise InvalidInputError(
                f"{path}: {files[stem].name} is the same case; keep one of the two files."
            )
        files[stem] = path
    return files


def _cases(
    images: Path, labels: Path, endings: Sequence[str], channel_suffix: bool, required: bool
) -> tuple[Case, ...]:
    """The cases of an images folder, each with its label file where ``required``."""
    by_case: dict[str, Path] = {}
    for stem, path in _nifti_files(images, endings).items():
        case = stem
        if channel_suffix:
            match = _CHANNEL.match(stem)
            if match is None:
                raise InvalidInputError(
                    f"{path}: expected an image named <case>_0000{endings[0]} (one CT channel)."
                )
            if match["channel"] != "0000":
                raise InvalidInputError(
                    f"{path}: a second image channel ({match['channel']}); one CT channel only "
                    "is read."
                )
            case = match["case"]
        by_case[case] = path
    if not required:
        return tuple(Case(name, by_case[name], None) for name in sorted(by_case))
    if not labels.is_dir():
        raise InvalidInputError(
            f"{labels}: no such folder; the images of {images} need their label files there."
        )
    label_files = _nifti_files(labels, endings)
    for case, path in label_files.items():
        if case not in by_case:
            suffix = "_0000" if channel_suffix else ""
            raise InvalidInputError(
                f"{path}: a label file without its image ({images / (case + suffix + endings[0])}"
                " is missing)."
            )
    cases = []
    for case in sorted(by_case):
        if case not in label_files:
            raise InvalidInputError(
                f"{by_case[case]}: an image without its label file "
                f"({labels / (case + endings[0])} is missing)."
            )
        cases.append(Case(case, by_case[case], label_files[case]))
    return tuple(cases)


def split_cases(
    cases: Sequence[Case],
    fractions: tuple[float, float, float] = PAPER_SPLIT,
    seed: int = 0,
) -> dict[str, list[Case]]:
    """Split cases (subjects) into ``train``, ``val`` and ``test`` after a seeded shuffle.

    The counts are rounded as :func:`napari_advseg.data.splits.split_subjects` rounds them (with
    the default 60:15:75 it gives the same split): a split whose fraction is above 0 gets at
    least one case, and ``test`` takes what ``train`` and ``val`` leave (``train`` when the test
    fraction is 0). Each split keeps the cases' order.

    With fewer than :data:`MIN_SPLIT_CASES` cases there is nothing to split: every case is in
    ``train`` and ``val`` and ``test`` are empty, which the caller should tell the user.

    Raises
    ------
    InvalidInputError
        If the fractions are not three numbers >= 0 with a train fraction above 0.
    """
    message = (
        "Split fractions must be three numbers train:val:test, each >= 0 and train > 0 "
        f"(e.g. 60:15:75), got {fractions!r}."
    )
    try:
        parts = [float(f) for f in fractions]
    except (TypeError, ValueError) as error:
        raise InvalidInputError(message) from error
    if len(parts) != 3 or not all(math.isfinite(f) and f >= 0 for f in parts) or parts[0] <= 0:
        raise InvalidInputError(message)
    cases = list(cases)
    n = len(cases)
    if n < MIN_SPLIT_CASES:
        return {"train": cases, "val": [], "test": []}
    chosen = split_indices(n, (parts[0], parts[1], parts[2]), seed)
    return {split: [cases[i] for i in indices] for split, indices in chosen.items()}


def dataset_volumes(
    folder: DatasetFolder,
    cases: Sequence[Case],
    model_labels: LabelMap,
    label_map_file: str | Path | None = None,
    cache_bytes: int = 0,
) -> LazyVolumes:
    """The cases as volumes read when used, labels remapped to the model's channels.

    Labels are matched by organ name, or through ``label_map_file`` (see
    :mod:`napari_advseg.data.label_remap`); every file's header is checked now, as
    :func:`napari_advseg.data.nifti.lazy_volumes` does. The volumes are named by case and carry
    the model's label map.

    Raises
    ------
    InvalidInputError
        If the labels do not match the model, or a file is unusable.
    """
    mapping = match_labels(
        folder.labels, model_labels, label_map_file, source=str(folder.root / "dataset.json")
    )
    return remapped_lazy_volumes(
        [(case.name, case.image, case.labels) for case in cases],
        mapping,
        model_labels,
        cache_bytes,
    )
