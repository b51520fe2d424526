"""Checkpoint folders: ``config.json`` beside ``weights.safetensors``, replaced atomically.

Nothing here unpickles: weights are safetensors, settings are JSON.

A save writes the new checkpoint into ``.NAME.tmp-PID`` beside the folder, with a copy of every
other file and folder the old one holds (a model card, ``last/``: nothing is lost), then swaps it
in with two renames: ``NAME -> .NAME.old-PID`` and ``.NAME.tmp-PID -> NAME``. A process killed
between them leaves no ``NAME``; :func:`recover_checkpoint` (called before every read and every
save, and by the trainers) puts back the complete newer copy, else the old one, and removes the
``.NAME.tmp-PID`` / ``.NAME.old-PID`` leftovers of processes that are no longer alive.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
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
FORMAT_VERSION = 2
"""Version 2 holds a model's spec under "spec" (version 1 held its entries at the top level)."""

_LOCK = threading.RLock()
"""Serialises swaps, recoveries and reads within this process (a reader in the GUI thread never
sees the instant between the two renames of a save in a training thread)."""
_ACTIVE: set[Path] = set()
"""The temporary folders of the saves this process is making now; any other leftover with this
process's id is stale (in a container, a restarted run often gets the id of the killed one)."""


def _leftover_pattern(folder: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(folder.name)}\.(tmp|old)-([0-9]+)")


def _leftover(folder: Path, role: str, pid: int) -> Path:
    return folder.with_name(f".{folder.name}.{role}-{pid}")


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but belongs to someone else, or we cannot tell: keep its files
    return True


def _is_complete(folder: Path) -> bool:
    """A checkpoint folder whose config parses and whose weights file is present."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and config.get("format") == FORMAT
        and (folder / WEIGHTS_NAME).is_file()
    )


def _leftovers(folder: Path) -> list[tuple[Path, str, int]]:
    """``(path, "tmp" or "old", pid)`` of abandoned leftover folders beside ``folder``."""
    pattern = _leftover_pattern(folder)
    found = []
    try:
        entries = list(folder.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match.group(2))
        if _absolute(entry) in _ACTIVE or (pid != os.getpid() and _alive(pid)):
            continue  # a save in progress, here or in another process
        found.append((entry, match.group(1), pid))
    return found


def recover_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """Repair what a killed save left beside ``folder``; return the folder put back, if any.

    When ``folder`` is missing, the newest complete ``.NAME.tmp-PID`` of a dead process (the
    checkpoint that was being swapped in) is renamed to ``folder``, else its ``.NAME.old-PID``
    (the one being replaced). Then every ``.NAME.tmp-PID`` and ``.NAME.old-PID`` folder of a
    dead process beside it is removed. Nothing else is touched.

    Raises
    ------
    CheckpointError
        If ``folder`` is missing, a leftover could restore it, and that rename fails.
    """
    folder = Path(folder)
    with _LOCK:
        leftovers = _leftovers(folder)
        if not leftovers:
            return None
        restored = None
        if not os.path.lexists(folder):
            complete = [item for item in leftovers if _is_complete(item[0])]
            # prefer the newer copy (tmp), then the most recently written one
            complete.sort(
                key=lambda item: (item[1] == "tmp", _mtime(item[0] / CONFIG_NAME)), reverse=True
            )
            if complete:
                source = complete[0][0]
                try:
                    os.replace(source, folder)
                except OSError as error:
                    raise CheckpointError(
                        f"{folder}: missing, and {source.name} beside it holds an interrupted "
                        f"save that cannot be put back ({error.strerror}); rename it to "
                        f"{folder.name} by hand."
                    ) from error
                restored = folder
        for path, _, _ in leftovers:
            if path.exists() and path != folder:
                shutil.rmtree(path, ignore_errors=True)
        return restored


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def has_checkpoint(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a checkpoint (after repairing an interrupted save)."""
    folder = Path(folder)
    recover_checkpoint(folder)
    return (folder / CONFIG_NAME).is_file() or (folder / WEIGHTS_NAME).is_file()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and directories on some platforms) cannot be synced
    finally:
        os.close(fd)


