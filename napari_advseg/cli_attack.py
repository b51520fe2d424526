"""The attack subcommands of ``advseg``: train-attack and generate (sweep: :mod:`.cli_sweep`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ._cli_common import (
    MAX_BATCH,
    MAX_CRITIC_STEPS,
    MAX_LATENT,
    MAX_PATCH,
    MAX_SAMPLES,
    MAX_STEPS,
    SEED,
    add_data_arguments,
    add_force_argument,
    add_model_argument,
    add_speed_arguments,
    check_attacker_target,
    check_data_files,
    check_training_out,
    eval_volumes,
    load_model,
    with_progress,
)
from ._resources import default_attacker_name
from .errors import InvalidInputError
from .validation import (
    arg_float,
    arg_int,
    check_disk,
    check_output_dir,
)

DEFAULT_ATTACKER = default_attacker_name()
MAX_XI = 100.0
MAX_WEIGHT = 1e6
MAX_TEMPERATURE = 100.0


def add_attack_commands(commands: Any) -> None:
    """Register train-attack and generate on the ``advseg`` subparsers (sweep: cli_sweep)."""
    train = commands.add_parser(
        "train-attack",
        help="train an attacker (generator + critic) against a segmentation model",
        description=(
            "Train the generator of Chen et al. 2019 against a frozen segmentation model: "
            "D and V from two latents, a WGAN critic, (xi - masked cross-entropy)^2, L2 "
            "penalties, RMSProp. Data: by default the phantom cohort's training split; labels "
            "are not needed. Writes a checkpoint folder (Ctrl-C stops and saves; --resume)."
        ),
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    add_model_argument(train)
    add_attack_settings(train)
    add_data_arguments(train, default_sample=None)
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "start from this attacker checkpoint (e.g. a shipped one) and fine-tune it against "
            "--model; its architecture is used, and its record of the model it was trained "
            "against is not checked"
        ),
    )
    train.add_argument("--resume", action="store_true", help="continue from OUT")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoint in OUT; files you put there, such as MODEL_CARD.md, are kept",
    )
    train.set_defaults(handler=_train_attack)

    generate = commands.add_parser(
        "generate",
        help="write I_DV, D, V, S0 and S_DV for a scan as NIfTI on its own grid",
        description=(
            "Attack a CT volume with a trained attacker and write, on the scan's own grid: "
            "I_DV and V in HU, D as D_x and D_y in mm, S0 and S_DV label maps."
        ),
    )
    generate.add_argument("--image", type=Path, required=True, help="CT NIfTI file")
    generate.add_argument("--out", type=Path, required=True, help="folder to write into")
    add_model_argument(generate)
    add_force_argument(generate)
    generate.add_argument(
        "--attacker",
        type=Path,
        default=None,
        help=f"attacker folder (default: shipped {DEFAULT_ATTACKER})",
    )
    generate.add_argument(
        "--samples",
        type=arg_int(1, MAX_SAMPLES),
        default=1,
        help=f"1: the posterior mean; N > 1 (at most {MAX_SAMPLES}): N posterior samples",
    )
    generate.add_argument(
        "--temperature",
        type=arg_float(0, MAX_TEMPERATURE),
        default=1.0,
        help="scale of the posterior's spread for samples (0: its mean)",
    )
    generate.add_argument("--seed", type=SEED, default=0)
    generate.set_defaults(handler=_generate)


def add_attack_settings(
    parser: argparse.ArgumentParser, with_xi: bool = True, with_schedule: bool = True
) -> None:
    """The attack-training options of train-attack, sweep and (without the schedule) harden."""
    group = parser.add_argument_group("attack training")
    weight = arg_float(0, MAX_WEIGHT)
    if with_xi:
        group.add_argument(
            "--xi", type=arg_float(0, MAX_XI), default=2.0, help="target masked cross-entropy"
        )
        group.add_argument("--mode", choices=("dv", "d", "v"), default="dv")
    if with_schedule:
        group.add_argument(
            "--steps", type=arg_int(1, MAX_STEPS), default=1000, help="generator steps"
        )
        group.add_argument("--batch-size", type=arg_int(1, MAX_BATCH), default=8)
        group.add_argument(
            "--crop-size",
            type=arg_int(16, MAX_PATCH),
            default=128,
            help=f"training crop, pixels (16 to {MAX_PATCH}, a multiple of the attacker's stride)",
        )
    group.add_argument("--lambda-d", type=weight, default=0.1)
    group.add_argument("--lambda-v", type=weight, default=0.01)
    group.add_argument("--kl-weight", type=weight, default=0.01, help="0: the paper's exact eq. 6")
    group.add_argument(
        "--reference",
        choices=("warped", "original"),
        default="warped",
        help="eq. 4 against S0 warped by D (default) or S0 itself (literal)",
    )
    group.add_argument(
        "--eq5",
        choices=("hard", "kl", "soft"),
        default="hard",
        help=(
            "eq. 5's form: hard (default; cross-entropy against S0's labels moved by D, whose "
            "entropy D cannot raise), kl (against S0's probabilities less their entropy) or soft "
            "(against S0's warped probabilities: the form the shipped attackers were trained "
            "with, which a warp can satisfy by blurring the reference)"
        ),
    )
    group.add_argument(
        "--critic-norm",
        choices=("layer", "none", "batch"),
        default=None,
        help=(
            "the critic's normalisation: layer (default; per image), none, or batch (the paper's, "
            "with weight clipping only; real and fake are scored in one pass); --resume keeps "
            "the checkpoint's"
        ),
    )
    group.add_argument(
        "--per-organ",
        action="store_true",
        help="one xi target per organ instead of one for all organs (our option)",
    )
    group.add_argument(
        "--diversity-weight",
        type=weight,
        default=0.0,
        help="reward different D and V for different latent draws (our option; 0: off)",
    )
    group.add_argument(
        "--diversity-cap-d",
        type=arg_float(0, MAX_WEIGHT, low_open=True),
        default=0.5,
        help="D change (px) per unit z at which it saturates",
    )
    group.add_argument(
        "--diversity-cap-v",
        type=arg_float(0, MAX_WEIGHT, low_open=True),
        default=0.05,
        help="V change per unit z at which it saturates",
    )
    group.add_argument(
        "--lr", type=arg_float(0, 1, low_open=True), default=1e-4, help="RMSProp learning rate"
    )
    group.add_argument("--critic-steps", type=arg_int(1, MAX_CRITIC_STEPS), default=5)
    group.add_argument(
        "--gradient-penalty",
        type=weight,
        default=0.0,
        help="WGAN-GP weight instead of weight clipping (0: clipping)",
    )
    group.add_argument(
        "--latent-d", type=arg_int(1, MAX_LATENT), default=8, help="dimensions of z_D"
    )
    group.add_argument(
        "--latent-v", type=arg_int(1, MAX_LATENT), default=8, help="dimensions of z_V"
    )
    group.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    add_speed_arguments(group)
    group.add_argument("--seed", type=SEED, default=0)


def training_settings(args: argparse.Namespace, xi: float, **schedule: Any) -> Any:
    """The :class:`AttackTrainingConfig` of the parsed options (``schedule`` overrides)."""
    from .training.attack_trainer import AttackTrainingConfig

    steps = {
        name: schedule.get(name, getattr(args, name, None))
        for name in ("steps", "batch_size", "crop_size")
    }

    return AttackTrainingConfig(
        xi=xi,
        reference=args.reference,
        eq5=args.eq5,
        lambda_d=args.lambda_d,
        lambda_v=args.lambda_v,
        kl_weight=args.kl_weight,
        diversity_weight=args.diversity_weight,
        diversity_cap_d=args.diversity_cap_d,
        diversity_cap_v=args.diversity_cap_v,
        per_organ=args.per_organ,
        learning_rate=args.lr,
        critic_steps=args.critic_steps,
        gradient_penalty=args.gradient_penalty,
        **steps,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
    )


def _train_volumes(args: argparse.Namespace, seg: Any) -> list[Any]:
    if not args.sample and not args.images and args.dataset is None:
        args.sample = ["phantom"]  # the user's data when given, else the phantom
    return list(
        eval_volumes(
            args, default_split="train", require_labels=False, label_map=seg.spec.label_map
        )
    )


def train_one(
    args: argparse.Namespace, seg: Any, volumes: list[Any], out: Path, xi: float, mode: str
) -> Path:
    """Train one attacker of ``mode`` at ``xi`` on ``volumes`` into ``out``, with progress."""
    from .nets.attacker import AttackerConfig
    from .nets.critic import CriticConfig
    from .training.attack_trainer import AttackTrainer
    from .training.events import AttackProgress, TrainingFinished

    trainer = AttackTrainer(
        out,
        seg,
        volumes,
        AttackerConfig(args.latent_d, args.latent_v, mode=mode),
        critic_config=CriticConfig(norm=args.critic_norm) if args.critic_norm else None,
        config=training_settings(args, xi),
        resume=getattr(args, "resume", False),
        overwrite=args.overwrite,
        provenance={"command": args.command_line, "data": [v.name for v in volumes]},
        init_from=getattr(args, "init", None),
    )
    print(f"training attacker xi={xi:g} mode={mode} on {len(volumes)} volumes -> {out}")
    for event in with_progress(trainer, f"attack xi={xi:g} {mode}"):
        if isinstance(event, AttackProgress):
            drops = ", ".join(f"{k} {v:.0f}%" for k, v in event.dice_drop.items() if v is not None)
            print(f"step {event.step}: Dice drop {drops}; p {event.p:.3f}")
        elif isinstance(event, TrainingFinished):
            print(f"{'stopped' if event.stopped else 'finished'} at step {event.step}: {out}")
    return out


def _train_attack(args: argparse.Namespace) -> None:
    check_training_out(args.out, args.resume, args.overwrite)
    if args.init is not None and args.resume:
        raise InvalidInputError("Give --init to start a new run, or --resume to continue one.")
    if args.images or args.dataset is not None:
        check_data_files(args, "train", require_labels=False)
    seg = load_model(args)
    train_one(args, seg, _train_volumes(args, seg), args.out, args.xi, args.mode)


def _generate(args: argparse.Namespace) -> None:
    from ._resources import models_dir
    from .attack import attack_volume
    from .data.nifti import hu_dtype, load_volume, open_nifti, write_nifti
    from .evaluation.attacks import LearnedAttack
    from .training.attacker_io import load_attacker

    check_output_dir(args.out)
    header = open_nifti(args.image)
    voxels = math.prod(int(n) for n in header.shape)
    # per draw: I_DV (int16), V, D_x, D_y (float32), S_DV (uint8); S0 once; uncompressed sizes,
    # an upper bound of the .nii.gz files
    check_disk(args.out, voxels * (15 * args.samples + 1), f"generate --samples {args.samples}")
    seg = load_model(args)
    loaded = load_attacker(args.attacker or models_dir() / DEFAULT_ATTACKER)
    check_attacker_target(loaded, seg, args)
    volume = load_volume(args.image)
    idv_dtype = hu_dtype(volume.image)  # a zero attack writes the scan back exactly
    stem = Path(args.image).name.removesuffix(".gz").removesuffix(".nii")
    draws = (
        [("mean", 0)]
        if args.samples == 1
        else [("posterior", args.seed + i) for i in range(args.samples)]
    )
    for index, (source, seed) in enumerate(draws):
        method = LearnedAttack(loaded, source, args.temperature, seed)
        result = attack_volume(seg, method, volume)
        tag = "" if args.samples == 1 else f"_sample{index}"
        out = args.out
        write_nifti(out / f"{stem}_IDV{tag}.nii.gz", result.attacked_hu, volume.grid, idv_dtype)
        write_nifti(out / f"{stem}_V{tag}.nii.gz", result.intensity_hu, volume.grid, "float32")
        write_nifti(
            out / f"{stem}_Dx_mm{tag}.nii.gz", result.displacement_mm[0], volume.grid, "float32"
        )
        write_nifti(
            out / f"{stem}_Dy_mm{tag}.nii.gz", result.displacement_mm[1], volume.grid, "float32"
        )
        write_nifti(out / f"{stem}_S0.nii.gz", result.s0, volume.grid, "uint8")
        write_nifti(out / f"{stem}_SDV{tag}.nii.gz", result.s_dv, volume.grid, "uint8")
        print(
            f"{source} draw {index}: p = {result.p:.3f} (normalised), p_HU = "
            f"{result.p_hu_fov:.1f} HU; wrote {out}/{stem}_*{tag}.nii.gz"
        )
