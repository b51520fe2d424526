"""Write the model cards of the general U-Nets and their attackers from their evaluations.

Usage: .venv/bin/python scripts/write_general_cards.py runs/general
(the last step of scripts/build_general_models.sh; reads OUT/*.json and OUT/attack_real_*/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = {
    "unet_general": "the phantom only: the real case is out of sample",
    "unet_general_real": "the phantom and the real case's slices 0-17 and 34-45 (sampled 10 "
    "times as often as one phantom subject): only its held-out slices 20-31 are out of sample",
}
ORGANS = ("pancreas", "kidneys", "liver", "spleen")
DEFAULT_BLOCK = (0.103, 0.884, 0.908, 0.901)
DEFAULT_PHANTOM = (0.813, 0.942, 0.968, 0.926)
"""unet_default on the real case's held-out block and on the phantom test split (README, The
shipped U-Net); it trained on the rest of the real case."""


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def where(training: dict) -> str:
    """The device a run trained on, as a card says it."""
    device = training.get("device")
    place = "2 CPU cores" if device == "cpu" else str(device)
    return f"{place} (torch {training.get('torch')})"


def cells(result: dict) -> str:
    """Dice per organ, with its slice-bootstrap interval where the result has one."""
    intervals = result.get("dice_ci") or {}
    out = []
    for organ in ORGANS:
        value, interval = result["dice"].get(organ), intervals.get(organ)
        text = "-" if value is None else f"{value:.3f}"
        if value is not None and interval:
            text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        out.append(text)
    return " | ".join(out)


def attack_line(rows: dict) -> str:
    """The attacker's Dice decrease and in-body p on the real case, with the random baseline."""
    attack = next(r for r in rows["rows"] if r["label"].startswith("I_DV"))
    random = next(r for r in rows["rows"] if r["label"].startswith("random"))

    def decrease(row: dict) -> str:
        return " / ".join(
            "-" if row["decrease_warped"][o] is None else f"{row['decrease_warped'][o]:.1f}"
            for o in ORGANS
        )

    return (
        "on the whole real case it decreases Dice (against the reference moved by D) by "
        f"{decrease(attack)} % (pancreas / kidneys / liver / spleen) at an in-body p of "
        f"{attack['p_hu_body']:.1f} HU, where random smooth D and V of the same in-body p "
        f"decrease it by {decrease(random)} %"
    )


