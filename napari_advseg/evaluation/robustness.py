"""How robust a hardened model is, measured honestly: before against after, on a sweep's rows.

A model fine-tuned against its attacker (issue 12) is compared with the original through two
sweeps (``rows.json`` payloads, rows as :mod:`.sweep` writes them):

1. the headline: a fresh attacker trained against each model with the same settings; the
   smallest in-body perceptibility (HU, ``p_hu_body``) at which it makes every organ lose
   :data:`~.decrease.SUCCESS_DECREASE` % of its Dice (:func:`rule_threshold`), and the Dice per
   organ at one fixed in-body p (:func:`dice_at_p`);
2. transfer: the original model's attackers evaluated against the hardened model (a sweep of
   its own, with ``--attackers``);
3. random smooth perturbations at the same in-body p (each sweep's random row);
4. clean Dice (each sweep's ``U-Net`` row).

:func:`compare` gathers them, with the issue's goals checked, as one JSON-ready dict. Nothing
here reads files, trains or evaluates: it works on rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, TypedDict

from .decrease import SUCCESS_DECREASE

Row = Mapping[str, Any]
RULE_TOLERANCE = 1e-9
"""A decrease of exactly 30 % counts (as :attr:`~.decrease.OrganDecrease.success`)."""
MIN_RATIO = 2.0
"""Goal: a fresh attacker needs at least this many times the in-body p after hardening."""
MAX_CLEAN_FALL = 0.01
"""Goal: clean Dice falls by at most this much (absolute Dice) on every organ."""
SPLIT_TEST = "test"
SPLIT_VALIDATION = "validation"
SPLIT_TEST_HEADLINE = "test (headline D+V row only)"


class Threshold(TypedDict):
    """:func:`rule_threshold`'s answer (JSON-ready)."""

    p_hu_body: float | None
    """The smallest in-body p (HU) at which every organ loses 30 %; None when not reached."""
    reached: bool
    per_organ: dict[str, float | None]
    """Each organ's first crossing of 30 % (None: never reached, or no data)."""
    not_reached: list[str]
    """Organs whose curve never reaches 30 % within the tested p."""
    no_data: list[str]
    """Organs without a decrease on any row (absent from the data); they do not count."""
    below_first_tested: list[str]
    """Organs whose crossing lies between p = 0 and the smallest tested p."""
    smallest_p_tested: float | None
    largest_p_tested: float | None
    points: int
    smallest_meeting_row: dict[str, Any] | None
    """The tested row of smallest p that meets the rule on every organ (label, xi, p_hu_body)."""


def attack_curve(rows: Sequence[Row]) -> list[Row]:
    """The D+V attack rows that have an in-body p, by increasing ``p_hu_body``."""
    usable = [r for r in rows if r.get("mode") == "dv" and r.get("p_hu_body") is not None]
    return sorted(usable, key=lambda r: float(r["p_hu_body"]))


def _organ_points(curve: Sequence[Row], key: str, organ: str) -> list[tuple[float, float]]:
    points = []
    for row in curve:
        value = (row.get(key) or {}).get(organ)
        if value is not None:
            points.append((float(row["p_hu_body"]), float(value)))
    return points


