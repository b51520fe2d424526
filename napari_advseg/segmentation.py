"""The segmentation model under attack (f_seg), whatever network it is.

Any network that maps (B, 1, H, W) normalised CT slices to (B, C + 1, H, W) logits can be
attacked. :class:`SegmentationModel` pairs such a network with the :class:`ModelSpec` that says
how to feed it: its label map, pixel spacing, intensity normalisation and stride. The built-in
U-Net is loaded from a checkpoint folder; a user's own network from a TorchScript file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._resources import models_dir
from .data.normalization import Normalization
from .errors import CheckpointError, InvalidInputError
from .labels import DEFAULT_LABEL_MAP, LabelMap
from .nets.unet import UNet, UNetConfig
from .training.checkpoint import load_checkpoint, save_checkpoint, weights_sha256

UNET_KIND = "segmentation/unet"
DEFAULT_MODEL_NAME = "unet_default"


@dataclass(frozen=True)
class ModelSpec:
    """How a segmentation network must be fed, and what its outputs mean.

    Attributes
    ----------
    label_map
        Names and colors of output channels 1..C (channel 0 is background).
    pixel_spacing
        In-plane pixel size (y, x) in mm that the network was trained at.
    normalization
        Intensity normalisation applied to Hounsfield units before the network.
    input_multiple
        Input height and width are padded to a multiple of this.
    min_size
        Smallest height or width, at the model's spacing, that the network accepts.
    """

    label_map: LabelMap = DEFAULT_LABEL_MAP
    pixel_spacing: tuple[float, float] = (3.0, 3.0)
    normalization: Normalization = field(default_factory=Normalization)
    input_multiple: int = 8
    min_size: int = 16

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "label_map": self.label_map.to_dict(),
            "pixel_spacing_mm": list(self.pixel_spacing),
            "normalization": self.normalization.to_dict(),
            "input_multiple": self.input_multiple,
            "min_size": self.min_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`."""
        spacing = tuple(float(s) for s in data["pixel_spacing_mm"])
        return cls(
            label_map=LabelMap.from_dict(data["label_map"]),
            pixel_spacing=(spacing[0], spacing[1]),
            normalization=Normalization.from_dict(data["normalization"]),
            input_multiple=int(data["input_multiple"]),
            min_size=int(data["min_size"]),
        )


