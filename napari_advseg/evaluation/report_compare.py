"""Before against after hardening: one self-contained HTML page, a Markdown twin and a summary.

``advseg report --sweep BEFORE --after AFTER [--transfer SWEEP]`` renders
:func:`~.robustness.compare` of the sweeps' ``rows.json``: the goals (met, missed or unknown,
each with its figure), the smallest in-body p at which a fresh attacker makes every organ lose
30 %, Dice at one fixed in-body p, clean Dice, the random and transfer rows, a plot of damage
against in-body p and both sweeps' commands. Like :mod:`.report`, the page has no script and
embeds its one PNG; it needs no ``figure_slices.npz``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .report import STYLE, png_uri, pyplot, read_sweep, table_cells, versions
from .robustness import MAX_CLEAN_FALL, MIN_RATIO, compare

COMPARE_FILE = "robustness.html"
"""The page's default name, in the AFTER sweep's folder."""
Table = tuple[str, str, list[str], list[list[str]]]
"""A table: heading, class name, header cells, rows of cells."""
SIDES = ("before", "after", "transfer")


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "unknown"}[met]


def _sides(summary: Mapping[str, Any]) -> list[str]:
    return [side for side in SIDES if side in summary]


def goal_table(summary: Mapping[str, Any]) -> Table:
    """The issue's goals, each met, missed or unknown, with the figure it rests on."""
    rows = [[g["goal"], _verdict(g["met"]), g.get("figure", "")] for g in summary["goals"]]
    return ("Goals", "goals", ["Goal", "Result", "Figure"], rows)


def threshold_table(summary: Mapping[str, Any]) -> Table:
    """The headline: the smallest in-body p at which every organ loses 30 %, per side."""
    sides = _sides(summary)
    parts = [summary[s]["threshold"] for s in sides]

    def line(name: str, cells: Sequence[str]) -> list[str]:
        return [name, *cells]

    def meeting(t: Mapping[str, Any]) -> str:
        row = t["smallest_meeting_row"]
        return "none" if row is None else f"{row['label']} ({_num(row['p_hu_body'])} HU)"

    rows = [
        line("every organ (HU, body)", [_threshold_cell(t) for t in parts]),
        *(
            line(f"{organ} (HU, body)", [_organ_cell(t, organ) for t in parts])
            for organ in summary["organs"]
        ),
        line(
            "organs crossing below the smallest tested p (from p = 0)",
            [", ".join(t["below_first_tested"]) or "none" for t in parts],
        ),
        line("smallest tested row meeting the rule", [meeting(t) for t in parts]),
        line(
            "tested in-body p (HU)",
            [f"{_num(t['smallest_p_tested'])} to {_num(t['largest_p_tested'])}" for t in parts],
        ),
        line("curve rows", [str(t["points"]) for t in parts]),
        line("curve split", [summary[s]["curve_split"] for s in sides]),
    ]
    ratio = summary["threshold_ratio"]
    text = _num(ratio["value"], ".2f")
    if ratio["at_least"] is not None:
        text = f"> {ratio['at_least']:.2f}"
    elif ratio["at_most"] is not None:
        text = f"< {ratio['at_most']:.2f}"
    rows.append(line("after / before", ["", text, *[""] * (len(sides) - 2)]))
    title = (
        f"Smallest in-body p at which the attack makes every organ lose "
        f"{summary['rule_percent']:g} %"
    )
    return (title, "threshold", ["", *(s.capitalize() for s in sides)], rows)


def _organ_cell(threshold: Mapping[str, Any], organ: str) -> str:
    if organ in threshold["no_data"]:
        return "no data"
    if organ in threshold["not_reached"]:
        return "not reached"
    return _num(threshold["per_organ"].get(organ))


def _threshold_cell(threshold: Mapping[str, Any]) -> str:
    if threshold["reached"]:
        return _num(threshold["p_hu_body"])
    largest = threshold["largest_p_tested"]
    if largest is None:
        return "not reached (no D+V rows)"
    organs = ", ".join(threshold["not_reached"] or threshold["no_data"])
    return f"not reached up to {largest:.1f} (on {organs})"


def dice_tables(summary: Mapping[str, Any]) -> list[Table]:
    """Clean Dice, and the attacked Dice at the fixed in-body p, per organ and side."""
    sides = _sides(summary)
    organs = summary["organs"]
    change = summary["clean_dice_change"]
    clean = [
        [
            organ,
            *(_num(summary[s]["clean_dice"][organ], ".4f") for s in sides),
            _num(change[organ], "+.4f"),
        ]
        for organ in organs
    ]
    head = ["", *(s.capitalize() for s in sides)]
    tables: list[Table] = [
        (
            f"Clean Dice on the test subjects (goal: falls by at most {MAX_CLEAN_FALL:g})",
            "clean",
            [*head, "after - before"],
            clean,
        )
    ]
    at = summary["at_p_hu"]
    if at is not None:
        values = {s: summary[s]["dice_at_p"] for s in sides}
        rows = [
            [
                organ,
                *(_num(values[s][organ], ".4f") for s in sides),
                _difference(values["before"][organ], values["after"][organ]),
            ]
            for organ in organs
        ]
        title = (
            f"Dice (warped reference) under the D+V attack at in-body p = {at:.1f} HU "
            f"({summary['at_p_hu_source']}; '-': outside the tested p)"
        )
        tables.append((title, "dice-at-p", [*head, "after - before"], rows))
    return tables


