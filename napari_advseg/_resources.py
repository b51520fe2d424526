"""Locate the shipped models and sample data, in a wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder ``models`` or ``sample_data`` that ships with the package.

    A wheel carries the folders inside the package; an editable install or a source checkout
    has them at the top level of the repository, beside the package.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"The shipped folder {name!r} is missing beside {_PACKAGE_DIR}: reinstall napari-advseg "
        "(pip install napari-advseg) or run from a complete clone of the repository."
    )


def models_dir() -> Path:
    """Folder of the shipped model checkpoints."""
    return resource_dir("models")


def sample_data_dir() -> Path:
    """Folder of the shipped sample data."""
    return resource_dir("sample_data")


DEFAULT_ATTACKER_FILE = "default_attacker.json"
FALLBACK_ATTACKER = "attacker_dv_xi2.5"


def default_attacker_name() -> str:
    """The shipped attacker the app and ``generate`` use by default.

    ``models/default_attacker.json`` names it, written with the table that chose it
    (``scripts/export_attackers.py``); without that file, the attacker shipped before it.
    """
    import json

    path = models_dir() / DEFAULT_ATTACKER_FILE
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["attacker"]
    except (OSError, ValueError, KeyError, TypeError):
        return FALLBACK_ATTACKER
    return str(name) if (models_dir() / str(name)).is_dir() else FALLBACK_ATTACKER
