"""What the training widget asks for, and the worker function that builds and runs the trainer.

Three kinds of run: a U-Net (:class:`SegRequest`), an attacker (:class:`AttackRequest`), and the
hardening of a model against its own attacker (:class:`HardenRequest`).

The widget reads its controls and layers on the GUI thread into a frozen request (cheap checks
fail there, at once); the worker thread then does the slow part: reading a dataset folder,
loading the model to attack, checking the labels against the model's, building the trainer
(whose constructor checks the output folder and the memory), and yields the trainer's events.
Nothing here touches Qt, napari or the widget.

The scans come from layers (:class:`LayerScan`: an image layer and its optional labels layer)
or from a dataset folder (nnU-Net v2 or Decathlon). Layer labels are checked in the worker,
against the labels of the model they train or attack, which only the worker knows. Hardening
takes labelled scans as a U-Net does and splits them the same way (validation on whole scans,
or on a held-out slab).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.dataset_folder import DatasetFolder, dataset_volumes, read_dataset_folder, split_cases
from ..data.splits import hold_out_slab, split_subjects
from ..data.volume import Volume
from ..errors import AdvsegError, InvalidInputError
from ..labels import DEFAULT_LABEL_MAP, LabelMap
from ..model_spec import ModelSpec
from ..nets.attacker import AttackerConfig
from ..nets.unet import UNetConfig
from ..segmentation import load_segmentation_model
from ..training.attack_trainer import AttackTrainer, AttackTrainingConfig
from ..training.events import TrainingEvent
from ..training.harden_trainer import HardenConfig, HardenTrainer
from ..training.seg_trainer import SegTrainer, SegTrainingConfig, make_spec
from .layer_scan import LayerScan

MIN_SUBJECT_SPLIT = 3
"""From this many scans on, a U-Net validates on whole scans (subjects), not on a slab."""


@dataclass(frozen=True, eq=False)
class SegRequest:
    """Train a U-Net on labelled scans: layers, or a dataset folder (which wins when given).

    ``spec``: how the new U-Net is fed (None: the default spec, with a dataset folder's organs).
    """

    scans: tuple[LayerScan, ...]
    out_dir: Path
    config: SegTrainingConfig
    resume: bool = False
    overwrite: bool = False
    dataset: Path | None = None
    spec: ModelSpec | None = None


@dataclass(frozen=True, eq=False)
class AttackRequest:
    """Train an attacker of a segmentation model (``None``: the shipped U-Net).

    The scans are layers, or a dataset folder's training split. ``spec`` is how the model is fed
    (needed for a TorchScript or ``.pt2`` file; a checkpoint carries its own). ``init_from``: an
    attacker checkpoint to start from.
    """

    scans: tuple[LayerScan, ...]
    out_dir: Path
    config: AttackTrainingConfig
    attacker: AttackerConfig
    seg_path: Path | None = None
    resume: bool = False
    overwrite: bool = False
    dataset: Path | None = None
    spec: ModelSpec | None = None
    init_from: Path | None = None


@dataclass(frozen=True, eq=False)
class HardenRequest:
    """Harden a segmentation model (``None``: the shipped U-Net) against its own attacker.

    The labelled scans are layers, or a dataset folder's training and validation splits.
    ``config`` is the schedule, ``attack`` the attacker's settings (its ``steps`` is the
    schedule's attacker steps), ``attacker`` a fresh attacker's architecture; ``init_from``: an
    attacker checkpoint to start from.
    """

    scans: tuple[LayerScan, ...]
    out_dir: Path
    config: HardenConfig
    attack: AttackTrainingConfig
    attacker: AttackerConfig
    seg_path: Path | None = None
    resume: bool = False
    overwrite: bool = False
    dataset: Path | None = None
    spec: ModelSpec | None = None
    init_from: Path | None = None


TrainingRequest = SegRequest | AttackRequest | HardenRequest
Trainer = SegTrainer | AttackTrainer | HardenTrainer


@dataclass(frozen=True)
class TrainerReady:
    """The first thing the worker yields: the trainer (so Stop can reach it) and a note."""

    trainer: Trainer
    note: str


@dataclass(frozen=True)
class TrainingFailed:
    """A user-caused error (an ``AdvsegError``) ended the worker.

    ``started``: after training began; else while building the trainer (an unusable folder, a
    checkpoint in the way, not enough memory).
    """

    message: str
    started: bool


@dataclass
class Scans:
    """The volumes of a run and a note on where they came from and how they were split."""

    train: list[Volume]
    val: list[Volume] = field(default_factory=list)
    note: str = ""


def _names(volumes: Sequence[Volume], limit: int = 3) -> str:
    names = [volume.name for volume in volumes]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def split_for_unet(volumes: list[Volume], source: str) -> Scans:
    """Validate on whole scans from :data:`MIN_SUBJECT_SPLIT` scans on, else on a slab of one.

    With subjects to split, the paper's 60:15:75 split by subject is used and the test scans are
    kept out; with fewer, the last scan's middle slab validates (see ``hold_out_slab``).
    """
    for volume in volumes:
        volume.require_labels()
    if len(volumes) >= MIN_SUBJECT_SPLIT:
        split = split_subjects(len(volumes))
        train, val, test = ([volumes[i] for i in split[name]] for name in ("train", "val", "test"))
        note = (
            f"{source}: {len(train)} training scans, validation: {_names(val)}; "
            f"{len(test)} test scans kept out ({_names(test)})"
        )
        return Scans(train, val, note)
    parts, val = hold_out_slab(volumes[-1])
    train = volumes[:-1] + parts
    note = f"validation: {val[0].name}" if val else "too few labelled slices to validate"
    return Scans(train, val, note)


def unet_scans(
    scans: Sequence[LayerScan], label_map: LabelMap, folder: DatasetFolder | None
) -> Scans:
    """Labelled training and validation volumes: the layers' ``scans``, or the folder's.

    For a U-Net and for a hardening run alike.
    """
    if folder is None:
        return split_for_unet([scan.volume(label_map) for scan in scans], "layers")
    cases = folder.training
    if len(cases) < MIN_SUBJECT_SPLIT:
        return split_for_unet(list(dataset_volumes(folder, cases, label_map)), folder.name)
    split = split_cases(cases)
    train = list(dataset_volumes(folder, split["train"], label_map))
    val = list(dataset_volumes(folder, split["val"], label_map))
    note = (
        f"{folder.name}: {len(train)} training cases, validation: {_names(val)}; "
        f"{len(split['test'])} cases kept out for testing"
    )
    return Scans(train, val, note)


def attack_scans(request: AttackRequest, label_map: LabelMap) -> Scans:
    """The attacker's training volumes: the layers, or a dataset folder's training split."""
    if request.dataset is None:
        volumes = [scan.volume(label_map) for scan in request.scans]
        return Scans(volumes, note=f"{len(volumes)} scans ({_names(volumes)})")
    folder = read_dataset_folder(request.dataset)
    cases = split_cases(folder.training)["train"]
    volumes = list(dataset_volumes(folder, cases, label_map))
    return Scans(volumes, note=f"{len(volumes)} training cases of {folder.name}")


def build_trainer(request: TrainingRequest) -> TrainerReady:
    """The backend trainer for a request (slow: reads data, loads models).

    Raises
    ------
    AdvsegError
        One line: unusable data, model, spec or output folder, or not enough memory.
    """
    if isinstance(request, SegRequest):
        return _build_unet_trainer(request)
    if isinstance(request, HardenRequest):
        return _build_harden_trainer(request)
    if request.init_from is not None and request.resume:
        raise InvalidInputError(
            "Start from attacker begins a new run; leave it empty to Resume this one."
        )
    seg = load_segmentation_model(request.seg_path, request.spec)
    scans = attack_scans(request, seg.spec.label_map)
    trainer = AttackTrainer(
        request.out_dir,
        seg,
        scans.train,
        request.attacker,
        config=request.config,
        resume=request.resume,
        overwrite=request.overwrite,
        provenance={"data": [volume.name for volume in scans.train]},
        init_from=request.init_from,
    )
    start = f", starting from {request.init_from.name}" if request.init_from else ""
    return TrainerReady(trainer, f"attacking {seg.name} on {scans.note}{start}")


def _build_unet_trainer(request: SegRequest) -> TrainerReady:
    folder = None if request.dataset is None else read_dataset_folder(request.dataset)
    if request.spec is not None:
        label_map = request.spec.label_map
    elif folder is not None:
        label_map = folder.label_map()  # a U-Net of the dataset's organs
    else:
        label_map = DEFAULT_LABEL_MAP
    architecture = UNetConfig(num_classes=label_map.num_classes)
    scans = unet_scans(request.scans, label_map, folder)
    trainer = SegTrainer(
        request.out_dir,
        scans.train,
        scans.val,
        architecture=architecture,
        spec=request.spec or make_spec(architecture, label_map),
        config=request.config,
        resume=request.resume,
        overwrite=request.overwrite,
    )
    return TrainerReady(trainer, scans.note)


def _build_harden_trainer(request: HardenRequest) -> TrainerReady:
    if request.init_from is not None and request.resume:
        raise InvalidInputError(
            "Start from attacker begins a new run; leave it empty to Resume this one."
        )
    seg = load_segmentation_model(request.seg_path, request.spec)
    folder = None if request.dataset is None else read_dataset_folder(request.dataset)
    scans = unet_scans(request.scans, seg.spec.label_map, folder)
    trainer = HardenTrainer(
        request.out_dir,
        seg,
        scans.train,
        scans.val,
        request.config,
        request.attack,
        request.attacker,
        init_attacker=request.init_from,
        resume=request.resume,
        overwrite=request.overwrite,
        provenance={"data": [volume.name for volume in scans.train]},
    )
    start = f", starting from {request.init_from.name}" if request.init_from else ""
    return TrainerReady(trainer, f"hardening {seg.name}{start}; {scans.note}")


def run_training(
    request: TrainingRequest,
) -> Iterator[TrainerReady | TrainingEvent | TrainingFailed]:
    """Worker body: build the trainer, yield it, then yield every training event.

    A user-caused error is yielded as :class:`TrainingFailed` (one line for a notification);
    anything else is a bug and propagates (napari shows it with its traceback).
    """
    try:
        ready = build_trainer(request)
    except AdvsegError as error:
        yield TrainingFailed(str(error), started=False)
        return
    yield ready
    try:
        yield from ready.trainer.run()
    except AdvsegError as error:
        yield TrainingFailed(str(error), started=True)