def _difference(before: float | None, after: float | None) -> str:
    return "-" if before is None or after is None else f"{after - before:+.4f}"


def row_tables(
    summary: Mapping[str, Any], payloads: Mapping[str, Mapping[str, Any]]
) -> list[Table]:
    """The sweeps' own test rows (Dice %, warped reference), as Table 1 prints them."""
    organs = summary["organs"]
    head = ["", *(o.capitalize() for o in organs), "p", "p (HU, FOV)", "p (HU, body)", "seeds"]
    tables: list[Table] = []
    randoms = []
    for side in _sides(summary):
        for row in payloads[side].get("rows") or []:
            if row.get("mode") == "random":
                randoms.append(
                    table_cells({**row, "label": f"{side}: {row['label']}"}, organs, "dice_warped")
                )
    tables.append(
        (
            "Random smooth perturbations (each at its sweep's headline in-body p)",
            "random",
            head,
            randoms,
        )
    )
    titles = {
        "before": "Before: the original model",
        "after": "After: a fresh attacker against the hardened model",
        "transfer": "Transfer: the original model's attackers against the hardened model",
    }
    for side in _sides(summary):
        cells = [table_cells(r, organs, "dice_warped") for r in payloads[side].get("rows") or []]
        title = f"{titles[side]}: test rows (Dice %, warped reference)"
        tables.append((title, f"rows-{side}", head, cells))
        tables.append(curve_table(summary, side, titles[side]))
    return tables


def curve_table(summary: Mapping[str, Any], side: str, name: str) -> Table:
    """The rows a side's threshold was interpolated between: in-body p and decrease (%)."""
    organs = summary["organs"]
    head = ["", "xi", "p (HU, body)", *(f"{o.capitalize()} decrease (%)" for o in organs)]
    rows = [
        [
            str(row["label"]),
            _num(row["xi"], "g"),
            _num(row["p_hu_body"]),
            *(_num(row["decrease_warped"][o]) for o in organs),
        ]
        for row in summary[side]["curve"]
    ]
    title = f"{name}: the curve's rows ({summary[side]['curve_split']} split), by in-body p"
    return (title, f"curve-{side}", head, rows)


def all_tables(
    summary: Mapping[str, Any], payloads: Mapping[str, Mapping[str, Any]]
) -> list[Table]:
    """Every table of the page, in order."""
    return [
        goal_table(summary),
        threshold_table(summary),
        *dice_tables(summary),
        *row_tables(summary, payloads),
    ]


def curve_figure(summary: Mapping[str, Any]) -> str | None:
    """Decrease and Dice against in-body p, per organ and side, as a PNG ``data:`` URI.

    None when no side has a curve point.
    """
    sides = [s for s in _sides(summary) if summary[s]["curve"]]
    if not sides:
        return None
    plt = pyplot()
    styles = {"before": "o-", "after": "s--", "transfer": "^:"}
    figure, (damage, dice) = plt.subplots(1, 2, figsize=(12, 4))
    colours = plt.get_cmap("tab10").colors
    for index, organ in enumerate(summary["organs"]):
        colour = colours[index % len(colours)]
        for side in sides:
            points = [
                (r["p_hu_body"], r["decrease_warped"][organ], r["dice_warped"][organ])
                for r in summary[side]["curve"]
                if r["decrease_warped"].get(organ) is not None
            ]
            label = f"{organ}, {side}"
            damage.plot(
                [0] + [p for p, _, _ in points],
                [0] + [d for _, d, _ in points],
                styles[side],
                color=colour,
                label=label,
            )
            dice.plot(
                [p for p, _, _ in points],
                [v for _, _, v in points],
                styles[side],
                color=colour,
                label=label,
            )
    damage.axhline(summary["rule_percent"], color="grey", linewidth=0.8)
    for side in sides:
        threshold = summary[side]["threshold"]["p_hu_body"]
        if threshold is not None:
            damage.axvline(threshold, color="black", linestyle=styles[side][1:], linewidth=0.8)
    at = summary["at_p_hu"]
    if at is not None:
        dice.axvline(at, color="grey", linewidth=0.8)
    damage.set_xlabel("in-body p (HU)")
    damage.set_ylabel("Dice decrease (%), warped reference")
    damage.set_title("o-: before, s--: after, ^:: transfer; vertical: thresholds", fontsize=8)
    dice.set_xlabel("in-body p (HU)")
    dice.set_ylabel("Dice, warped reference")
    dice.set_ylim(0, 1)
    dice.legend(fontsize=7, ncol=2)
    return png_uri(figure)


