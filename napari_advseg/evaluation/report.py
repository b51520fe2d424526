"""One self-contained HTML report of a sweep: Table 1 with intervals, plots, Fig. 2-like slices.

Everything is embedded (PNG images as ``data:`` URIs, no script, no external file), so the page
opens offline in any browser and can be mailed as it is. It is rendered from what ``sweep``
writes into its folder: ``rows.json`` (the rows, the validation rows and the run's details) and
``figure_slices.npz`` (I0, I_DV, S0, S_DV, D and V of a few test slices under the headline
attack); ``advseg report --sweep DIR`` renders it again from them.
"""

from __future__ import annotations

import base64
import html
import io
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FIGURE_FILE = "figure_slices.npz"
REPORT_FILE = "report.html"
FIGURE_KEYS = ("image", "attacked", "s0", "s_dv", "displacement", "intensity")
"""Arrays of ``figure_slices.npz``: (K, H, W) each, D (K, 2, H, W) in pixels."""


def versions() -> dict[str, str]:
    """The versions a report names: napari-advseg, Python, torch, NumPy."""
    import torch

    from .. import __version__

    return {
        "napari-advseg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def _cell(value: float | None, interval: Sequence[float] | None, fmt: str, scale: float) -> str:
    """A value as the tables print it (``fmt`` of ``scale * value``), and its interval if any."""
    if value is None:
        return "-"
    text = format(scale * value, fmt)
    if interval is not None:
        text += f" [{format(scale * interval[0], fmt)}, {format(scale * interval[1], fmt)}]"
    return text


def table_cells(row: Mapping[str, Any], organs: Sequence[str], key: str) -> list[str]:
    """The cells of one row of Table 1, in HTML and Markdown alike.

    Label, organs' Dice (%), p, p in HU over the FOV and in the body, seeds; a row over several
    seeds shows its 95 % interval (``<key>_ci``) after each value.
    """
    intervals = row.get(f"{key}_ci") or {}
    return [
        str(row["label"]),
        *(_cell(row[key][organ], intervals.get(organ), ".2f", 100) for organ in organs),
        _cell(row.get("p"), row.get("p_ci"), ".3f", 1),
        _cell(row.get("p_hu_fov"), None, ".1f", 1),
        _cell(row.get("p_hu_body"), None, ".1f", 1),
        str(row.get("seeds", "-" if row.get("mode") is None else 1)),
    ]


def html_table(
    rows: Sequence[Mapping[str, Any]], organs: Sequence[str], key: str, name: str
) -> str:
    """Rows as an HTML table of class ``name``, with :func:`table_cells`' columns."""
    head = ["", *(o.capitalize() for o in organs), "p", "p (HU, FOV)", "p (HU, body)", "seeds"]
    lines = [
        f'<table class="{name}">',
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head),
    ]
    for row in rows:
        cells = table_cells(row, organs, key)
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def png_uri(figure: Any) -> str:
    """A Matplotlib figure as a PNG ``data:`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_plots(
    rows: Sequence[Mapping[str, Any]],
    validation_rows: Sequence[Mapping[str, Any]],
    organs: Sequence[str],
) -> str:
    """Dice per organ against xi and against p, as a PNG ``data:`` URI.

    The lines are the D+V rows xi was chosen on (else the test rows); the D-only, V-only and
    random rows are points on the p panel.
    """
    plt = pyplot()
    sweep = [r for r in (validation_rows or rows) if r.get("mode") == "dv" and r.get("xi")]
    sweep = sorted(sweep, key=lambda r: r["xi"])
    others = [r for r in rows if r.get("mode") in ("d", "v", "random")]
    figure, (by_xi, by_p) = plt.subplots(1, 2, figsize=(11, 4))
    for organ in organs:
        values = [r["dice_warped"][organ] for r in sweep]
        (line,) = by_xi.plot([r["xi"] for r in sweep], values, "o-", label=organ)
        by_p.plot([r["p"] for r in sweep], values, "o-", color=line.get_color(), label=organ)
        for row in others:
            marker = {"d": "s", "v": "^", "random": "x"}[row["mode"]]
            by_p.plot(row["p"], row["dice_warped"][organ], marker, color=line.get_color())
    by_xi.set_xlabel("xi")
    by_p.set_xlabel("perceptibility p (normalised units)")
    for axis in (by_xi, by_p):
        axis.set_ylabel("Dice, warped reference")
        axis.set_ylim(0, 1)
    by_xi.legend(fontsize=8)
    by_p.set_title("squares: D only, triangles: V only, crosses: random", fontsize=8)
    return png_uri(figure)


def slice_figure(slices: Mapping[str, np.ndarray], index: int, organs: Sequence[str]) -> str:
    """Fig. 2 of the paper for one slice: I0 with S0, I_DV with S_DV, D as a deformed grid, V."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    image, attacked = slices["image"][index], slices["attacked"][index]
    s0, s_dv = slices["s0"][index], slices["s_dv"][index]
    displacement, intensity = slices["displacement"][index], slices["intensity"][index]
    colours = ListedColormap(plt.get_cmap("tab10").colors[: max(len(organs), 1)])
    figure, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    low, high = np.percentile(image, (1, 99))
    for axis, picture, labels, title in (
        (axes[0], image, s0, "I0 with S0"),
        (axes[1], attacked, s_dv, "I_DV with S_DV"),
    ):
        axis.imshow(picture, cmap="gray", vmin=low, vmax=high)
        axis.imshow(np.ma.masked_equal(labels, 0), cmap=colours, alpha=0.45, vmin=1, vmax=10)
        axis.set_title(title)
    axes[2].imshow(image, cmap="gray", vmin=low, vmax=high)
    rows, cols = image.shape
    step = max(4, min(rows, cols) // 16)
    y, x = np.mgrid[0:rows:step, 0:cols:step].astype(float)
    moved_x = x + displacement[0][::step, ::step]
    moved_y = y + displacement[1][::step, ::step]
    axes[2].plot(moved_x, moved_y, color="yellow", linewidth=0.6)
    axes[2].plot(moved_x.T, moved_y.T, color="yellow", linewidth=0.6)
    axes[2].set_title("D as a deformed grid")
    bound = float(np.abs(intensity).max()) or 1.0
    shown = axes[3].imshow(intensity, cmap="RdBu_r", vmin=-bound, vmax=bound)
    figure.colorbar(shown, ax=axes[3], fraction=0.046)
    axes[3].set_title("V")
    for axis in axes:
        axis.set_axis_off()
    return png_uri(figure)


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #bbb;padding:0.3em 0.6em;text-align:right}"
    "td:first-child{text-align:left}img{max-width:100%}code{background:#eee;padding:0 0.2em}"
)


