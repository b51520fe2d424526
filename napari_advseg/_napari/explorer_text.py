"""The explorer's metrics table: Dice of S0 and S_DV per organ, the drop, success, p and p_HU."""

from __future__ import annotations

from ..explorer import SliceAttack


def metrics_html(result: SliceAttack) -> str:
    """A small table: Dice of S0 and S_DV per organ, the decrease, success at 30 %, p and p_HU.

    p is mean |I_DV - I0| in f_seg's normalised units on its grid; p_HU the same in Hounsfield
    units over the slice's field of view on the scan's grid (comparable across models whatever
    their normalisation).
    """
    metrics = result.metrics
    decrease = metrics.decrease()
    success = metrics.success()
    rows = []
    for organ, before in metrics.dice_s0.items():
        after = metrics.dice_dv_warped[organ]
        drop = decrease[organ]
        mark = " ✔" if success[organ] else ""
        rows.append(
            f"<tr><td>{organ}</td><td>{_fmt(before)}</td><td>{_fmt(after)}</td>"
            f"<td>{'-' if drop is None else f'{drop:.0f}%'}{mark}</td></tr>"
        )
    return (
        f"<b>Slice {result.index}</b>, reference: {metrics.reference} (S_DV against the "
        "reference moved by D)<table><tr><th>organ</th><th>S0</th><th>S_DV</th><th>drop</th></tr>"
        + "".join(rows)
        + f"</table>p = {metrics.p:.3f} (normalised), p_HU = {metrics.p_hu_fov:.1f} HU"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
