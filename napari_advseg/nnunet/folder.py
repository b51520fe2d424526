"""An nnU-Net v2 trained-model folder, read as JSON: which fold, which checkpoint, what spec.

nnU-Net writes ``nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>/`` with
``plans.json``, ``dataset.json`` and one ``fold_N`` (or ``fold_all``) folder per trained fold.
This module reads the two JSON files and derives the :class:`ModelSpec` nnU-Net's own
preprocessing amounts to; it reads no weights and imports no network code (the widgets call it
on the GUI thread to show the spec). :mod:`napari_advseg.nnunet.network` builds the network.

Supported: the ``2d`` configuration (or one that inherits from it) of plans written by nnU-Net
2.3 and later (an ``architecture`` entry), and older v2 plans, whose network is described by
``UNet_class_name`` and friends and is built the way nnU-Net 2.2 built it. Refused, each with one
line: 3D, cascade and region-based configurations, several input channels, a transposed slice
axis, reoriented readers, and normalisations a spec cannot express.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.json_file import read_json_object
from ..data.normalization import Normalization
from ..errors import CheckpointError, InvalidInputError
from ..labels import label_map_from_names
from ..model_spec import ModelSpec

PLANS_FILE = "plans.json"
DATASET_FILE = "dataset.json"
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
"""Checkpoints in the order they are preferred (nnU-Net's predictor default is the final one)."""
MAX_JSON_BYTES = 50_000_000
FOLD_PATTERN = re.compile(r"fold_(\d+|all)")
IMPORTED_KWARGS = ("conv_op", "norm_op", "dropout_op", "nonlin")
"""The arch_kwargs that name a torch class; older plans record them nowhere."""
CONV_2D = "torch.nn.modules.conv.Conv2d"
INSTANCE_NORM_2D = "torch.nn.modules.instancenorm.InstanceNorm2d"
LEAKY_RELU = "torch.nn.LeakyReLU"
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO")
"""Image readers whose arrays are the file's voxel order, reversed (the spec's ``file``)."""


@dataclass(frozen=True)
class NetworkPlan:
    """The network a configuration describes, in the plans' own (JSON) terms.

    Attributes
    ----------
    class_name
        Dotted name of a ``dynamic_network_architectures`` class.
    kwargs
        Its keyword arguments, but ``input_channels``, ``num_classes`` and ``deep_supervision``.
    requires_import
        The kwargs whose values are dotted names of torch classes.
    source
        ``architecture`` (nnU-Net >= 2.3 plans) or ``UNet_class_name`` (older plans, converted).
    """

    class_name: str
    kwargs: dict[str, Any]
    requires_import: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class NnUNetModel:
    """One fold of an nnU-Net v2 trained-model folder.

    Attributes
    ----------
    folder
        The ``<trainer>__<plans>__<configuration>`` folder.
    trainer, plans_name, configuration
        The three parts of its name.
    plans, dataset
        ``plans.json`` and ``dataset.json``.
    settings
        The configuration's entry of the plans, with ``inherits_from`` resolved.
    fold
        ``"0"``...``"4"`` or ``"all"``.
    checkpoint
        ``fold_<fold>/checkpoint_final.pth``, or ``checkpoint_best.pth`` where there is no final.
    """

    folder: Path
    trainer: str
    plans_name: str
    configuration: str
    plans: dict[str, Any]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    fold: str
    checkpoint: Path

    @property
    def dataset_name(self) -> str:
        """The dataset's name as nnU-Net records it (``DatasetXXX_Name``)."""
        name = self.plans.get("dataset_name")
        return str(name) if isinstance(name, str) and name else self.folder.parent.name

    @property
    def name(self) -> str:
        """A short name for messages and layer names."""
        return f"{self.dataset_name}_{self.configuration}_fold{self.fold}"

    def describe(self) -> str:
        """One line: which network, fold and checkpoint this is."""
        return (
            f"nnU-Net v2 {self.dataset_name}, {self.trainer}__{self.plans_name}__"
            f"{self.configuration}, fold {self.fold} ({self.checkpoint.name})"
        )


def is_nnunet_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like an nnU-Net trained-model folder or one of its fold folders.

    It does when it holds no napari-advseg ``config.json`` but plans, a dataset.json or a
    ``fold_N`` folder.
    One that looks like it but lacks a file is then refused by :func:`read_nnunet_folder`, which
    names the file.
    """
    path = Path(path)
    if FOLD_PATTERN.fullmatch(path.name) and path.is_dir():
        path = path.parent
    if not path.is_dir() or (path / "config.json").exists():
        return False
    return (
        (path / PLANS_FILE).is_file()
        or (path / DATASET_FILE).is_file()
        or any(FOLD_PATTERN.fullmatch(child.name) for child in path.iterdir())
    )


def available_folds(folder: Path) -> list[str]:
    """The folds of ``folder`` that hold a checkpoint, numbered ones first, in order."""
    folds = []
    for child in folder.iterdir() if folder.is_dir() else ():
        match = FOLD_PATTERN.fullmatch(child.name)
        if match and child.is_dir() and any((child / n).is_file() for n in CHECKPOINT_NAMES):
            folds.append(match.group(1))
    return sorted(folds, key=lambda fold: (fold == "all", int(fold) if fold.isdigit() else 0))


def read_nnunet_folder(path: str | Path, fold: int | str | None = None) -> NnUNetModel:
    """Read an nnU-Net v2 trained-model folder (or one of its ``fold_N`` folders).

    Parameters
    ----------
    path
        ``.../DatasetXXX_Name/<trainer>__<plans>__<configuration>/``, or its ``fold_N``.
    fold
        A fold number or ``"all"``; default: the fold folder given, else the only or the first
        trained fold (``all`` when it is the only one).

    Raises
    ------
    InvalidInputError, CheckpointError
        One line that says what is missing or not supported.
    """
    path = Path(path).expanduser()
    fold = None if fold is None else str(fold).strip()
    if FOLD_PATTERN.fullmatch(path.name) and path.is_dir():
        named = FOLD_PATTERN.fullmatch(path.name).group(1)  # type: ignore[union-attr]
        if fold is not None and fold != named:
            raise InvalidInputError(f"{path}: is fold {named}, but fold {fold} was asked for.")
        fold, path = named, path.parent
    if not path.is_dir():
        raise InvalidInputError(f"{path}: no such nnU-Net results folder.")
    for name in (PLANS_FILE, DATASET_FILE):
        if not (path / name).is_file():
            raise InvalidInputError(
                f"{path}: no {name}; give nnU-Net's trained-model folder "
                "(DatasetXXX_Name/<trainer>__<plans>__<configuration>)."
            )
    plans = read_json_object(path / PLANS_FILE, "nnU-Net's plans", MAX_JSON_BYTES)
    dataset = read_json_object(path / DATASET_FILE, "nnU-Net's dataset.json", MAX_JSON_BYTES)
    trainer, plans_name, configuration = _name_parts(path, plans)
    settings = configuration_settings(path, plans, configuration)
    folds = available_folds(path)
    if not folds:
        raise InvalidInputError(
            f"{path}: no fold_N folder with {' or '.join(CHECKPOINT_NAMES)}; train a fold first "
            "(nnUNetv2_train ... 2d FOLD)."
        )
    if fold is None:
        fold = folds[0]
    elif fold != "all" and not fold.isdigit():
        raise InvalidInputError(f"--fold must be a fold number or 'all', got {fold!r}.")
    fold = fold if fold == "all" else str(int(fold))
    if fold not in folds:
        raise InvalidInputError(
            f"{path}: no trained fold {fold} (trained: {', '.join(folds)}); choose one of those."
        )
    fold_dir = path / f"fold_{fold}"
    checkpoint = next(fold_dir / n for n in CHECKPOINT_NAMES if (fold_dir / n).is_file())
    model = NnUNetModel(
        path, trainer, plans_name, configuration, plans, dataset, settings, fold, checkpoint
    )
    derive_spec(model)  # refuse what is not supported before anything is loaded
    network_plan(model)
    return model


def _name_parts(path: Path, plans: Mapping[str, Any]) -> tuple[str, str, str]:
    parts = path.name.split("__")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    configurations = plans.get("configurations")
    if isinstance(configurations, Mapping) and "2d" in configurations:
        plans_name = str(plans.get("plans_name", "nnUNetPlans"))
        return "nnUNetTrainer", plans_name, "2d"  # a renamed folder: its 2d configuration
    raise InvalidInputError(
        f"{path}: not named <trainer>__<plans>__<configuration> as nnU-Net names its results, and "
        "its plans have no 2d configuration."
    )


def configuration_settings(
    path: Path, plans: Mapping[str, Any], configuration: str
) -> dict[str, Any]:
    """A configuration's plans entry, with ``inherits_from`` resolved; refuses 3D and cascades."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or configuration not in configurations:
        names = ", ".join(configurations) if isinstance(configurations, Mapping) else "none"
        raise InvalidInputError(
            f"{path}: its plans have no configuration {configuration!r} (they have: {names})."
        )
    chain, name = [], configuration
    while name is not None:
        entry = configurations.get(name)
        if not isinstance(entry, Mapping) or name in chain or len(chain) > 16:
            raise InvalidInputError(
                f"{path}: configuration {configuration!r} inherits from {name!r}, which is "
                "missing or circular in plans.json."
            )
        chain.append(name)
        name = entry.get("inherits_from")
    settings: dict[str, Any] = {}
    for name in reversed(chain):
        settings.update({k: v for k, v in configurations[name].items() if k != "inherits_from"})
    if "cascade" in configuration or settings.get("previous_stage") or settings.get("next_stage"):
        raise CheckpointError(
            f"{path}: a cascade configuration ({configuration}) is not supported; napari-advseg "
            "attacks single-stage 2D models: train nnU-Net's 2d configuration."
        )
    patch = settings.get("patch_size")
    if not isinstance(patch, list) or len(patch) != 2:
        raise CheckpointError(
            f"{path}: configuration {configuration!r} is not 2D (patch size {patch}); "
            "napari-advseg attacks 2D slice models only: train nnU-Net's 2d configuration."
        )
    return settings


def derive_spec(model: NnUNetModel) -> ModelSpec:
    """The spec nnU-Net's preprocessing amounts to (see the module docstring for what is refused).

    Labels and ids come from ``dataset.json``, pixel spacing from the configuration, the
    normalisation from the plans (``CTNormalization``: the ``dataset`` kind with the foreground's
    0.5 and 99.5 percentiles as clip, mean and std; ``ZScoreNormalization``: per image), the
    orientation is the file's voxel order as SimpleITK reads it (``file``), and slices are padded
    to the network's total stride.
    """
    where = model.folder
    labels = _label_names(where, model.dataset)
    spacing = model.settings.get("spacing")
    if not isinstance(spacing, list) or len(spacing) not in (2, 3):
        raise CheckpointError(f"{where}: the 2d configuration's spacing {spacing!r} is not 2D.")
    transpose = model.plans.get("transpose_forward", [0, 1, 2])
    if list(transpose) != [0, 1, 2]:
        raise CheckpointError(
            f"{where}: nnU-Net transposes this dataset's axes (transpose_forward {transpose}), so "
            "its 2D slices are not the file's axial slices; only [0, 1, 2] is supported."
        )
    reader = model.dataset.get("overwrite_image_reader_writer") or "SimpleITKIO"
    if reader not in SUPPORTED_READERS:
        raise CheckpointError(
            f"{where}: dataset.json reads images with {reader}, whose slice layout a model spec "
            f"cannot express; supported: {', '.join(SUPPORTED_READERS)}."
        )
    multiple = math.lcm(*stride_products(network_plan(model).kwargs.get("strides")))
    return ModelSpec(
        label_map=label_map_from_names(labels),
        pixel_spacing=(float(spacing[-2]), float(spacing[-1])),
        normalization=_normalization(model),
        input_multiple=multiple,
        min_size=2 * multiple,
        orientation="file",
    )


def _label_names(where: Path, dataset: Mapping[str, Any]) -> dict[str, str]:
    labels = dataset.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise CheckpointError(f"{where}: dataset.json has no 'labels' mapping.")
    if "regions_class_order" in dataset or any(
        isinstance(value, list | tuple) for value in labels.values()
    ):
        raise CheckpointError(
            f"{where}: region-based training (regions_class_order) is not supported; the network "
            "predicts overlapping regions, not one class per pixel."
        )
    channels = dataset.get("channel_names", dataset.get("modality"))
    if isinstance(channels, Mapping) and len(channels) != 1:
        raise CheckpointError(
            f"{where}: the network takes {len(channels)} input channels "
            f"({', '.join(map(str, channels.values()))}); napari-advseg attacks one-channel CT."
        )
    ids: dict[int, str] = {}
    for name, value in labels.items():
        if name == "ignore":  # nnU-Net's ignore label has no output channel
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value in ids:
            raise CheckpointError(f"{where}: dataset.json label {name!r} has id {value!r}.")
        ids[value] = str(name)
    if sorted(ids) != list(range(len(ids))) or len(ids) < 2:
        raise CheckpointError(
            f"{where}: dataset.json label ids {sorted(ids)} are not 0 (background), 1, 2, ... as "
            "nnU-Net requires."
        )
    return {str(value): ids[value] for value in range(1, len(ids))}


def _normalization(model: NnUNetModel) -> Normalization:
    where = model.folder
    schemes = model.settings.get("normalization_schemes") or []
    masked = model.settings.get("use_mask_for_norm") or [False]
    scheme = schemes[0] if isinstance(schemes, list) and len(schemes) == 1 else schemes
    if scheme == "CTNormalization":
        stats = (model.plans.get("foreground_intensity_properties_per_channel") or {}).get("0")
        try:
            low, high = float(stats["percentile_00_5"]), float(stats["percentile_99_5"])
            mean, std = float(stats["mean"]), float(stats["std"])
        except (TypeError, KeyError, ValueError) as error:
            raise CheckpointError(
                f"{where}: CTNormalization needs foreground_intensity_properties_per_channel['0'] "
                "(mean, std, percentile_00_5, percentile_99_5) in plans.json."
            ) from error
        return Normalization((low, high), "dataset", mean=mean, std=max(std, 1e-8))
    if scheme == "ZScoreNormalization" and not any(masked):
        return Normalization(None, "zscore")
    if scheme == "NoNormalization":
        return Normalization(None, "dataset", mean=0.0, std=1.0)
    detail = "inside a foreground mask" if scheme == "ZScoreNormalization" else ""
    raise CheckpointError(
        f"{where}: normalisation {scheme} {detail}".rstrip()
        + " has no model-spec form; supported: CTNormalization, ZScoreNormalization without "
        "use_mask_for_norm, NoNormalization."
    )


def stride_products(strides: Any) -> tuple[int, ...]:
    """The total stride along each axis of per-stage ``strides`` (ints or per-axis lists)."""
    if not isinstance(strides, list) or not strides:
        raise CheckpointError(
            f"the plans' strides {strides!r} are not a list of per-stage strides."
        )
    totals = [1, 1]
    for stride in strides:
        per_axis = [stride, stride] if isinstance(stride, int) else stride
        if not isinstance(per_axis, list) or len(per_axis) != 2:
            raise CheckpointError(f"the plans' stride {stride!r} is not 2D.")
        totals = [total * int(step) for total, step in zip(totals, per_axis, strict=True)]
    return tuple(totals)


def network_plan(model: NnUNetModel) -> NetworkPlan:
    """The configuration's network; older plans are converted the way nnU-Net 2.2 built them."""
    settings = model.settings
    architecture = settings.get("architecture")
    if isinstance(architecture, Mapping):
        name = architecture.get("network_class_name")
        kwargs = architecture.get("arch_kwargs")
        imports = architecture.get("_kw_requires_import", [])
        if not isinstance(name, str) or not isinstance(kwargs, Mapping):
            raise CheckpointError(
                f"{model.folder}: plans.json's architecture entry lacks network_class_name or "
                "arch_kwargs."
            )
        return NetworkPlan(name, dict(kwargs), tuple(map(str, imports)), "architecture")
    if "UNet_class_name" not in settings:
        raise CheckpointError(
            f"{model.folder}: the 2d configuration names no network (neither 'architecture', as "
            "nnU-Net >= 2.3 writes, nor 'UNet_class_name', as older v2 plans do)."
        )
    return _converted_plan(model.folder, settings)


def _converted_plan(where: Path, settings: Mapping[str, Any]) -> NetworkPlan:
    """nnU-Net < 2.3 plans: the arguments its ``get_network_from_plans`` passed."""
    try:
        class_name = str(settings["UNet_class_name"])
        kernels = list(settings["conv_kernel_sizes"])
        base = int(settings["UNet_base_num_features"])
        top = int(settings["unet_max_num_features"])
        encoder = settings["n_conv_per_stage_encoder"]
        decoder = settings["n_conv_per_stage_decoder"]
        strides = settings["pool_op_kernel_sizes"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{where}: older nnU-Net plans without {error}; retrain or re-plan with nnU-Net >= 2.3."
        ) from error
    if class_name not in ("PlainConvUNet", "ResidualEncoderUNet"):
        raise CheckpointError(f"{where}: older plans name an unknown network {class_name!r}.")
    stages = len(kernels)
    per_stage = "n_blocks_per_stage" if class_name == "ResidualEncoderUNet" else "n_conv_per_stage"
    kwargs = {
        "n_stages": stages,
        "features_per_stage": [min(base * 2**i, top) for i in range(stages)],
        "conv_op": CONV_2D,
        "kernel_sizes": kernels,
        "strides": strides,
        per_stage: encoder,
        "n_conv_per_stage_decoder": decoder,
        "conv_bias": True,
        "norm_op": INSTANCE_NORM_2D,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": LEAKY_RELU,
        "nonlin_kwargs": {"inplace": True},
    }
    full_name = f"dynamic_network_architectures.architectures.unet.{class_name}"
    return NetworkPlan(full_name, kwargs, IMPORTED_KWARGS, "UNet_class_name")
