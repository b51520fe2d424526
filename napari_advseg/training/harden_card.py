"""The model card of a hardened model: how it was made, and how to measure its robustness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CARD_NAME = "MODEL_CARD.md"
CARD_MARK = "<!-- written by advseg harden -->"
"""First line of a card that ``advseg harden`` wrote (only such a card is ever replaced)."""


def _dice_line(dice: Mapping[str, float | None] | None) -> str:
    if not dice:
        return "not measured (no validation volumes)"
    return ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in dice.items())


def _subjects(names: Sequence[str], shown: int = 8) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def hardening_card(record: Mapping[str, Any]) -> str:
    """A model card in Markdown that says how a hardened model was made."""
    harden, attack = record["harden"], record["attack"]
    base = record["base_model"]
    init = record.get("init_attacker")
    if harden["attacked_fraction"] == 0:
        return _control_card(record)
    augmentation = _augmentation(harden)
    lines = [
        CARD_MARK,
        f"# Hardened {base['name']}",
        "",
        f"Fine-tuned by `advseg harden` from **{base['name']}** ({base.get('kind')}, weights "
        f"sha256 `{str(base.get('weights_sha256'))[:12]}`) against its attacker: each f_seg "
        f"batch of {harden['batch_size']} patches of {harden['patch_size']} px held "
        f"{harden['attacked_fraction']:.0%} attacked slices (labels moved by D), while the "
        f"attacker kept training against the current model (one attacker step every "
        f"{harden['attacker_every']} f_seg step(s), after {harden['warmup_steps']} warm-up "
        f"steps); {augmentation}.",
        "",
        f"- Command: `{record.get('command', '-')}`",
        f"- Steps: {record['step']} of {harden['warmup_steps'] + harden['steps']} "
        f"({record['attacker_steps']} attacker steps), Adam lr {harden['learning_rate']:g}; "
        f"{record.get('seconds', 0) / 60:.1f} min on {record.get('device')}",
        f"- Attacker: xi {attack['xi']:g}, eq. 5 {attack['eq5']}, lambda_D {attack['lambda_d']:g}, "
        f"lambda_V {attack['lambda_v']:g}, RMSProp lr {attack['learning_rate']:g}, "
        f"{attack['critic_steps']} critic steps, gradient penalty {attack['gradient_penalty']:g}; "
        + (
            f"started from `{init['from']}` (trained against {init.get('trained_against')})"
            if init
            else "started from random weights"
        ),
        f"- Trained on: {_subjects(record['train_subjects'])}",
        f"- Clean validation Dice before: {_dice_line(record.get('clean_dice_before'))}",
        f"- Clean validation Dice after: {_dice_line(record.get('clean_dice'))}",
        "",
        "The attacker in `attacker/` is the one it was hardened against; it says nothing about "
        "robustness. Measure that with a fresh attacker trained against this model with the "
        "settings that broke the original (`advseg sweep --model THIS ...`), and compare with "
        "`advseg report --sweep BEFORE --after AFTER`.",
        "",
    ]
    return "\n".join(lines)


def _augmentation(harden: Mapping[str, Any]) -> str:
    if not harden.get("augment", True):
        return "no augmentation"
    if harden.get("domain_augment"):
        return "standard and domain augmentation (resolution, noise, contrast phase, field of view)"
    return "standard augmentation"


def _control_card(record: Mapping[str, Any]) -> str:
    """The card of a clean fine-tuning run (attacked fraction 0): the control of a hardening."""
    harden, base = record["harden"], record["base_model"]
    lines = [
        CARD_MARK,
        f"# {base['name']}, fine-tuned on clean slices (control)",
        "",
        f"Fine-tuned by `advseg harden --attacked-fraction 0` from **{base['name']}** "
        f"({base.get('kind')}, weights sha256 `{str(base.get('weights_sha256'))[:12]}`) on clean "
        f"batches of {harden['batch_size']} patches of {harden['patch_size']} px, with "
        f"{_augmentation(harden)} and no attacker: the control that tells a hardening's effect "
        "from that of the extra steps.",
        "",
        f"- Command: `{record.get('command', '-')}`",
        f"- Steps: {record['step']} of {harden['steps']}, Adam lr {harden['learning_rate']:g}; "
        f"{record.get('seconds', 0) / 60:.1f} min on {record.get('device')}",
        f"- Trained on: {_subjects(record['train_subjects'])}",
        f"- Clean validation Dice before: {_dice_line(record.get('clean_dice_before'))}",
        f"- Clean validation Dice after: {_dice_line(record.get('clean_dice'))}",
        "",
    ]
    return "\n".join(lines)