def model_card(out: Path, name: str) -> str:
    config = load(out / name / "config.json")
    training = config["training"]
    phantom = load(out / f"{name}_phantom_test.json")
    real = load(out / f"{name}_real.json")
    block = load(out / f"{name}_real_test.json")
    other = "unet_general_real" if name == "unet_general" else "unet_general"
    other_real = load(out / f"{other}_real.json") if (out / f"{other}_real.json").exists() else None
    other_block = (
        load(out / f"{other}_real_test.json")
        if (out / f"{other}_real_test.json").exists()
        else None
    )
    in_sample = name == "unet_general_real"
    real_label = (
        "real case, all 46 slices (**in sample** outside slices 20-31)"
        if in_sample
        else "real case, all 46 slices (**never seen**)"
    )
    rows = [
        f"| phantom test split, 75 subjects (never seen) | {cells(phantom)} |",
        f"| {real_label} | {cells(real)} |",
        f"| real case, held-out slices 20-31 (never seen) | {cells(block)} |",
    ]
    if other_real and other_block:
        other_label = "in sample outside 20-31" if not in_sample else "never seen"
        rows += [
            f"| `{other}`: real case, all 46 slices ({other_label}) | {cells(other_real)} |",
            f"| `{other}`: held-out slices 20-31 | {cells(other_block)} |",
        ]
    rows.append(
        "| `unet_default`: phantom test split | "
        + " | ".join(f"{v:.3f}" for v in DEFAULT_PHANTOM)
        + " |"
    )
    rows.append(
        "| `unet_default`: held-out slices 20-31 | "
        + " | ".join(f"{v:.3f}" for v in DEFAULT_BLOCK)
        + " |"
    )
    attacker = f"attacker_dv_xi2_{name}"
    steps = training["settings"]["epochs"] * training["settings"]["steps_per_epoch"]
    attack_rows = load(out / f"attack_real_{name}" / "rows.json")
    attack_steps = load(out / attacker / "config.json")["training"]["step"]
    return f"""# {name}: a U-Net for scans unlike its training data

The architecture and input of `unet_default` (2D U-Net, 4 levels, 16 feature maps at the top,
482,517 parameters; axial slices at 3 mm, per-subject z-score of HU clipped to [-1000, 1000];
labels 1 pancreas, 2 kidneys, 3 liver, 4 spleen), trained with **domain augmentation**
(`--domain-augment`): on top of the standard moves and intensity jitter, coarser resolution
(down to half, on half the patches), more noise, a contrast phase (each organ's intensity
shifted on its own, about ±65 HU), and another field of view (zoom 0.75-1.33, shift ±15 %, a
border band cut off, global gain and offset). It trained on {MODELS[name]}.

Why: the out-of-domain experiment (README, *Out of domain*; `docs/ood_phantom_to_real.md`)
found that, of plain training, standard augmentation, domain augmentation and hardening, domain
augmentation carried furthest from the phantom to the real case, and hardening did not help.

## How it was made

```bash
{training["command"]}
```

(`bash scripts/build_general_models.sh` builds both general U-Nets, evaluates them, trains their
attackers and writes these cards.) {steps:,} steps took {training["seconds"] / 60:.1f} minutes
on {where(training)}; validation on the
phantom's 15 validation subjects after each epoch, best epoch kept.

## Dice per organ

3D Dice per subject, mean over subjects (`advseg eval-seg`); on the real case, 95 % intervals
from 2000 draws of a bootstrap over its axial slices (`--bootstrap 2000`; neighbouring slices
are alike, so they say how a figure depends on the slices, not how it would vary over
patients). The real case's reference is TotalSegmentator's pseudo-labels
(github.com/wasserth/TotalSegmentator, Apache-2.0), not manual annotations.

| data | pancreas | kidneys | liver | spleen |
|---|---|---|---|---|
{chr(10).join(rows)}

On an unseen real contrast-enhanced CT (512x512 at 0.98 mm, not available here) `unet_default`
was reported to reach liver 0.81, spleen 0.57, pancreas 0.06; this model has not been measured
there.

## Its attacker

`models/{attacker}`: D+V at xi = 2 with Table 1's settings (WGAN-GP 10, one xi target per
organ, diversity weight 0.3), {attack_steps} steps against this model on its own training data;
{attack_line(attack_rows)} (`advseg sweep --model models/{name} --sample real --attackers
models/{attacker} --headline-xi 2`, one seed).

## Limits

Trained on procedural phantoms{" and a single real scan" if in_sample else ""}: a research
model, not a clinical one. The pancreas is the weakest organ on real CT. It expects abdominal CT.
"""


def attacker_card(out: Path, name: str) -> str:
    attacker = f"attacker_dv_xi2_{name}"
    config = load(out / attacker / "config.json")
    training = config["training"]
    rows = load(out / f"attack_real_{name}" / "rows.json")
    return f"""# {attacker}

The D+V attacker trained against `models/{name}` (its config names that model's weights,
SHA-256 `{config["target"]["weights_sha256"][:12]}...`, as its target, so the explorer offers
it for that model without a warning): xi = {config["attack"]["xi"]:g}, latents z_D of
{config["attacker"]["latent_dim_d"]} and z_V of {config["attacker"]["latent_dim_v"]} dimensions.

## How it was made

```bash
{training["command"]}
```

Table 1's attack settings (RMSProp lr 1e-4, lambda_D 0.1, lambda_V 0.01, 5 critic steps with
WGAN-GP weight 10, one xi target per organ, diversity weight 0.3), {training["step"]} generator
steps in {training["seconds"] / 60:.1f} minutes on {where(training)},
on the data its model trained on; exported without its critic and optimizer states.

## What it does

{attack_line(rows)[0].upper() + attack_line(rows)[1:]} (one seed; `advseg sweep --model
models/{name} --sample real --attackers models/{attacker} --headline-xi 2`).
"""


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/general")
    for name in MODELS:
        if not (out / name / "config.json").exists():
            print(f"{out / name} is missing: skipped")
            continue
        (Path("models") / name / "MODEL_CARD.md").write_text(model_card(out, name))
        (Path("models") / f"attacker_dv_xi2_{name}" / "MODEL_CARD.md").write_text(
            attacker_card(out, name)
        )
        print(f"wrote the cards of {name} and attacker_dv_xi2_{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