def render_report(
    payload: Mapping[str, Any],
    organs: Sequence[str],
    slices: Mapping[str, np.ndarray] | None = None,
    command: str = "",
) -> str:
    """The report page for a sweep's ``rows.json`` payload (and its figure slices)."""
    rows = payload.get("rows", [])
    validation = payload.get("validation_rows", [])
    headline = payload.get("headline") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>napari-advseg report: {html.escape(str(payload.get('seg', '')))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Adversarial attacks on {html.escape(str(payload.get('seg', 'the model')))}</h1>",
    ]
    if headline:
        parts.append(
            f"<p>Headline xi = {headline['xi']:g}, chosen by the "
            f"{html.escape(str(headline.get('chosen_by')))}. Reference: "
            f"{html.escape(str(payload.get('reference', '')))}. Dice is 3D per subject, averaged "
            "over subjects; intervals are 95 % bootstrap intervals over subjects (seeds averaged "
            "within each subject).</p>"
        )
    parts += [
        "<h2>Table 1: test subjects, anatomy-consistent (warped) reference</h2>",
        html_table(rows, organs, "dice_warped", "test-warped"),
        "<h2>Table 1: test subjects, original reference (the paper's)</h2>",
        html_table(rows, organs, "dice", "test-original"),
    ]
    if validation:
        parts += [
            "<h2>Choosing xi: validation subjects (one seed each)</h2>",
            html_table(validation, organs, "dice_warped", "validation"),
        ]
    if payload.get("curve_rows"):
        parts += [
            "<h2>Every candidate xi on the test subjects (first seed each)</h2>",
            html_table(payload["curve_rows"], organs, "dice_warped", "test-curve"),
        ]
    if any(r.get("mode") == "dv" for r in [*rows, *validation]):
        parts += [
            "<h2>Dice against xi and against p</h2>",
            f'<img alt="Dice against xi and p" src="{dice_plots(rows, validation, organs)}">',
        ]
    if slices is not None and len(slices.get("image", [])):
        parts.append("<h2>Slices under the headline attack (as the paper's Fig. 2)</h2>")
        for index in range(len(slices["image"])):
            source = slice_figure(slices, index, organs)
            parts.append(f'<img alt="slice {index}" src="{source}">')
    parts.append("<h2>How it was made</h2>")
    if command:
        parts.append(f"<p>Command: <code>{html.escape(command)}</code></p>")
    seconds = payload.get("seconds")
    if seconds is not None:
        parts.append(f"<p>The sweep took {float(seconds) / 60:.1f} min.</p>")
    parts.append(
        "<p>Versions: "
        + ", ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in versions().items())
        + "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def read_sweep(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """A sweep folder's ``rows.json`` payload and its organs.

    Raises
    ------
    InvalidInputError
        If the folder has no ``rows.json`` or it is not a sweep's.
    """
    import json

    from ..errors import InvalidInputError

    rows_file = folder / "rows.json"
    if not rows_file.is_file():
        raise InvalidInputError(f"{folder}: no rows.json; give the --out folder of a sweep.")
    try:
        payload = json.loads(rows_file.read_text(encoding="utf-8"))
        organs = list(payload.get("organs") or payload["rows"][0]["dice"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"{rows_file}: not the rows.json of a sweep ({error}).") from error
    return payload, organs


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Render ``folder``'s ``rows.json`` (and ``figure_slices.npz``) into one HTML file."""
    payload, organs = read_sweep(folder)
    slices = None
    if (folder / FIGURE_FILE).is_file():
        with np.load(folder / FIGURE_FILE, allow_pickle=False) as data:
            slices = {key: data[key] for key in FIGURE_KEYS if key in data}
    target = out or folder / REPORT_FILE
    page = render_report(payload, organs, slices, str(payload.get("command", "")))
    target.write_text(page, encoding="utf-8")
    return target


def figure_slices(
    seg_model: Any, method: Any, volume: Any, count: int = 3
) -> dict[str, np.ndarray]:
    """The ``count`` slices of ``volume`` where f_seg finds the most organ, under ``method``.

    Arrays on f_seg's grid, padding cropped: what :func:`slice_figure` draws.
    """
    import torch

    from ..class_map import class_map
    from ..inference import to_model_grid
    from ..nets.warp import warp

    grid = to_model_grid(volume, seg_model.spec)
    organ = seg_model.organ_pixels(grid.images)
    chosen = sorted(torch.argsort(organ, descending=True)[:count].tolist())
    images = grid.images[chosen].to(seg_model.device)
    with torch.no_grad():
        displacement, intensity = method(images)
        attacked = warp(images, displacement) + intensity
        s0 = class_map(seg_model(images))
        s_dv = class_map(seg_model(attacked))
    crop = grid.crop
    return {
        "image": crop(images)[:, 0].cpu().numpy(),
        "attacked": crop(attacked)[:, 0].cpu().numpy(),
        "s0": crop(s0).cpu().numpy().astype(np.uint8),
        "s_dv": crop(s_dv).cpu().numpy().astype(np.uint8),
        "displacement": crop(displacement).cpu().numpy(),
        "intensity": crop(intensity)[:, 0].cpu().numpy(),
    }
