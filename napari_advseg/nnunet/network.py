"""The network of an nnU-Net v2 fold: built from its plans, weights read without unpickling code.

The architecture comes from ``dynamic-network-architectures`` (the ``nnunet`` extra), the same
package nnU-Net builds its networks with; ``nnunetv2`` itself is not needed. Only classes of that
package and ``torch.nn`` are ever imported from the names a plans file holds.

nnU-Net saves ``torch.save`` pickles. Their ``network_weights`` are read with
``torch.load(weights_only=True)``, and the only types let through beyond what that allows are
NumPy scalars and dtypes (nnU-Net stores NumPy floats in ``logging`` and ``_best_ema``): any
other object in the file refuses it.
"""

from __future__ import annotations

import importlib
import pickle
import pydoc
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..training.checkpoint import check_finite
from ..training.memory import check_weights_fit
from ..validation import check_memory
from .folder import NetworkPlan, NnUNetModel, network_plan

PACKAGE = "dynamic_network_architectures"
CLASS_MODULES = (
    "dynamic_network_architectures.architectures.unet",
    "dynamic_network_architectures.architectures.resnet",
    "dynamic_network_architectures.architectures.vgg",
)
"""Where a plans file's bare class name is looked up (as nnU-Net does, in this package only)."""
EXTRA_HINT = "pip install 'napari-advseg[nnunet]'"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes DistributedDataParallel and torch.compile add to weight names."""


def numpy_safe_globals() -> list[Any]:
    """NumPy's scalar reconstructor and dtype classes: all a weights-only load may add."""
    try:
        from numpy._core.multiarray import scalar  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = getattr(np, "dtypes", None)
    dtype_classes = (
        [
            value
            for value in vars(dtypes).values()
            if isinstance(value, type) and issubclass(value, np.dtype)
        ]
        if dtypes is not None
        else []
    )
    return [scalar, np.dtype, *dtype_classes]


def read_network_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """``network_weights`` of an nnU-Net checkpoint, loaded weights-only (see the module doc).

    Raises
    ------
    CheckpointError
        If the file is not a checkpoint, needs other types to load, or holds no tensor weights.
    """
    if not zipfile.is_zipfile(checkpoint):
        raise CheckpointError(
            f"{checkpoint}: not a readable torch file (torch.save writes a zip archive)."
        )
    # the file's tensors, then the network built beside them: twice the file, at most
    check_memory(2 * checkpoint.stat().st_size, f"{checkpoint}: loading the nnU-Net weights")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        extra = _unsafe_globals(checkpoint)
        raise CheckpointError(
            f"{checkpoint}: loading it needs more than tensors and NumPy scalars"
            f"{f' ({extra})' if extra else ''}; napari-advseg never fully unpickles a file (that "
            "can run code). Save the network's state_dict alone: "
            "torch.save({'network_weights': net.state_dict()}, path)."
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{checkpoint}: not a readable torch checkpoint ({error})."
        ) from error
    weights = data.get("network_weights") if isinstance(data, Mapping) else None
    if not isinstance(weights, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in weights.values()
    ):
        raise CheckpointError(
            f"{checkpoint}: holds no 'network_weights' mapping of tensors; not an nnU-Net "
            "checkpoint."
        )
    return {_unwrapped(str(key)): value for key, value in weights.items()}


def _unsafe_globals(checkpoint: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint)
    except Exception:  # only for the message; the refusal stands without it
        return ""
    allowed = {f"{kind.__module__}.{kind.__qualname__}" for kind in numpy_safe_globals()}
    names = [name for name in names if name not in allowed]
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _unwrapped(name: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def network_class(plan: NetworkPlan, where: Path) -> type[nn.Module]:
    """The ``dynamic_network_architectures`` class a plan names (nothing else is imported)."""
    try:
        importlib.import_module(PACKAGE)
    except ImportError as error:
        raise CheckpointError(
            f"{where}: nnU-Net models need dynamic-network-architectures: {EXTRA_HINT}."
        ) from error
    name = plan.class_name
    candidates = [name] if "." in name else [f"{module}.{name}" for module in CLASS_MODULES]
    if "." in name and not name.startswith(f"{PACKAGE}."):
        raise CheckpointError(
            f"{where}: plans.json names the network {name!r}; only {PACKAGE} classes are built."
        )
    for candidate in candidates:
        found = pydoc.locate(candidate)
        if isinstance(found, type) and issubclass(found, nn.Module):
            return found
    raise CheckpointError(
        f"{where}: {PACKAGE} has no network {name!r}; it may need a newer release than the one "
        "installed, or a custom trainer's code."
    )


def torch_class(value: Any, key: str, where: Path) -> Any:
    """The ``torch.nn`` class a plans entry names (None stays None)."""
    if value is None:
        return None
    found = (
        pydoc.locate(value) if isinstance(value, str) and value.startswith("torch.nn.") else None
    )
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise CheckpointError(
            f"{where}: plans.json's {key} is {value!r}; only torch.nn module classes are allowed."
        )
    return found


def build_network(model: NnUNetModel, num_classes: int) -> nn.Module:
    """The fold's network, deep supervision off, with nnU-Net's random initialisation."""
    plan = network_plan(model)
    cls = network_class(plan, model.folder)
    kwargs = dict(plan.kwargs)
    for key in plan.requires_import:
        if key in kwargs:
            kwargs[key] = torch_class(kwargs[key], key, model.folder)
    kwargs.pop("deep_supervision", None)
    try:
        network = cls(input_channels=1, num_classes=num_classes, deep_supervision=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as error:
        raise CheckpointError(
            f"{model.folder}: the plans' {plan.class_name.rsplit('.', 1)[-1]} does not build "
            f"with the installed {PACKAGE} ({type(error).__name__}: {error})."
        ) from error
    return network


def load_network(model: NnUNetModel, num_classes: int) -> nn.Module:
    """The fold's network with its trained weights, in evaluation mode.

    Raises
    ------
    CheckpointError
        If the weights cannot be read safely or do not fit the network the plans describe.
    """
    weights = read_network_weights(model.checkpoint)
    trainer = model.trainer.replace("{", "{{").replace("}", "}}")  # literal in the template
    check_weights_fit(
        model.checkpoint,
        lambda: build_network(model, num_classes),
        weights,
        "nnU-Net network",
        "{folder}: the weights do not fit the network plans.json describes ({detail}); a "
        f"custom trainer ({trainer}) may build another network.",
    )
    check_finite(model.checkpoint, weights)
    network = build_network(model, num_classes)
    network.load_state_dict(weights, strict=True)
    return network.eval()
