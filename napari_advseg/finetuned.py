"""Fine-tuned copies of any segmentation network, as checkpoint folders.

Hardening (:mod:`napari_advseg.training.harden_trainer`) trains f_seg's weights. The built-in
U-Net is saved as an ordinary U-Net checkpoint. Any other network (an nnU-Net fold, a
TorchScript or ``torch.export`` file) keeps its code in the file it came from, so its folder holds
the new weights (safetensors), the model spec, and where that file is (its *base*, with its
hash); loading rebuilds the network from the base and puts the new weights into it. Nothing is
unpickled that the base's own loader would not read.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, InvalidInputError
from .model_spec import ModelSpec
from .nets.unet import UNet
from .segmentation import UNET_KIND, SegmentationModel, load_unet, save_unet
from .training.checkpoint import (
    check_finite,
    load_checkpoint,
    read_config,
    save_checkpoint,
    weights_sha256,
)

FINETUNED_KIND = "segmentation/finetuned"
BASE_KINDS = ("segmentation/nnunet", "segmentation/torchscript", "segmentation/torch-export")


def trainable_network(model: SegmentationModel) -> nn.Module:
    """A copy of ``model``'s network whose weights can be trained; ``model`` is left as it is.

    Raises
    ------
    InvalidInputError
        For a network without trainable weights.
    """
    network = model.network
    if isinstance(network, torch.jit.ScriptModule):
        # a deep copy of a TorchScript module does not give leaf parameters: load it again
        path = model.config.get("path")
        if not path or not Path(path).is_file():
            raise InvalidInputError(
                f"{model.name}: its TorchScript file {path} is gone; load the model again."
            )
        with warnings.catch_warnings():  # deprecated in torch >= 2.10, as in segmentation.py
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            fresh = torch.jit.load(str(path), map_location="cpu")
        fresh.load_state_dict(network.state_dict())
        copied: nn.Module = fresh
    else:
        copied = copy.deepcopy(network)
    parameters = list(copied.parameters())
    if not parameters:
        raise InvalidInputError(
            f"{model.name}: the network has no trainable weights (a torch.export program may "
            "hold them as constants); export it with its parameters, or give a checkpoint."
        )
    for parameter in parameters:
        parameter.requires_grad_(True)
    return copied


def base_description(model: SegmentationModel) -> dict[str, Any]:
    """Where a user's network's code lives: its kind, absolute path, fold and hash.

    A model that is itself fine-tuned names its own base, so a twice-hardened model still
    loads from the original file.
    """
    if model.config.get("kind") == FINETUNED_KIND:
        return dict(model.config["base"])
    kind = model.config.get("kind")
    if kind not in BASE_KINDS:
        raise InvalidInputError(
            f"{model.name}: a {kind!r} model cannot be saved as a fine-tuned copy; give a "
            "checkpoint folder, an nnU-Net folder, or a TorchScript or .pt2 file."
        )
    base = {
        "kind": kind,
        "path": str(Path(model.config["path"]).resolve()),
        "weights_sha256": model.config.get("weights_sha256"),
    }
    if kind == "segmentation/nnunet":
        base["fold"] = model.config.get("fold")
    return base


def save_model(
    folder: str | os.PathLike[str],
    network: nn.Module,
    model: SegmentationModel,
    training: Mapping[str, Any],
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``network`` (trained from ``model``) as a checkpoint folder, atomically.

    A :class:`UNet` becomes a U-Net checkpoint; any other network a fine-tuned one that names
    ``model``'s file as its base.
    """
    if isinstance(network, UNet):
        return save_unet(folder, network, model.spec, training, extra_tensors)
    config = {
        "kind": FINETUNED_KIND,
        "spec": model.spec.to_dict(),
        "base": base_description(model),
        "training": dict(training),
    }
    tensors = {f"model/{k}": v.detach() for k, v in network.state_dict().items()}
    tensors.update(extra_tensors or {})
    return save_checkpoint(folder, tensors, config)


def is_finetuned(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a fine-tuned checkpoint (False for anything unreadable)."""
    try:
        return read_config(folder).get("kind") == FINETUNED_KIND
    except CheckpointError:
        return False


def load_model_folder(
    folder: str | os.PathLike[str],
) -> tuple[SegmentationModel, dict[str, torch.Tensor]]:
    """Load a U-Net or fine-tuned checkpoint folder; return it and its extra tensors."""
    if not is_finetuned(folder):
        return load_unet(folder)
    return load_finetuned(folder)


def load_finetuned(
    folder: str | os.PathLike[str],
) -> tuple[SegmentationModel, dict[str, torch.Tensor]]:
    """Rebuild a fine-tuned network from its base file and load its weights.

    Raises
    ------
    CheckpointError
        For a damaged folder, a base file that is gone, or weights that do not fit it.
    """
    from .segmentation import load_exported, load_nnunet, load_torchscript

    folder = Path(folder)
    config, tensors = load_checkpoint(folder, kind=FINETUNED_KIND)
    try:
        spec = ModelSpec.from_config(config)
        base = config["base"]
        kind, path = base["kind"], Path(base["path"])
    except (KeyError, TypeError, ValueError, InvalidInputError) as error:
        raise CheckpointError(f"{folder}: a damaged fine-tuned config ({error}).") from error
    if kind not in BASE_KINDS:
        raise CheckpointError(f"{folder}: unknown base kind {kind!r}; the config is damaged.")
    if not path.exists():
        raise CheckpointError(
            f"{folder}: holds fine-tuned weights of {path}, which is gone; the network's code "
            "comes from that file or folder: put it back at that path."
        )
    if kind == "segmentation/nnunet":
        base_model = load_nnunet(path, base.get("fold"))
        if base_model.spec != spec:
            raise CheckpointError(
                f"{folder}: its base {path} is now fed otherwise "
                f"({'; '.join(spec.differences(base_model.spec))})."
            )
    elif kind == "segmentation/torchscript":
        base_model = load_torchscript(path, spec)
    else:
        base_model = load_exported(path, spec)
    weights = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    check_finite(folder, weights)
    try:
        base_model.network.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"{folder}: its weights do not fit the network of {path} ({first}); the base file "
            "has changed since the model was fine-tuned."
        ) from error
    model = SegmentationModel(base_model.network, spec, folder.name, config, check_outputs=True)
    model.freeze()
    model.config["weights_sha256"] = weights_sha256(folder)
    extra = {k: v for k, v in tensors.items() if not k.startswith("model/")}
    return model, extra


__all__ = [
    "FINETUNED_KIND",
    "UNET_KIND",
    "is_finetuned",
    "load_finetuned",
    "load_model_folder",
    "save_model",
    "trainable_network",
]
