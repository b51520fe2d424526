"""Copy the sweep's attackers that ship (D+V at xi 1, 2, 3 and at the headline xi; D-only and
V-only at xi 2) into models/, without critic and optimizer states, each with a model card built
from the sweep's rows.

Usage: .venv/bin/python scripts/export_attackers.py runs/sweep
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_advseg.evaluation.sweep import markdown_table
from napari_advseg.training.attacker_io import export_attacker
from napari_advseg.training.checkpoint import read_config

SHIPPED = [("dv", 1.0), ("dv", 2.0), ("dv", 3.0), ("d", 2.0), ("v", 2.0)]
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


def card(name: str, config: dict, rows: list[dict], row: dict, organs: list[str]) -> str:
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
batch {attack["batch_size"]} of {attack["crop_size"]}-pixel square slices from the 60 phantom
training subjects, RMSProp lr {attack["learning_rate"]:g} (decay {attack["rmsprop_alpha"]:g}, eps
{attack["rmsprop_eps"]:g}), lambda_D {attack["lambda_d"]:g}, lambda_V {attack["lambda_v"]:g}, KL
weight {attack["kl_weight"]:g}, eq. 4 {target(attack)}, reference `{attack["reference"]}`,
{diversity(attack)}; {training["seconds"]:.0f} s on {training["device"]} (one of 2 CPU cores:
two attackers trained side by side), torch {training["torch"]}.

## Effect on the phantom test split (75 subjects, posterior-mean latents)

Dice (%) against the ground truth (original reference):

{markdown_table(table_rows, organs, "dice")}

Dice (%) against the ground truth moved by D (anatomy-consistent reference):

{markdown_table(table_rows, organs, "dice_warped")}

Max |D| {row["max_displacement"]:.2f} px, folding {100 * row["folding"]:.3f} % of pixels,
SSIM(I_DV, I0) {row["ssim"]:.3f}.
"""


def main() -> None:
    sweep = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
    data = json.loads((sweep / "rows.json").read_text())
    rows = data["rows"]
    organs = list(rows[0]["dice"])
    shipped = list(SHIPPED)
    headline = data.get("headline")
    if headline and ("dv", headline["xi"]) not in shipped:
        shipped.append(("dv", headline["xi"]))  # the sweep's headline attack ships too
    for mode, xi in shipped:
        source = sweep / "attackers" / f"{mode}_xi{xi:g}"
        name = f"attacker_{mode}_xi{xi:g}"
        destination = Path("models") / name
        export_attacker(source, destination)
        row = next(r for r in rows if r["label"] == f"{SYMBOL[mode]} (xi = {xi:g})")
        config = read_config(destination)
        (destination / "MODEL_CARD.md").write_text(card(name, config, rows, row, organs))
        print(f"wrote {destination}")


if __name__ == "__main__":
    main()
