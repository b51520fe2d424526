"""The explorer's metrics table: Dice of S0 and S_DV per organ, the drop, success, p and p_HU."""

from __future__ import annotations

from ..explorer import SliceAttack, SliceMetrics


def metrics_html(result: SliceAttack, model: str = "f_seg") -> str:
    """A small table: Dice of S0 and S_DV per organ, the decrease, success at 30 %, p and p_HU.

    p is mean |I_DV - I0| in f_seg's normalised units on its grid; p_HU the same in Hounsfield
    units over the slice's field of view on the scan's grid (comparable across models whatever
    their normalisation). With a second model (``result.compare``), each organ has two rows,
    ``model``'s then the second model's, each scored on its own grid, and p is given for both.
    """
    metrics, compare = result.metrics, result.compare
    rows = []
    for organ in metrics.dice_s0:
        if compare is None:
            rows.append(f"<tr><td>{organ}</td>{_cells(metrics, organ)}</tr>")
            continue
        rows.append(f"<tr><td>{organ}</td><td>{model}</td>{_cells(metrics, organ)}</tr>")
        rows.append(f"<tr><td></td><td>{compare.name}</td>{_cells(compare.metrics, organ)}</tr>")
    header = "<th>organ</th>" + ("" if compare is None else "<th>model</th>")
    reference = metrics.reference
    p = f"p = {metrics.p:.3f} (normalised)"
    if compare is not None:
        reference = "each model's S0" if reference == "S0" else reference
        p = f"p = {metrics.p:.3f} ({model}), {compare.metrics.p:.3f} ({compare.name}) normalised"
    return (
        f"<b>Slice {result.index}</b>, reference: {reference} (S_DV against the reference moved "
        f"by D)<table><tr>{header}<th>S0</th><th>S_DV</th><th>drop</th></tr>"
        + "".join(rows)
        + f"</table>{p}, p_HU = {metrics.p_hu_fov:.1f} HU"
    )


def _cells(metrics: SliceMetrics, organ: str) -> str:
    """One model's cells for ``organ``: Dice of S0 and S_DV, the drop and its success mark."""
    drop = metrics.decrease().get(organ)
    mark = " ✔" if metrics.success().get(organ) else ""
    return (
        f"<td>{_fmt(metrics.dice_s0.get(organ))}</td>"
        f"<td>{_fmt(metrics.dice_dv_warped.get(organ))}</td>"
        f"<td>{'-' if drop is None else f'{drop:.0f}%'}{mark}</td>"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