def _html_table(table: Table) -> str:
    _, name, head, rows = table
    lines = [f'<table class="{html.escape(name)}">']
    lines.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _markdown_table(table: Table) -> str:
    _, _, head, rows = table
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _commands(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(side, str(summary[side].get("command") or "")) for side in _sides(summary)]


def render_html(summary: Mapping[str, Any], payloads: Mapping[str, Mapping[str, Any]]) -> str:
    """The comparison page: every table, the curve plot, the commands and the versions."""
    title = (
        f"Robustness of {summary['after'].get('seg') or 'the hardened model'} against "
        f"{summary['before'].get('seg') or 'the original model'}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>napari-advseg: {html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(_method(summary))}</p>",
    ]
    for warning in summary["warnings"]:
        parts.append(f"<p><strong>Note:</strong> {html.escape(warning)}</p>")
    for table in all_tables(summary, payloads):
        parts += [f"<h2>{html.escape(table[0])}</h2>", _html_table(table)]
    figure = curve_figure(summary)
    if figure is not None:
        parts += [
            "<h2>Damage and Dice against in-body p</h2>",
            f'<img alt="decrease and Dice against in-body p" src="{figure}">',
        ]
    parts.append("<h2>How it was made</h2>")
    for side, command in _commands(summary):
        parts.append(f"<p>{side.capitalize()}: <code>{html.escape(command or '-')}</code></p>")
    parts.append(
        "<p>Versions: "
        + ", ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in versions().items())
        + "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def _method(summary: Mapping[str, Any]) -> str:
    splits = ", ".join(f"{s}: {summary[s]['curve_split']}" for s in _sides(summary))
    return (
        f"The threshold is the smallest in-body p (HU) at which every organ's Dice falls by "
        f"{summary['rule_percent']:g} %, interpolated linearly between the D+V rows sorted by "
        f"in-body p (from 0 % at p = 0); the goal is a ratio after / before of at least "
        f"{MIN_RATIO:g}. Curve rows from the split: {splits}."
    )


def render_markdown(summary: Mapping[str, Any], payloads: Mapping[str, Mapping[str, Any]]) -> str:
    """The page's tables and commands as Markdown."""
    lines = ["# Robustness: before and after hardening", "", _method(summary), ""]
    lines += [f"Note: {w}" for w in summary["warnings"]]
    for table in all_tables(summary, payloads):
        lines += ["", f"## {table[0]}", "", _markdown_table(table)]
    lines += ["", "## How it was made", ""]
    lines += [f"- {side}: `{command or '-'}`" for side, command in _commands(summary)]
    return "\n".join(lines) + "\n"


def plain_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for the terminal: thresholds, Dice at p, clean Dice, goals."""
    organs = summary["organs"]
    before, after = summary["before"], summary["after"]
    lines = [
        f"threshold, in-body p (HU) at which every organ loses {summary['rule_percent']:g} %: "
        f"before {_threshold_cell(before['threshold'])} ({before['curve_split']} split), "
        f"after {_threshold_cell(after['threshold'])} ({after['curve_split']} split)"
    ]
    if summary["at_p_hu"] is not None:
        pairs = [
            f"{o} {_num(before['dice_at_p'][o], '.3f')} -> {_num(after['dice_at_p'][o], '.3f')}"
            for o in organs
        ]
        lines.append(f"Dice at in-body p = {summary['at_p_hu']:.1f} HU: " + ", ".join(pairs))
    pairs = [
        f"{o} {_num(before['clean_dice'][o], '.3f')} -> {_num(after['clean_dice'][o], '.3f')}"
        for o in organs
    ]
    lines.append("clean Dice: " + ", ".join(pairs))
    if "transfer" in summary:
        lines.append("transfer threshold: " + _threshold_cell(summary["transfer"]["threshold"]))
    for goal in summary["goals"]:
        lines.append(f"goal '{goal['goal']}': {_verdict(goal['met'])} ({goal.get('figure', '')})")
    lines += [f"note: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def write_comparison(
    before: Path,
    after: Path,
    transfer: Path | None = None,
    at_p_hu: float | None = None,
    out: Path | None = None,
) -> tuple[list[Path], dict[str, Any]]:
    """Compare two sweep folders (and a transfer sweep); write the page and its twins.

    Writes ``out`` (default ``AFTER/robustness.html``), the Markdown tables beside it (``.md``)
    and the summary of :func:`~.robustness.compare` (``.json``). Returns the paths written and
    the summary.
    """
    payloads = {"before": read_sweep(before)[0], "after": read_sweep(after)[0]}
    if transfer is not None:
        payloads["transfer"] = read_sweep(transfer)[0]
    if not payloads["before"].get("organs"):
        payloads["before"] = {**payloads["before"], "organs": read_sweep(before)[1]}
    summary = compare(payloads["before"], payloads["after"], payloads.get("transfer"), at_p_hu)
    target = out or after / COMPARE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(summary, payloads), encoding="utf-8")
    markdown = target.with_suffix(".md")
    markdown.write_text(render_markdown(summary, payloads), encoding="utf-8")
    data = target.with_suffix(".json")
    data.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return [target, markdown, data], summary
