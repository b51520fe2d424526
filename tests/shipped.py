"""The shipped attackers, named from the table that chose them (``models/default_attacker.json``).

The sweep ships the D+V attacker of each xi the headline was chosen among, and the D-only and
V-only attackers of the headline xi; tests name them through these helpers, not by a literal xi.
"""

from __future__ import annotations

from napari_advseg._resources import default_attacker_name

CANDIDATE_XI = (1.5, 2.0, 2.5, 3.0)


def headline_xi() -> float:
    """The xi of the app's default attacker, ``attacker_dv_xi{xi}``."""
    return float(default_attacker_name().removeprefix("attacker_dv_xi"))


def shipped_attacker(mode: str, xi: float | None = None) -> str:
    """The folder name of the shipped attacker of ``mode`` at ``xi`` (default: the headline)."""
    return f"attacker_{mode}_xi{headline_xi() if xi is None else xi:g}"


def shipped_attackers() -> dict[str, tuple[str, float]]:
    """Every shipped attacker's name, with its mode and xi."""
    names = {shipped_attacker("dv", xi): ("dv", xi) for xi in CANDIDATE_XI}
    names.update({shipped_attacker(mode): (mode, headline_xi()) for mode in ("d", "v")})
    return names