def _link_or_copy(source: str, destination: str) -> None:
    """Hard-link a file (cheap, and saves never write into an existing file), else copy it."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def save_checkpoint(
    folder: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write a checkpoint folder atomically, keeping every other file the folder holds.

    The new ``config.json`` and ``weights.safetensors`` are written under a temporary name with
    a copy of everything else in the old folder (a model card, nested checkpoints such as
    ``last/``), then swapped in. A crash or a full disk leaves the previous checkpoint intact,
    never half a new one; a kill between the two renames of the swap is repaired by
    :func:`recover_checkpoint` on the next read or save.
    """
    folder = Path(folder)
    if folder.is_symlink():
        folder = folder.resolve()  # replace the folder it points to, not the link
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(folder)
    tmp = _leftover(folder, "tmp", os.getpid())
    old = _leftover(folder, "old", os.getpid())
    active = (_absolute(tmp), _absolute(old))
    with _LOCK:
        _ACTIVE.update(active)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        contiguous = {
            name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()
        }
        save_file(contiguous, str(tmp / WEIGHTS_NAME))
        os.chmod(tmp / WEIGHTS_NAME, 0o644)  # safetensors creates it private
        _fsync(tmp / WEIGHTS_NAME)
        full_config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
        (tmp / CONFIG_NAME).write_text(json.dumps(full_config, indent=2, sort_keys=False) + "\n")
        _fsync(tmp / CONFIG_NAME)
        with _LOCK:
            if folder.is_dir():
                # Keep everything that is not ours to replace: model cards, last/, notes, ...
                for child in folder.iterdir():
                    if child.name in (CONFIG_NAME, WEIGHTS_NAME):
                        continue
                    target = tmp / child.name
                    if child.is_dir() and not child.is_symlink():
                        shutil.copytree(child, target, symlinks=True, copy_function=_link_or_copy)
                    elif child.is_symlink():
                        os.symlink(os.readlink(child), target)
                    else:
                        _link_or_copy(str(child), str(target))
                _fsync(tmp)
                os.replace(folder, old)
            os.replace(tmp, folder)
        _fsync(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        with _LOCK:
            _ACTIVE.difference_update(active)
    return folder


def read_config(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``; with ``kind``, require that kind."""
    folder = Path(folder)
    recover_checkpoint(folder)
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
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror}).") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-advseg checkpoint config.")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CheckpointError(
            f"{path}: format_version must be a whole number, got {_short(version)}; the "
            "checkpoint is damaged."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer napari-advseg; upgrade to read it.")
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"{folder}: holds a {_short(config.get('kind'))} checkpoint where a {kind!r} one is "
            "needed."
        )
    return config


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(
    folder: str | os.PathLike[str], kind: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint folder: its config and its tensors (on the CPU)."""
    folder = Path(folder)
    with _LOCK:  # config and weights of the same save, even while a trainer thread saves
        config = read_config(folder, kind)
        path = folder / WEIGHTS_NAME
        if not path.is_file():
            raise CheckpointError(
                f"{folder}: missing {WEIGHTS_NAME}; the checkpoint is incomplete."
            )
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path}: corrupt weights ({error}); the checkpoint is damaged."
            ) from error
    return config, tensors


def check_finite(
    folder: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], prefix: str = ""
) -> None:
    """Refuse a checkpoint whose tensors (those starting with ``prefix``) hold NaN or inf."""
    bad = [
        name
        for name, tensor in tensors.items()
        if name.startswith(prefix)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"{folder}: {len(bad)} of its tensors hold NaN or infinite values (first: {bad[0]}); "
            "the training that wrote it diverged. Use an earlier checkpoint or train again."
        )


def weights_sha256(folder: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint's weights file, identifying the exact model."""
    return file_sha256(Path(folder) / WEIGHTS_NAME)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in blocks (a model file can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
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
    """Inverse of :func:`optimizer_tensors`.

    Raises
    ------
    CheckpointError
        If the saved state does not fit ``optimizer`` (another architecture or optimizer).
    """
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            if key.startswith(f"{prefix}/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = tensor
        for index, values in meta.get("plain_state", {}).items():
            state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
        raise CheckpointError(
            f"the saved {prefix} state does not fit this run ({str(error).splitlines()[0]}); "
            "resume with the settings it was trained with, or train into a new folder."
        ) from error


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "check_finite",
    "has_checkpoint",
    "load_checkpoint",
    "optimizer_tensors",
    "read_config",
    "recover_checkpoint",
    "restore_optimizer",
    "save_checkpoint",
    "weights_sha256",
]
