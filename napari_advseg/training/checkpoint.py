"""Checkpoint folders: ``config.json`` beside ``weights.safetensors``, written atomically.

Nothing here unpickles: weights are safetensors, settings are JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT = "napari-advseg"
FORMAT_VERSION = 1


def save_checkpoint(
    folder: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write a checkpoint folder atomically.

    The folder is written under a temporary name and renamed into place, so a crash or a full
    disk leaves the previous checkpoint intact, never half a new one.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        contiguous = {
            name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()
        }
        save_file(contiguous, str(tmp / WEIGHTS_NAME))
        os.chmod(tmp / WEIGHTS_NAME, 0o644)  # safetensors creates it private
        full_config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
        (tmp / CONFIG_NAME).write_text(json.dumps(full_config, indent=2, sort_keys=False) + "\n")
        # Keep nested checkpoints (e.g. last/) that live inside the previous folder.
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not (tmp / child.name).exists():
                    shutil.copytree(child, tmp / child.name)
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_config(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``; with ``kind``, require that kind."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.is_file():
            raise CheckpointError(
                f"{folder}: is a file; a napari-advseg checkpoint is a folder holding "
                f"{CONFIG_NAME} and {WEIGHTS_NAME}."
            )
        raise CheckpointError(f"{folder}: no such checkpoint folder.")
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(
            f"{folder}: missing {CONFIG_NAME}; not a napari-advseg checkpoint."
        ) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path}: corrupt JSON ({error}); the checkpoint is damaged."
        ) from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-advseg checkpoint config.")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer napari-advseg; upgrade to read it.")
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"{folder}: holds a {config.get('kind')!r} checkpoint where a {kind!r} one is needed."
        )
    return config


def load_checkpoint(
    folder: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint folder: its config and its tensors (on the CPU)."""
    folder = Path(folder)
    config = read_config(folder, kind)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: missing {WEIGHTS_NAME}; the checkpoint is incomplete.")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: corrupt weights ({error}); the checkpoint is damaged."
        ) from error
    return config, tensors


def weights_sha256(folder: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint's weights file, identifying the exact model."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_NAME, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON (hyper-parameters).

    Tensor names start with ``prefix/``, so one checkpoint can hold several optimizers.
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{index}/{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    prefix: str = "optimizer",
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if key.startswith(f"{prefix}/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = tensor
    for index, values in meta.get("plain_state", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