def _first_crossing(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """The first p at which the polyline through ``(0, 0)`` and ``points`` reaches ``level``."""
    previous = (0.0, 0.0)
    for p, value in points:
        if value >= level - RULE_TOLERANCE:
            (p0, v0) = previous
            if value <= v0 or p <= p0:
                return p
            return min(p, p0 + (level - v0) * (p - p0) / (value - v0))
        previous = (p, value)
    return None


def _meets_rule(row: Row, organs: Sequence[str]) -> bool:
    decrease = row.get("decrease_warped") or {}
    defined = [decrease.get(o) for o in organs if decrease.get(o) is not None]
    return bool(defined) and all(v >= SUCCESS_DECREASE - RULE_TOLERANCE for v in defined)


def rule_threshold(rows: Sequence[Row], organs: Sequence[str]) -> Threshold:
    """The smallest in-body p (HU) at which the attack makes every organ lose 30 %.

    Method: the D+V rows (``mode == "dv"``, with a ``p_hu_body``) are sorted by ``p_hu_body``;
    each organ's ``decrease_warped`` (%, the anatomy-consistent reference) is joined by straight
    lines, starting from ``(0, 0)``: an unperturbed image loses nothing. An organ's threshold is
    the first p at which that polyline reaches :data:`~.decrease.SUCCESS_DECREASE` (30 %),
    linearly interpolated between the last row below and the first row at or above it (a curve
    that falls back below 30 % later is not looked at again). The threshold is the largest of
    the organs' (every organ must lose 30 %), and None when some organ never reaches 30 % within
    the tested rows: then ``not_reached`` names those organs and ``largest_p_tested`` says how
    far the rows went. Organs without any decrease (absent from the data) are listed in
    ``no_data`` and do not count, as in :func:`~.sweep.headline_row`. ``below_first_tested``
    names organs whose crossing lies between 0 and the smallest tested p (so it rests on the
    ``(0, 0)`` anchor). Beside the estimate, ``smallest_meeting_row`` is the tested row of
    smallest p that meets the rule on every organ, if any: a measured, not interpolated, bound.

    Parameters
    ----------
    rows
        Rows as in ``rows.json``; rows of other modes and the baseline rows are ignored.
    organs
        The organs that must all lose 30 %.
    """
    curve = attack_curve(rows)
    tested = [float(r["p_hu_body"]) for r in curve]
    per_organ: dict[str, float | None] = {}
    not_reached, no_data, below = [], [], []
    for organ in organs:
        points = _organ_points(curve, "decrease_warped", organ)
        if not points:
            no_data.append(organ)
            per_organ[organ] = None
            continue
        crossing = _first_crossing(points, SUCCESS_DECREASE)
        per_organ[organ] = crossing
        if crossing is None:
            not_reached.append(organ)
        elif crossing < points[0][0]:
            below.append(organ)
    counted = [v for o, v in per_organ.items() if o not in no_data and v is not None]
    reached = bool(counted) and not not_reached
    meeting = next((r for r in curve if _meets_rule(r, organs)), None)
    return {
        "p_hu_body": max(counted) if reached else None,
        "reached": reached,
        "per_organ": per_organ,
        "not_reached": not_reached,
        "no_data": no_data,
        "below_first_tested": below,
        "smallest_p_tested": min(tested, default=None),
        "largest_p_tested": max(tested, default=None),
        "points": len(curve),
        "smallest_meeting_row": None
        if meeting is None
        else {k: meeting.get(k) for k in ("label", "xi", "p_hu_body")},
    }


def _interpolate(points: Sequence[tuple[float, float]], at: float) -> float | None:
    """The polyline through ``points`` (sorted by p) at ``at``; None outside their range."""
    if not points or at < points[0][0] or at > points[-1][0]:
        return None
    for (p0, v0), (p1, v1) in pairwise(points):
        if p0 <= at <= p1:
            return v0 if p1 == p0 else v0 + (at - p0) * (v1 - v0) / (p1 - p0)
    return points[0][1]  # a single point, at exactly its p


def dice_at_p(
    rows: Sequence[Row], organs: Sequence[str], p_hu_body: float
) -> dict[str, float | None]:
    """Each organ's Dice (``dice_warped``) under the D+V attack, interpolated at an in-body p.

    The D+V rows are sorted by ``p_hu_body`` and each organ's Dice joined by straight lines; an
    organ's value is None where ``p_hu_body`` lies outside the tested p (no extrapolation) or
    the organ has no Dice.
    """
    curve = attack_curve(rows)
    return {
        organ: _interpolate(_organ_points(curve, "dice_warped", organ), float(p_hu_body))
        for organ in organs
    }


def curve_rows(payload: Mapping[str, Any]) -> tuple[list[Row], str]:
    """The rows a sweep's curve is drawn through, and the split they are from.

    The test split where the sweep has ``test-curve`` rows (``sweep --curve-on-test``): those
    rows, and the test D+V row if its xi has none. Otherwise the validation rows (one D+V row
    per candidate xi), and where there are none either, the test D+V row alone.
    """
    rows = list(payload.get("rows") or [])
    extra = list(payload.get("curve_rows") or [])
    curve = [r for r in [*rows, *extra] if r.get("split") == "test-curve"]
    test = [r for r in rows if r.get("mode") == "dv" and r.get("split", "test") == "test"]
    if curve:  # the test D+V row only where the curve has no row of its xi (one point per xi)
        drawn = {r.get("xi") for r in curve}
        return [*curve, *(r for r in test if r.get("xi") not in drawn)], SPLIT_TEST
    validation = [r for r in payload.get("validation_rows") or [] if r.get("mode") == "dv"]
    if validation:
        return validation, SPLIT_VALIDATION
    return test, SPLIT_TEST_HEADLINE


def _row(rows: Sequence[Row], mode: str | None, label: str | None = None) -> Row | None:
    for row in rows:
        if row.get("mode") == mode and (label is None or row.get("label") == label):
            if mode != "dv" or row.get("split", "test") == "test":
                return row
    return None


def _brief(row: Row | None, organs: Sequence[str]) -> dict[str, Any] | None:
    """The figures of a row the comparison shows."""
    if row is None:
        return None
    keys = ("label", "xi", "mode", "p", "p_hu_body", "seeds", "split")
    brief = {k: row.get(k) for k in keys}
    for key in ("dice", "dice_warped", "decrease_warped", "success_warped"):
        values = row.get(key) or {}
        brief[key] = {o: values.get(o) for o in organs}
    return brief


def clean_dice(payload: Mapping[str, Any], organs: Sequence[str]) -> dict[str, float | None]:
    """The model's clean Dice per organ on the test subjects (the sweep's ``U-Net`` row)."""
    row = _row(payload.get("rows") or [], None, "U-Net") or {}
    values = row.get("dice") or {}
    return {o: values.get(o) for o in organs}


def headline_p(payload: Mapping[str, Any]) -> float | None:
    """The in-body p (HU) of a sweep's headline D+V test row, or None."""
    row = _row(payload.get("rows") or [], "dv")
    return None if row is None or row.get("p_hu_body") is None else float(row["p_hu_body"])


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio_goal(before: Threshold, after: Threshold) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ratio of the thresholds (or a bound on it) and the goal it decides."""
    b, a = before["p_hu_body"], after["p_hu_body"]
    ratio: dict[str, Any] = {"value": None, "at_least": None, "at_most": None}
    goal: dict[str, Any] = {
        "goal": f"fresh attacker needs at least {MIN_RATIO:g}x the in-body p",
        "met": None,
    }
    if b is not None and a is not None and b > 0:
        ratio["value"] = a / b
        goal["met"] = ratio["value"] >= MIN_RATIO
        goal["figure"] = f"ratio {a / b:.2f} ({_fmt(a)} HU after / {_fmt(b)} HU before)"
        return ratio, goal
    unknown = []
    if b is None:
        unknown.append(_never("before", before))
    if a is None:
        unknown.append(_never("after", after))
    largest_a, largest_b = after["largest_p_tested"], before["largest_p_tested"]
    if b is not None and a is None and b > 0 and largest_a is not None:
        ratio["at_least"] = largest_a / b  # after's threshold lies beyond its largest p
        unknown.append(f"ratio > {ratio['at_least']:.2f}")
    if a is not None and b is None and largest_b:
        ratio["at_most"] = a / largest_b  # before's threshold lies beyond its largest p
        unknown.append(f"ratio < {ratio['at_most']:.2f}")
    if ratio["at_least"] is not None and ratio["at_least"] >= MIN_RATIO:
        goal["met"] = True  # the bound settles it
        goal["figure"] = "; ".join(unknown)
    elif ratio["at_most"] is not None and ratio["at_most"] < MIN_RATIO:
        goal["met"] = False
        goal["figure"] = "; ".join(unknown)
    else:
        goal["figure"] = "unknown: " + "; ".join(unknown)
    return ratio, goal


def _never(which: str, threshold: Threshold) -> str:
    """Why a side has no threshold, in words."""
    largest = threshold["largest_p_tested"]
    if largest is None:
        return f"{which}: no D+V rows with an in-body p"
    if not threshold["not_reached"]:
        return f"{which}: no organ has a Dice decrease on the D+V rows"
    organs = ", ".join(threshold["not_reached"])
    return f"{which}: never reaches {SUCCESS_DECREASE:g} % on {organs} up to p = {largest:.1f} HU"


def _clean_goal(change: Mapping[str, float | None]) -> dict[str, Any]:
    goal: dict[str, Any] = {
        "goal": f"clean Dice falls by at most {MAX_CLEAN_FALL:g} per organ",
        "met": None,
    }
    known = {o: v for o, v in change.items() if v is not None}
    missing = [o for o, v in change.items() if v is None]
    if not known:
        goal["figure"] = "unknown: no organ has a clean Dice before and after"
        return goal
    worst = min(known, key=lambda o: known[o])
    over = [o for o, v in known.items() if -v > MAX_CLEAN_FALL + RULE_TOLERANCE]
    goal["met"] = False if over else (None if missing else True)
    goal["figure"] = (
        f"worst change after - before {known[worst]:+.4f} ({worst}; limit -{MAX_CLEAN_FALL:g})"
    )
    if over:
        goal["figure"] += "; over the limit on " + ", ".join(over)
    if missing:
        goal["figure"] += "; unknown on " + ", ".join(missing)
    return goal


def _same(first: Mapping[str, float | None], second: Mapping[str, float | None]) -> bool:
    """Whether two Dice per organ agree (to 1e-6: the same model on the same subjects)."""
    return all(
        (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-6)
        for a, b in zip(first.values(), second.values(), strict=True)
    )


def _sweep_part(payload: Mapping[str, Any], organs: Sequence[str], at: float | None) -> dict:
    rows, split = curve_rows(payload)
    return {
        "seg": payload.get("seg"),
        "command": payload.get("command"),
        "curve_split": split,
        "clean_dice": clean_dice(payload, organs),
        "threshold": rule_threshold(rows, organs),
        "dice_at_p": None if at is None else dice_at_p(rows, organs, at),
        "headline": _brief(_row(payload.get("rows") or [], "dv"), organs),
        "random": _brief(_row(payload.get("rows") or [], "random"), organs),
        "curve": [_brief(r, organs) for r in attack_curve(rows)],
    }


def compare(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    transfer: Mapping[str, Any] | None = None,
    at_p_hu: float | None = None,
) -> dict[str, Any]:
    """Before against after hardening, as a JSON-ready dict.

    Parameters
    ----------
    before, after
        The ``rows.json`` payloads of a sweep against the original and against the hardened
        model, with the same attack settings.
    transfer
        Optionally, the payload of a sweep of the original model's attackers against the
        hardened model (``sweep --attackers``).
    at_p_hu
        The in-body p (HU) at which Dice is compared; default: ``before``'s headline D+V test
        row's ``p_hu_body``.

    Returns
    -------
    dict
        ``organs``; ``at_p_hu`` and where it came from; ``before``, ``after`` (and
        ``transfer``): each sweep's model, command, ``curve_split`` (the split the curve's rows
        are from, always named), clean Dice, :func:`rule_threshold`, :func:`dice_at_p`, the
        headline and random rows, and the curve; ``clean_dice_change`` (after - before per
        organ); ``threshold_ratio`` (``value``, or the bound ``at_least``/``at_most`` when one
        threshold is not reached); ``goals`` (``goal``, ``met``: True, False or None for
        unknown, and the ``figure`` it rests on); ``warnings``.
    """
    organs = list(before.get("organs") or after.get("organs") or [])
    warnings = []
    if list(after.get("organs") or organs) != organs:
        warnings.append("the two sweeps have different organs; the before sweep's are compared")
    if before.get("test_subjects") != after.get("test_subjects"):
        warnings.append("the two sweeps were evaluated on different test subjects")
    source = "given (--at-p-hu)"
    if at_p_hu is None:
        at_p_hu, source = headline_p(before), "the before sweep's headline D+V test row"
    if at_p_hu is None:
        source = "none: the before sweep has no headline D+V test row with an in-body p"
    parts = {"before": _sweep_part(before, organs, at_p_hu)}
    parts["after"] = _sweep_part(after, organs, at_p_hu)
    if transfer is not None:
        parts["transfer"] = _sweep_part(transfer, organs, at_p_hu)
        parts["transfer"]["rows"] = [
            _brief(r, organs) for r in transfer.get("rows") or [] if r.get("mode") is not None
        ]
    clean_b, clean_a = parts["before"]["clean_dice"], parts["after"]["clean_dice"]
    if transfer is not None and not _same(parts["transfer"]["clean_dice"], clean_a):
        warnings.append(
            "the transfer sweep's clean Dice differs from the after sweep's: it should be of "
            "the hardened model on the same test subjects"
        )
    change = {
        o: None if clean_b[o] is None or clean_a[o] is None else clean_a[o] - clean_b[o]
        for o in organs
    }
    ratio, ratio_goal = _ratio_goal(parts["before"]["threshold"], parts["after"]["threshold"])
    for which in ("before", "after"):
        if parts[which]["curve_split"] != SPLIT_TEST:
            warnings.append(
                f"the {which} sweep's curve is from the {parts[which]['curve_split']} split "
                "(run the sweep with --curve-on-test for a test-split curve)"
            )
    return {
        "organs": organs,
        "rule_percent": SUCCESS_DECREASE,
        "at_p_hu": at_p_hu,
        "at_p_hu_source": source,
        **parts,
        "clean_dice_change": change,
        "threshold_ratio": ratio,
        "goals": [ratio_goal, _clean_goal(change)],
        "warnings": warnings,
    }
