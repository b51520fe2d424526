"""The segmentation model under attack (f_seg), whatever network it is.

Any network that maps (B, 1, H, W) normalised CT slices to (B, C + 1, H, W) logits can be
attacked. :class:`SegmentationModel` pairs such a network with the :class:`ModelSpec` that says
how to feed it: its label map, pixel spacing, intensity normalisation and stride. The built-in
U-Net is loaded from a checkpoint folder; a user's own network from a TorchScript file.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._resources import models_dir
from .class_map import class_map
from .data.slices import pad_to_multiple
from .errors import AdvsegError, CheckpointError, InvalidInputError, ResourceError
from .labels import LabelMap
from .model_spec import ModelSpec, load_spec_file
from .nets.unet import UNet, UNetConfig
from .training.checkpoint import (
    check_finite,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    weights_sha256,
)
from .training.schema import check_unet_config

UNET_KIND = "segmentation/unet"
DEFAULT_MODEL_NAME = "unet_default"


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
    check_outputs
        Check every output (finite values) and turn the network's exceptions into one-line
        errors; default: for every network but the built-in :class:`UNet`, whose shapes are
        right by construction. The shape of every output is always checked (a tuple compare).
    """

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        name: str,
        config: Mapping[str, Any] | None = None,
        check_outputs: bool | None = None,
    ) -> None:
        self.network = network.eval()
        self.spec = spec
        self.name = name
        self.config = dict(config or {})
        self.check_outputs = (
            not isinstance(network, UNet) if check_outputs is None else check_outputs
        )

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
        """Logits for a padded batch of normalised slices at the model's spacing.

        Raises
        ------
        InvalidInputError
            If a user's network raises on this input (the message names the model and the size).
        CheckpointError
            If it returns anything but (B, C + 1, H, W) logits, or NaN or inf for finite input.
        ResourceError
            If the device runs out of memory.
        """
        if not self.check_outputs:
            output = self.network(images)
        else:
            try:
                output = self.network(images)
            except AdvsegError:
                raise
            except torch.cuda.OutOfMemoryError as error:
                raise ResourceError(
                    f"{self.name}: out of {self.device} memory on a {_shape(images)} input; use "
                    "smaller batches or slices, or another device."
                ) from error
            except Exception as error:  # a user's network may raise anything
                raise InvalidInputError(
                    f"{self.name}: the segmentation model fails on a {_shape(images)} input "
                    f"({type(error).__name__}: {_last_line(error)}); it must map (B, 1, H, W) "
                    f"to (B, {self.spec.label_map.num_classes}, H, W) logits for any H and W "
                    f"that are multiples of its input multiple {self.spec.input_multiple}."
                ) from error
        self._check(images, output)
        return output

    def _check(self, images: torch.Tensor, output: Any) -> None:
        expected = (images.shape[0], self.spec.label_map.num_classes, *images.shape[-2:])
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
            got = _shape(output) if isinstance(output, torch.Tensor) else type(output).__name__
            raise CheckpointError(
                f"{self.name}: returns {got} for a {_shape(images)} input, expected "
                f"{expected} (logits for background + {', '.join(self.spec.label_map.names)})."
            )
        if (
            self.check_outputs
            and not bool(torch.isfinite(output).all())
            and bool(torch.isfinite(images).all())
        ):
            raise CheckpointError(
                f"{self.name}: returns NaN or infinite logits for a finite {_shape(images)} "
                "input; the model is broken for this input size or these intensities."
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of any height and width (padded to the model's multiple, cropped)."""
        padded, crop = pad_to_multiple(images, self.spec.input_multiple)
        return crop(self(padded))

    @torch.inference_mode()
    def organ_pixels(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """(N,) number of pixels of each slice of ``images`` (N, 1, H, W) the model calls organ."""
        counts = []
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(self.device)
            counts.append((class_map(self.logits(batch)) > 0).sum(dim=(1, 2)).cpu())
        return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64)


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _last_line(error: BaseException, limit: int = 160) -> str:
    """The last non-empty line of an error (TorchScript puts its own traceback first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        "spec": spec.to_dict(),
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
    checker = check_unet_config(folder, config)
    architecture = checker.build(
        "architecture", lambda: UNetConfig.from_dict(config["architecture"])
    )
    spec = checker.build("model spec", lambda: ModelSpec.from_config(config))
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
    weights = {
        key[len("model/") :]: value for key, value in tensors.items() if key.startswith("model/")
    }
    _check_weights_fit(folder, architecture, weights)
    check_finite(folder, weights)
    network = UNet(architecture)
    network.load_state_dict(weights, strict=True)
    model = SegmentationModel(network, spec, Path(folder).name, config).freeze()
    model.config["weights_sha256"] = weights_sha256(folder)
    extra = {key: value for key, value in tensors.items() if not key.startswith("model/")}
    return model, extra


def _check_weights_fit(
    folder: str | os.PathLike[str], architecture: UNetConfig, weights: Mapping[str, torch.Tensor]
) -> None:
    """Compare the weights with the architecture's shapes before allocating the network."""
    from .training.memory import check_weights_fit

    check_weights_fit(
        folder,
        lambda: UNet(architecture),
        weights,
        f"U-Net ({architecture.base_channels} base channels)",
    )


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
            "torch.jit.script(model).save(path) or torch.export (a .pt2 file), or give a "
            "napari-advseg checkpoint folder."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any("/code/" in name for name in names) or not any(
        name.endswith("constants.pkl") for name in names
    ):
        raise CheckpointError(
            f"{path}: a torch.save pickle, not a TorchScript archive; napari-advseg never "
            "unpickles files (that can run code). Export with torch.jit.script(model).save(path) "
            "or torch.export.save(torch.export.export(model, ...), 'model.pt2')."
        )
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates TorchScript in favour of torch.export, but it still
            # loads, and it is what most users have; we say so in the docs, not on every load.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            network = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # TorchScript raises RuntimeError and friends on bad archives
        raise CheckpointError(f"{path}: cannot load as TorchScript ({error}).") from error
    return _checked_user_model(path, network, spec, "segmentation/torchscript")


def load_exported(path: str | os.PathLike[str], spec: ModelSpec) -> SegmentationModel:
    """Load a user's ``torch.export`` program (``.pt2``) without unpickling anything."""
    try:
        from .nets.exported_program import (
            describe_input_constraints,
            load_exported_program,
            static_input_shape,
        )
    except ImportError as error:  # torch.export's PT2 archive reader is recent (torch >= 2.7)
        raise CheckpointError(
            f"{path}: reading torch.export programs needs a newer torch than "
            f"{torch.__version__} ({error}); upgrade torch or export with TorchScript."
        ) from error

    path = Path(path)
    network = load_exported_program(path)
    refuse_3d(path, network)
    try:
        return _checked_user_model(path, network, spec, "segmentation/torch-export")
    except CheckpointError as error:
        constraints = describe_input_constraints(path)
        if constraints is None:
            raise
        if static_input_shape(network) is not None:  # the probe's size was never going to fit
            raise CheckpointError(f"{path}: {constraints.rstrip('.')}.") from error
        raise CheckpointError(f"{str(error).rstrip('.')} (the program {constraints}).") from error


def _checked_user_model(
    path: Path, network: nn.Module, spec: ModelSpec, kind: str
) -> SegmentationModel:
    """Wrap a user's network, refuse a 3D one, and probe it at sizes that test its spec."""
    refuse_3d(path, network)
    config = {
        "kind": kind,
        "path": str(path),
        "weights_sha256": file_sha256(path),
    }
    model = SegmentationModel(network, spec, path.stem, config, check_outputs=True).freeze()
    probe_model(model, path)
    return model


def refuse_3d(path: Path, network: nn.Module) -> None:
    """Refuse a network with 5D (3D convolution) weights in one line."""
    tensors = [*network.parameters(), *network.buffers()]
    if any(tensor.ndim == 5 for tensor in tensors):
        raise CheckpointError(
            f"{path}: a 3D network (it holds 5D convolution weights); napari-advseg attacks 2D "
            "slice models only: export one that maps (B, 1, H, W) slices to (B, C + 1, H, W) "
            "logits."
        )


MAX_PROBE_MULTIPLE = 128
"""The largest padding multiple :func:`probe_model` tries when it looks for the right one."""


def probe_sizes(multiple: int, min_size: int) -> tuple[int, int]:
    """A (rows, columns) probe: odd multiples of ``multiple``, unequal, at least ``min_size``.

    An odd multiple of m is not a multiple of 2m, so a network whose stride is larger than the
    spec says fails on it (or returns the wrong shape) instead of passing by luck.
    """
    factor = max(3, math.ceil(min_size / multiple))
    factor += 1 - factor % 2
    return multiple * factor, multiple * (factor + 2)


def probe_model(model: SegmentationModel, path: Path) -> None:
    """Run ``model`` once at a size its spec allows; fail with one line if the spec is wrong.

    Where it fails, larger multiples are tried, and the error names the one that works.
    """
    spec = model.spec
    rows, cols = probe_sizes(spec.input_multiple, spec.min_size)
    error = _probe(model, rows, cols)
    if error is None:
        return
    better = None
    multiple = spec.input_multiple * 2
    while better is None and multiple <= MAX_PROBE_MULTIPLE:
        if _probe(model, *probe_sizes(multiple, spec.min_size)) is None:
            better = multiple
        multiple *= 2
    detail = str(error).split(": ", 1)[-1].rstrip(".")
    if better is not None:
        raise CheckpointError(
            f"{path}: fails on a {rows}x{cols} input, although both are multiples of the spec's "
            f"input_multiple {spec.input_multiple}, and works at multiples of {better}: set "
            f'"input_multiple": {better} in the model spec.'
        ) from error
    raise CheckpointError(
        f"{path}: {detail}. Check the model spec (labels: {spec.label_map.num_classes - 1} "
        "organs), and export a network that maps (B, 1, H, W) images to (B, C + 1, H, W) logits."
    ) from error


def _probe(model: SegmentationModel, rows: int, cols: int) -> AdvsegError | None:
    """Run a batch of two slices (inference feeds batches, so a fixed batch of one fails)."""
    try:
        with torch.inference_mode():
            model(torch.zeros(2, 1, rows, cols))
    except (InvalidInputError, CheckpointError) as error:
        return error
    return None


def load_nnunet(path: str | os.PathLike[str], fold: int | str | None = None) -> SegmentationModel:
    """Load one fold of an nnU-Net v2 trained-model folder with the spec its plans amount to."""
    from .nnunet.folder import derive_spec, read_nnunet_folder
    from .nnunet.network import load_network

    found = read_nnunet_folder(path, fold)
    spec = derive_spec(found)
    network = load_network(found, spec.label_map.num_classes)
    config = {
        "kind": "segmentation/nnunet",
        "path": str(found.folder),
        "fold": found.fold,
        "checkpoint": found.checkpoint.name,
        "trainer": found.trainer,
        "configuration": found.configuration,
        "weights_sha256": file_sha256(found.checkpoint),
    }
    model = SegmentationModel(network, spec, found.name, config, check_outputs=True).freeze()
    probe_model(model, found.checkpoint)
    return model


def _is_exported_program(path: Path) -> bool:
    try:
        from .nets.exported_program import is_exported_program
    except ImportError:  # an older torch: TorchScript only
        return False
    return is_exported_program(path)


def default_model_path() -> Path:
    """The shipped default U-Net checkpoint folder."""
    return models_dir() / DEFAULT_MODEL_NAME


def load_segmentation_model(
    path: str | os.PathLike[str] | None = None,
    spec: ModelSpec | str | os.PathLike[str] | None = None,
    fold: int | str | None = None,
) -> SegmentationModel:
    """Load the shipped U-Net, a checkpoint, an nnU-Net folder or a user's exported network.

    Parameters
    ----------
    path
        A checkpoint folder (a U-Net's, or a network fine-tuned by ``advseg harden``), an
        nnU-Net v2 ``<trainer>__<plans>__2d`` folder (or one of its
        ``fold_N`` folders), a TorchScript file or a ``torch.export`` ``.pt2`` file; None for
        the shipped U-Net.
    spec
        How the network is fed: a :class:`ModelSpec` or a spec JSON file. Required for a
        TorchScript or ``.pt2`` file; a checkpoint or nnU-Net folder carries its own, and a
        different one given here is an error (the folder's would be silently ignored otherwise).
    fold
        The nnU-Net fold (a number or ``"all"``); default: the only or the first trained one.

    Raises
    ------
    CheckpointError, InvalidInputError
        One line that says what is wrong with the model, the spec or the two together.
    """
    if spec is not None and not isinstance(spec, ModelSpec):
        spec = load_spec_file(spec)
    path = default_model_path() if path is None else Path(path)
    from .nnunet.folder import is_nnunet_folder

    nnunet = is_nnunet_folder(path)
    if fold is not None and not nnunet:
        raise InvalidInputError(f"{path}: not an nnU-Net results folder; --fold is for those.")
    if path.is_dir():
        from .finetuned import load_model_folder  # a U-Net, or any network fine-tuned here

        model = load_nnunet(path, fold) if nnunet else load_model_folder(path)[0]
        if spec is not None and spec != model.spec:
            differences = "; ".join(spec.differences(model.spec))
            source = "nnU-Net folder's plans give" if nnunet else "checkpoint carries its own"
            raise InvalidInputError(
                f"{path}: the {source} model spec, and the one given differs "
                f"({differences}); leave out the spec to use the folder's."
            )
        return model
    if path.is_file():
        if spec is None:
            raise InvalidInputError(
                f"{path}: a user's network needs a model spec (--model-spec FILE): its labels, "
                "pixel spacing, normalisation, input multiple and orientation; see the README, "
                "'Your own model and data'."
            )
        if path.suffix == ".pt2" or _is_exported_program(path):
            return load_exported(path, spec)
        return load_torchscript(path, spec)
    raise CheckpointError(
        f"{path}: no such model; give a checkpoint folder, an nnU-Net results folder, a "
        "TorchScript or .pt2 file, or nothing for the shipped U-Net."
    )
