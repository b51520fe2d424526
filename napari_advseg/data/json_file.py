"""Reading a small JSON object that a user wrote: one clear line for every way it can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def read_json_object(path: Path, what: str, max_bytes: int, hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path`` (a ``what``), with no key given twice.

    Raises
    ------
    InvalidInputError
        If the file is missing, larger than ``max_bytes``, not JSON (``hint`` is added to that
        message), holds a key twice, or is not a JSON object.
    """
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file; {what} is needed here.")
    if path.stat().st_size > max_bytes:
        raise InvalidInputError(f"{path}: too big for {what}.")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise InvalidInputError(f"{path}: key {twice[0]!r} is given twice; keep one.")
        return dict(pairs)

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    except InvalidInputError:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{path}: not valid JSON ({error}){hint}.") from error
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: must hold a JSON object ({what}){hint}.")
    return data
