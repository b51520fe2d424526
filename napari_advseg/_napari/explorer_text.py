"""The explorer's metrics table: Dice of S0 and S_DV per organ, the drop, success and p."""

from __future__ import annotations

from ..explorer import SliceAttack


def metrics_html(result: SliceAttack) -> str:
    """A small table: Dice of S0 and S_DV per organ, the decrease, success at 30 %, and p."""
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
        + f"</table>p = {metrics.p:.3f}"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
