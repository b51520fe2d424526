"""``advseg harden``: fine-tune a segmentation model against its own attacker (the min-max game)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._cli_common import (
    DOMAIN_AUGMENT_HELP,
    MAX_BATCH,
    MAX_PATCH,
    MAX_STEPS,
    add_data_arguments,
    add_model_argument,
    add_workers_argument,
    check_data_files,
    check_training_out,
    dataset_split,
    eval_volumes,
    fmt,
    load_model,
    with_progress,
)
from .cli_attack import add_attack_settings, training_settings
from .errors import InvalidInputError
from .validation import arg_float, arg_int

REAL_CASE = "abdomen_ct_ts"


def add_harden_command(commands: Any) -> None:
    """Register ``harden`` on the ``advseg`` subparsers."""
    harden = commands.add_parser(
        "harden",
        help="fine-tune a segmentation model against its own attacker (adversarial training)",
        description=(
            "Fine-tune --model on a mix of clean patches and attacked ones (I_DV, labels moved "
            "by D) while the attacker keeps training against the current model: one attacker "
            "step (critic and generator) before every --attacker-every model steps. Labels are "
            "needed. Writes the hardened model to OUT (a U-Net checkpoint, or a fine-tuned copy "
            "of your network that loads from its original file), with OUT/attacker (the "
            "attacker it was hardened against), OUT/last (for --resume; Ctrl-C stops and saves) "
            "and OUT/MODEL_CARD.md. Measure robustness with a fresh attacker: `advseg sweep "
            "--model OUT ...`, then `advseg report --sweep BEFORE --after AFTER`."
        ),
    )
    harden.add_argument("--out", type=Path, required=True, help="hardened model folder to write")
    add_model_argument(harden)
    group = harden.add_argument_group("hardening schedule")
    group.add_argument(
        "--steps", type=arg_int(1, MAX_STEPS), default=2000, help="model updates (default 2000)"
    )
    group.add_argument(
        "--batch-size", type=arg_int(1, MAX_BATCH), default=16, help="patches per model update"
    )
    group.add_argument(
        "--patch-size",
        type=arg_int(16, MAX_PATCH),
        default=128,
        help="square patch (and attacker crop), pixels: a multiple of both strides (default 128)",
    )
    group.add_argument(
        "--attacked-fraction",
        type=arg_float(0, 1),
        default=0.5,
        help="share of each model batch replaced by attacked patches (default 0.5; 0: clean "
        "fine-tuning with no attacker, the control of a hardening)",
    )
    group.add_argument(
        "--attacker-every",
        type=arg_int(1, MAX_STEPS),
        default=1,
        help="one attacker step before every N-th model step (default 1)",
    )
    group.add_argument(
        "--warmup-steps",
        type=arg_int(0, MAX_STEPS),
        default=0,
        help="attacker-only steps before the model's first update (default 0; use about 100 "
        "without --init-attacker)",
    )
    group.add_argument(
        "--seg-lr",
        type=arg_float(0, 1, low_open=True),
        default=1e-4,
        help="Adam learning rate of the model (default 1e-4, constant)",
    )
    group.add_argument(
        "--attack-batch-size",
        type=arg_int(1, MAX_BATCH),
        default=8,
        help="crops per attacker update (default 8)",
    )
    group.add_argument("--dice-weight", type=arg_float(0, 1e6), default=0.0)
    group.add_argument(
        "--real-weight",
        type=arg_float(0, 1e6, low_open=True),
        default=10.0,
        help="sampling weight of the real case's slices relative to one phantom subject",
    )
    group.add_argument("--no-augment", action="store_true", help="turn off augmentation")
    group.add_argument(
        "--domain-augment",
        action="store_true",
        help=DOMAIN_AUGMENT_HELP,
    )
    group.add_argument(
        "--checkpoint-every", type=arg_int(1, MAX_STEPS), default=200, help="steps between saves"
    )
    group.add_argument(
        "--init-attacker",
        type=Path,
        default=None,
        metavar="DIR",
        help="start the attacker from this checkpoint (the one that broke the model); "
        "default: random weights",
    )
    add_workers_argument(harden)
    add_attack_settings(harden, with_schedule=False)
    add_data_arguments(harden, default_sample=None)
    harden.add_argument("--resume", action="store_true", help="continue from OUT/last")
    harden.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoint in OUT; a MODEL_CARD.md you wrote there is kept",
    )
    harden.set_defaults(handler=harden_command)


def _volumes(args: argparse.Namespace, seg: Any) -> tuple[list[Any], list[Any]]:
    """Labelled training volumes, and validation volumes where the data has a split for them."""
    if not args.sample and not args.images and args.dataset is None:
        args.sample = ["phantom"]
    train = list(eval_volumes(args, default_split="train", label_map=seg.spec.label_map))
    if args.dataset is not None:
        from .data.dataset_folder import dataset_volumes

        folder, cases = dataset_split(args, "val")
        val = list(dataset_volumes(folder, cases, seg.spec.label_map, args.label_map))
    elif args.sample and "phantom" in args.sample and args.split in (None, "train"):
        from .data.samples import PhantomCohort

        val = PhantomCohort(args.subjects, args.cohort_seed).volumes("val")
    else:
        val = []
    return train, val


def harden_command(args: argparse.Namespace) -> None:
    """``advseg harden``; see :func:`add_harden_command`."""
    from .nets.attacker import AttackerConfig
    from .nets.critic import CriticConfig
    from .training.events import AttackProgress, TrainingFinished, ValidationCompleted
    from .training.harden_trainer import HardenConfig, HardenTrainer

    check_training_out(args.out, args.resume, args.overwrite, args.out / "last")
    if args.init_attacker is not None and args.resume:
        raise InvalidInputError(
            "Give --init-attacker to start a new run, or --resume to continue one."
        )
    if args.images or args.dataset is not None:
        check_data_files(args, "train", require_labels=True)
    config = HardenConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        attacked_fraction=args.attacked_fraction,
        attacker_every=args.attacker_every,
        warmup_steps=args.warmup_steps,
        learning_rate=args.seg_lr,
        dice_weight=args.dice_weight,
        augment=not args.no_augment,
        domain_augment=args.domain_augment,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
    )
    attack = training_settings(
        args,
        args.xi,
        steps=max(1, config.attacker_steps()),
        batch_size=args.attack_batch_size,
        crop_size=args.patch_size,
    )
    seg = load_model(args)
    train, val = _volumes(args, seg)
    weights = [args.real_weight if v.name.startswith(REAL_CASE) else 1.0 for v in train]
    trainer = HardenTrainer(
        args.out,
        seg,
        train,
        val,
        config,
        attack,
        AttackerConfig(args.latent_d, args.latent_v, mode=args.mode),
        CriticConfig(norm=args.critic_norm) if args.critic_norm else None,
        init_attacker=args.init_attacker,
        train_weights=weights,
        resume=args.resume,
        overwrite=args.overwrite,
        provenance={"command": args.command_line, "data": [v.name for v in train]},
    )
    print(
        f"hardening {seg.name} at xi={args.xi:g} on {len(train)} volumes, validating on "
        f"{len(val)}; Ctrl-C stops and saves"
    )
    for event in with_progress(trainer, f"harden xi={args.xi:g}"):
        if isinstance(event, ValidationCompleted):
            dice = ", ".join(f"{k} {fmt(v)}" for k, v in event.dice.items())
            print(f"step {event.step}: clean validation Dice {dice}")
        elif isinstance(event, AttackProgress):
            drops = ", ".join(f"{k} {v:.0f}%" for k, v in event.dice_drop.items() if v is not None)
            print(f"step {event.step}: the attacker's Dice drop {drops}; p {event.p:.3f}")
        elif isinstance(event, TrainingFinished):
            state = "stopped" if event.stopped else "finished"
            if event.reason:
                print(f"advseg: {event.reason}")
            print(f"{state} at step {event.step}: hardened model {args.out}")
