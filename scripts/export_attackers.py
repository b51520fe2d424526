"""Copy the sweep's attackers that ship into models/, without critic and optimizer states, each
with a model card built from the sweep's rows, and name the headline one the app's default.

Shipped: seed 0 of the headline xi's D+V, D-only and V-only rows (test split), and the D+V
attackers of the other xi the headline was chosen among (validation split).

Usage: .venv/bin/python scripts/export_attackers.py runs/sweep
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_advseg.evaluation.sweep import markdown_table
from napari_advseg.training.attacker_io import export_attacker
from napari_advseg.training.checkpoint import read_config

SYMBOL = {"dv": "I_DV", "d": "I_D", "v": "I_V"}


def critic(attack: dict) -> str:
    if attack["gradient_penalty"] > 0:
        return f"WGAN-GP, penalty weight {attack['gradient_penalty']:g}"
    return f"weight clipping at {attack['clip']:g}"


def target(attack: dict) -> str:
    return "with one xi target per organ" if attack["per_organ"] else "on the mask of all organs"


def diversity(attack: dict) -> str:
    if not attack.get("diversity_weight"):
        return "no diversity term"
    return (
        f"diversity term weight {attack['diversity_weight']:g} (saturating at "
        f"{attack['diversity_cap_d']:g} px of D and {attack['diversity_cap_v']:g} of V per unit z)"
    )


def training_data(names: list[str]) -> str:
    """The scans and slices an attacker trained on, from its config's data list."""
    phantoms = [n for n in names if n.startswith("phantom_")]
    others = [n for n in names if not n.startswith("phantom_")]
    parts = [f"{len(phantoms)} phantom training subjects"] if phantoms else []
    if others:
        parts.append("the real case's slices " + ", ".join(f"`{n}`" for n in others))
    return " and ".join(parts) + " (never the real case's held-out block, slices 20-31)"


def card(
    name: str, config: dict, rows: list[dict], row: dict, organs: list[str], split: str
) -> str:
    training = config["training"]
    attack = config["attack"]
    arch = config["attacker"]
    table_rows = [rows[0], rows[1], row]
    return f"""# {name}

An attacker (generator of Chen et al. 2019) for the shipped U-Net `unet_default`
(weights SHA-256 `{config["target"]["weights_sha256"]}`):
mode `{arch["mode"]}`, xi = {attack["xi"]:g}, latents z_D of {arch["latent_dim_d"]}
and z_V of {arch["latent_dim_v"]} dimensions.

## How it was made

Trained by the Table 1 sweep (`scripts/build_attackers.sh`):

```bash
{training["command"]}
```

{training["step"]} generator steps ({attack["critic_steps"]} critic steps each, {critic(attack)}),
batch {attack["batch_size"]} of {attack["crop_size"]}-pixel square slices from
{training_data(training["data"])}, RMSProp lr {attack["learning_rate"]:g}
(decay {attack["rmsprop_alpha"]:g}, eps {attack["rmsprop_eps"]:g}), lambda_D {attack["lambda_d"]:g},
lambda_V {attack["lambda_v"]:g}, KL
weight {attack["kl_weight"]:g}, eq. 4 {target(attack)}, reference
`{attack["reference"]}`, eq. 5 form `{attack.get("eq5", "soft")}`,
{diversity(attack)}; {training["seconds"]:.0f} s on {training["device"]} (one of 2 CPU cores:
two attackers trained side by side), torch {training["torch"]}.

## Effect on the phantom {split} split (posterior-mean latents)

Dice (%) against the ground truth (original reference):

{markdown_table(table_rows, organs, "dice")}

Dice (%) against the ground truth moved by D (anatomy-consistent reference):

{markdown_table(table_rows, organs, "dice_warped")}

Max |D| {row["max_displacement"]:.2f} px, folding {100 * row["folding"]:.3f} % of pixels,
SSIM(I_DV, I0) {row["ssim"]:.3f}.
"""


def rule(headline: dict) -> str:
    """How the headline rule chose the xi: met, or the fallback when no xi met it."""
    meets = headline.get("meets_30_percent_at_p_0.1")
    if meets is None:
        return "given, not chosen on these rows"
    if meets:
        return "the smallest xi meeting the 30 % rule on every organ at p <= 0.1"
    return (
        "no xi met the 30 % rule on every organ at p <= 0.1, so the rule fell back to the xi "
        "nearest 2"
    )


def real_test_section(sweep: Path, label: str, organs: list[str]) -> str:
    """The attacker's row on the real case's held-out block, when the sweep evaluated it there."""
    path = sweep / "real_test" / "rows.json"
    if not path.is_file():
        return ""
    rows = json.loads(path.read_text())["rows"]
    row = next((r for r in rows if r["label"] == label), None)
    if row is None:
        return ""
    return f"""
## Effect on the real case's held-out block (slices 20-31, seen by no model)

Dice (%) against the ground truth moved by D:

{markdown_table([rows[0], rows[1], row], organs, "dice_warped")}
"""


def main() -> None:
    sweep = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
    data = json.loads((sweep / "rows.json").read_text())
    rows, validation = data["rows"], data.get("validation_rows", [])
    organs = list(rows[0]["dice"])
    headline = data["headline"]
    xi = headline["xi"]
    # the headline's D+V, D-only and V-only attacks (seed 0 of each test row), and the D+V
    # attacks of the other xi the headline was chosen among (their validation rows)
    shipped = [(mode, xi, rows) for mode in ("dv", "d", "v")]
    shipped += [
        ("dv", row["xi"], validation)
        for row in validation
        if row["mode"] == "dv" and row["xi"] != xi
    ]
    for mode, value, table in shipped:
        source = sweep / "attackers" / f"{mode}_xi{value:g}_seed0"
        if not source.is_dir():
            print(f"no {source}: not shipped")
            continue
        name = f"attacker_{mode}_xi{value:g}"
        destination = Path("models") / name
        export_attacker(source, destination)
        row = next(r for r in table if r["label"] == f"{SYMBOL[mode]} (xi = {value:g})")
        config = read_config(destination)
        split = "test" if table is rows else "validation"
        text = card(name, config, table, row, organs, split)
        text += (
            f"\nThe rows above are the {split} split's. The headline xi = {xi:g} was chosen by "
            f"the {headline['chosen_by']}: {rule(headline)}; this attacker is seed 0 of its "
            "row.\n"
        )
        text += real_test_section(sweep, row["label"], organs)
        (destination / "MODEL_CARD.md").write_text(text)
        print(f"wrote {destination}")
    default = {"attacker": f"attacker_dv_xi{xi:g}", "chosen_by": f"the {headline['chosen_by']}"}
    (Path("models") / "default_attacker.json").write_text(json.dumps(default, indent=2) + "\n")
    print(f"the app's default attacker: {default['attacker']}")


if __name__ == "__main__":
    main()