class SegmentationModel:
    """A frozen segmentation network and its :class:`ModelSpec`.

    Parameters
    ----------
    network
        Maps (B, 1, H, W) to (B, C + 1, H, W) logits, H and W multiples of
        ``spec.input_multiple``.
    spec
        How to feed it.
    name
        A short name for messages and layer names.
    config
        The checkpoint config it came from, if any.
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        name: str,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec = spec
        self.name = name
        self.config = dict(config or {})

    @property
    def device(self) -> torch.device:
        """Device of the network's weights (CPU for a network without any)."""
        parameter = next(self.network.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def freeze(self) -> SegmentationModel:
        """Evaluation mode and no gradients for the weights: the model stays as it is."""
        self.network.eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        return self

    def to(self, device: torch.device | str) -> SegmentationModel:
        """Move the network to ``device`` in place; returns self."""
        self.network.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a padded batch of normalised slices at the model's spacing."""
        return self.network(images)


def save_unet(
    folder: str | os.PathLike[str],
    network: UNet,
    spec: ModelSpec,
    training: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a U-Net checkpoint folder (weights, architecture, spec and training provenance)."""
    config = {
        "kind": UNET_KIND,
        "architecture": network.config.to_dict(),
        **spec.to_dict(),
        "training": dict(training or {}),
    }
    tensors = {f"model/{key}": value for key, value in network.state_dict().items()}
    tensors.update(extra_tensors or {})
    return save_checkpoint(folder, tensors, config)


def load_unet(
    folder: str | os.PathLike[str],
    expect_architecture: UNetConfig | None = None,
    expect_label_map: LabelMap | None = None,
) -> tuple[SegmentationModel, dict[str, torch.Tensor]]:
    """Load a U-Net checkpoint folder; return the model and any extra tensors it holds.

    Raises
    ------
    CheckpointError
        If the folder is not a U-Net checkpoint, is damaged, or differs from the expected
        architecture or label map.
    """
    config, tensors = load_checkpoint(folder, kind=UNET_KIND)
    try:
        architecture = UNetConfig.from_dict(config["architecture"])
        spec = ModelSpec.from_dict(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{folder}: config.json is incomplete or malformed ({error})."
        ) from error
    if expect_architecture is not None and architecture != expect_architecture:
        raise CheckpointError(
            f"{folder}: U-Net architecture {architecture} differs from the expected "
            f"{expect_architecture}; start a new model or use matching settings."
        )
    if expect_label_map is not None and spec.label_map != expect_label_map:
        raise CheckpointError(
            f"{folder}: trained for labels {spec.label_map.names}, expected "
            f"{expect_label_map.names}; its outputs would mean other organs."
        )
    if architecture.num_classes != spec.label_map.num_classes:
        raise CheckpointError(
            f"{folder}: {architecture.num_classes} output channels but "
            f"{len(spec.label_map)} labels."
        )
    network = UNet(architecture)
    weights = {
        key[len("model/") :]: value for key, value in tensors.items() if key.startswith("model/")
    }
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{folder}: weights do not fit the architecture in config.json; the checkpoint is "
            f"inconsistent ({str(error).splitlines()[0]})."
        ) from error
    model = SegmentationModel(network, spec, Path(folder).name, config).freeze()
    model.config["weights_sha256"] = weights_sha256(folder)
    extra = {key: value for key, value in tensors.items() if not key.startswith("model/")}
    return model, extra


def load_torchscript(path: str | os.PathLike[str], spec: ModelSpec) -> SegmentationModel:
    """Load a user's TorchScript segmentation network and check that it fits ``spec``.

    TorchScript archives hold compiled code and tensors; plain ``torch.save`` pickles are refused
    because unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a TorchScript archive. Export your network with "
            "torch.jit.script(model).save(path), or give a napari-advseg checkpoint folder."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any("/code/" in name for name in names) or not any(
        name.endswith("constants.pkl") for name in names
    ):
        raise CheckpointError(
            f"{path}: a torch.save pickle, not a TorchScript archive; napari-advseg never "
            "unpickles files (that can run code). Export with torch.jit.script(model).save(path)."
        )
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates TorchScript in favour of torch.export, but it still
            # loads, and it is what most users have; we say so in the docs, not on every load.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            network = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # TorchScript raises RuntimeError and friends on bad archives
        raise CheckpointError(f"{path}: cannot load as TorchScript ({error}).") from error
    size = max(spec.min_size, spec.input_multiple) * 2
    size += -size % spec.input_multiple
    probe = torch.zeros(1, 1, size, size)
    try:
        with torch.inference_mode():
            output = network.eval()(probe)
    except Exception as error:
        raise CheckpointError(
            f"{path}: fails on a (1, 1, {size}, {size}) input ({type(error).__name__}: {error}); "
            "the network must map (B, 1, H, W) images to (B, C + 1, H, W) logits."
        ) from error
    expected = (1, spec.label_map.num_classes, size, size)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise CheckpointError(
            f"{path}: returns {got} for a (1, 1, {size}, {size}) input, expected {expected} "
            f"(logits for background + {', '.join(spec.label_map.names)})."
        )
    config = {
        "kind": "segmentation/torchscript",
        "path": str(path),
        "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return SegmentationModel(network, spec, path.stem, config).freeze()


def default_model_path() -> Path:
    """The shipped default U-Net checkpoint folder."""
    return models_dir() / DEFAULT_MODEL_NAME


def load_segmentation_model(
    path: str | os.PathLike[str] | None = None, spec: ModelSpec | None = None
) -> SegmentationModel:
    """Load the shipped U-Net (no path), a checkpoint folder, or a TorchScript file.

    ``spec`` is needed for a TorchScript file only (checkpoints carry their own); it defaults to
    the paper's label map at 3 mm pixels.
    """
    path = default_model_path() if path is None else Path(path)
    if path.is_dir():
        return load_unet(path)[0]
    if path.is_file():
        return load_torchscript(path, spec or ModelSpec())
    raise CheckpointError(
        f"{path}: no such model; give a checkpoint folder, a TorchScript file, or nothing for "
        "the shipped U-Net."
    )
