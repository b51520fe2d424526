"""The ``advseg`` command line: argument parsing and printing only; the work is in the backend."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._cli_common import (
    DOMAIN_AUGMENT_HELP,
    MAX_BATCH,
    MAX_CHANNELS,
    MAX_DEPTH,
    MAX_PATCH,
    MAX_SPACING_MM,
    MAX_STEPS,
    PHANTOM_SPLITS,
    SEED,
    add_data_arguments,
    add_model_argument,
    add_speed_arguments,
    add_workers_argument,
    check_data_choice,
    check_data_files,
    check_training_out,
    eval_volumes,
    fmt,
    load_model,
    model_source,
    progress,
    user_volumes,
    with_progress,
)
from .cli_attack import add_attack_commands
from .cli_harden import add_harden_command
from .cli_model import add_model_commands
from .cli_sweep import add_report_command, add_sweep_command
from .data.samples import MAX_SUBJECTS
from .errors import AdvsegError, InvalidInputError
from .training.distributed import close_world, environment_world, init_world
from .validation import arg_float, arg_int, check_disk, check_output_dir, check_output_file


class UsageError(Exception):
    """A command line that argparse refuses (reported in one line, exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, without the usage block."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        """Raise :class:`UsageError` instead of printing the usage and exiting."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``advseg``; returns the exit status.

    A user's mistake (a bad argument, file or request) ends in one line ``advseg: error: ...``
    and status 2; Ctrl-C outside training ends in one line and status 130. Under torchrun
    (see :mod:`napari_advseg.training.distributed`) the commands that run on several processes
    join them first; only rank 0 prints, and another rank's error names its rank.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        if os.environ.get("RANK", "0") == "0":  # every rank parses the same line: one says so
            print(f"advseg: error: {error}", file=sys.stderr)
        return 2
    args.command_line = "advseg " + " ".join(shlex.quote(arg) for arg in argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 1
    errors, prefix = sys.stderr, "advseg"
    try:
        world = join_world(args)
        if not world.is_main:
            prefix = f"advseg (rank {world.rank})"
            sys.stdout = sys.stderr = open(os.devnull, "w")
        args.handler(args)
    except AdvsegError as error:
        print(f"{prefix}: error: {error}", file=errors)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prefix}: interrupted; nothing more was written.", file=errors)
        return 130
    finally:
        if sys.stderr is not errors:
            sys.stdout.close()
            sys.stdout, sys.stderr = sys.__stdout__, errors
        close_world()
    return 0


DISTRIBUTED_COMMANDS = ("train-seg", "train-attack", "harden", "eval-seg", "sweep")
"""The commands that run on several processes under torchrun."""


def join_world(args: argparse.Namespace) -> Any:
    """Join torchrun's process group for a command that runs on several processes.

    Any other command launched by torchrun with more than one process is refused in one line.
    """
    world = environment_world()
    if not world.is_distributed:
        return world
    if args.command not in DISTRIBUTED_COMMANDS:
        raise InvalidInputError(
            f"'{args.command}' runs in one process; launch it without torchrun "
            f"({', '.join(DISTRIBUTED_COMMANDS)} run on several)."
        )
    for option in ("batch_size", "attack_batch_size"):  # refused before any process waits
        if getattr(args, option, None) is not None:
            world.local_batch(getattr(args, option), "--" + option.replace("_", "-"))
    return init_world(getattr(args, "device", "auto"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``advseg`` and its subcommands."""
    parser = ArgumentParser(
        prog="advseg",
        description=(
            "Stress-test CT organ segmentation networks with learned adversarial examples "
            "(Chen et al. 2019). Start with `advseg sample-data`, `advseg eval-seg` and "
            "`advseg train-seg`; each subcommand has its own --help."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    sample = commands.add_parser(
        "sample-data",
        help="write the bundled sample data as NIfTI image/label pairs",
        description="Write the phantom cohort or the real CT case as NIfTI image/label pairs.",
    )
    sample.add_argument("--out", type=Path, required=True, help="folder to write into")
    sample.add_argument("--sample", choices=("phantom", "real"), default="phantom")
    sample.add_argument(
        "--subjects",
        type=arg_int(3, MAX_SUBJECTS),
        default=150,
        help=f"phantom: how many subjects, 3 to {MAX_SUBJECTS} (default 150)",
    )
    sample.add_argument(
        "--split", choices=PHANTOM_SPLITS, default="all", help="phantom: only this split"
    )
    sample.add_argument("--seed", type=SEED, default=0, help="phantom cohort seed (default 0)")
    sample.set_defaults(handler=_sample_data)

    train = commands.add_parser(
        "train-seg",
        help="train the U-Net to be attacked",
        description=(
            "Train a 2D U-Net on axial slices (random patches, cross-entropy) and write a "
            "checkpoint folder: the best model by validation Dice, with last/ inside for --resume. "
            "Data: bundled samples (--sample phantom real) or your own NIfTI pairs "
            "(--images ... --labels ..., split 60:15:75 by subject; the test share is left out)."
        ),
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    add_data_arguments(train, default_sample=None)
    train.add_argument(
        "--real-weight",
        type=arg_float(0, 1e6, low_open=True),
        default=10.0,
        help="sampling weight of the real case relative to one phantom subject",
    )
    train.add_argument("--epochs", type=arg_int(1, MAX_STEPS), default=12)
    train.add_argument("--steps-per-epoch", type=arg_int(1, MAX_STEPS), default=200)
    train.add_argument("--batch-size", type=arg_int(1, MAX_BATCH), default=16)
    train.add_argument(
        "--patch-size",
        type=arg_int(8, MAX_PATCH),
        default=96,
        help=f"square training patch, pixels (8 to {MAX_PATCH}; a multiple of 2^(depth-1))",
    )
    train.add_argument(
        "--lr", type=arg_float(0, 1, low_open=True), default=1e-3, help="Adam learning rate"
    )
    train.add_argument(
        "--constant-lr", action="store_true", help="no cosine decay of the learning rate"
    )
    train.add_argument(
        "--dice-weight",
        type=arg_float(0, 1e6),
        default=0.0,
        help="weight of an extra soft-Dice loss term (0: cross-entropy only)",
    )
    train.add_argument(
        "--base-channels", type=arg_int(1, MAX_CHANNELS), default=16, help="U-Net width"
    )
    train.add_argument(
        "--depth", type=arg_int(2, MAX_DEPTH), default=4, help="U-Net resolution levels"
    )
    train.add_argument(
        "--spacing",
        type=arg_float(0, MAX_SPACING_MM, low_open=True),
        default=3.0,
        help="in-plane pixel spacing (mm) the model works at",
    )
    train.add_argument("--no-augment", action="store_true", help="turn off augmentation")
    train.add_argument(
        "--domain-augment",
        action="store_true",
        help=DOMAIN_AUGMENT_HELP,
    )
    train.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    add_workers_argument(train)
    add_speed_arguments(train)
    train.add_argument("--seed", type=SEED, default=0)
    train.add_argument("--resume", action="store_true", help="continue from OUT/last")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoint in OUT; files you put there, such as MODEL_CARD.md, are kept",
    )
    train.set_defaults(handler=_train_seg)

    evaluate = commands.add_parser(
        "eval-seg",
        help="Dice per organ of a segmentation model",
        description=(
            "Evaluate a segmentation model (default: the shipped U-Net) on a sample or on your "
            "NIfTI pair. Dice is 3D per subject, averaged over subjects; an organ absent from "
            "both prediction and reference is left out of the averages."
        ),
    )
    add_model_argument(evaluate)
    add_data_arguments(evaluate, default_sample=None)
    evaluate.add_argument("--json", type=Path, default=None, help="also write the results here")
    evaluate.add_argument(
        "--bootstrap",
        type=arg_int(0, 100_000),
        default=0,
        metavar="N",
        help="add 95 %% intervals from N draws of a bootstrap over axial slices (within each "
        "subject; for few scans, such as the real case); 0: none (default)",
    )
    evaluate.set_defaults(handler=_eval_seg)
    add_attack_commands(commands)
    add_harden_command(commands)
    add_sweep_command(commands)
    add_report_command(commands)
    add_model_commands(commands)
    return parser


def _sample_data(args: argparse.Namespace) -> None:
    import math

    from .data.nifti import write_nifti
    from .data.samples import REAL_CASE_ATTRIBUTION, PhantomCohort, load_real_case

    out: Path = check_output_dir(args.out)
    if args.sample == "real":
        volume = load_real_case()
        write_nifti(out / "abdomen_ct_ts_ct.nii.gz", volume.image, volume.grid, "int16")
        write_nifti(out / "abdomen_ct_ts_labels.nii.gz", volume.labels, volume.grid, "uint8")
        (out / "ATTRIBUTION.txt").write_text(REAL_CASE_ATTRIBUTION + "\n")
        print(f"wrote the real CT case to {out}\n{REAL_CASE_ATTRIBUTION}")
        return
    cohort = PhantomCohort(args.subjects, args.seed)
    indices = cohort.split(args.split)
    # uncompressed int16 images and uint8 labels: an upper bound of the .nii.gz files
    check_disk(out, 3 * math.prod(cohort.config.shape) * len(indices), "sample-data")
    for index in progress(indices, "phantom subjects"):
        volume = cohort.subject(index)
        write_nifti(out / f"{volume.name}_ct.nii.gz", volume.image, volume.grid, "int16")
        write_nifti(out / f"{volume.name}_labels.nii.gz", volume.labels, volume.grid, "uint8")
    splits = {name: [cohort.subject_name(i) for i in ids] for name, ids in cohort.splits().items()}
    (out / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    print(f"wrote {len(indices)} phantom subjects to {out} (splits in splits.json)")


def _training_data(
    args: argparse.Namespace,
) -> tuple[list[Any], list[Any], list[float], dict, Any]:
    """Training and validation volumes, sampling weights, a description of the data, organs.

    The organs are a dataset folder's own, else the paper's four.
    """
    from .data.samples import REAL_TEST_BLOCK, PhantomCohort, load_real_case, real_case_part
    from .data.splits import split_subjects
    from .labels import DEFAULT_LABEL_MAP

    check_data_choice(args)
    if args.dataset is not None:
        return _dataset_training_data(args)
    train, val, weights, data = [], [], [], {}
    if args.images:
        volumes = list(user_volumes(args))
        if len(volumes) < 3:
            print("advseg: fewer than 3 subjects: training on all, no validation", file=sys.stderr)
            data = {"images": [str(p) for p in args.images]}
            return volumes, [], [1.0] * len(volumes), data, DEFAULT_LABEL_MAP
        split = split_subjects(len(volumes), args.seed, tuple(args.fractions))
        train = [volumes[i] for i in split["train"]]
        val = [volumes[i] for i in split["val"]]
        held_out = [str(args.images[i]) for i in split["test"]]
        data = {"images": [str(p) for p in args.images], "held_out_test": held_out}
        return train, val, [1.0] * len(train), data, DEFAULT_LABEL_MAP
    if "phantom" in args.sample:
        cohort = PhantomCohort(args.subjects, args.cohort_seed)
        train += cohort.volumes(args.split or "train")
        val += cohort.volumes("val")
        weights += [1.0] * len(train)
        data["phantom"] = {
            "subjects": args.subjects,
            "seed": args.cohort_seed,
            "split": args.split or "train",
        }
    if "real" in args.sample:
        train.append(load_real_case())
        weights.append(args.real_weight)
        data["real"] = {
            "case": "abdomen_ct_ts",
            "weight": args.real_weight,
            "note": "in the training set: Dice on it is in-sample",
        }
    if "real-train" in args.sample:
        blocks = real_case_part("train")
        train += blocks
        weights += [args.real_weight] * len(blocks)
        data["real"] = {
            "case": "abdomen_ct_ts",
            "slices": [block.name for block in blocks],
            "weight": args.real_weight,
            "held_out": f"slices {REAL_TEST_BLOCK[0]} to {REAL_TEST_BLOCK[1] - 1} "
            "(--sample real-test), with two guard slices on each side",
        }
    return train, val, weights, data, DEFAULT_LABEL_MAP


def _dataset_training_data(
    args: argparse.Namespace,
) -> tuple[list[Any], list[Any], list[float], dict, Any]:
    """Training and validation subjects of a --dataset folder, labelled as its dataset.json says."""
    from .data.dataset_folder import dataset_volumes, read_dataset_folder, split_cases

    folder = read_dataset_folder(args.dataset)
    label_map = folder.label_map()
    split = split_cases(folder.training, tuple(args.fractions), args.split_seed)
    if not split["val"]:
        print("advseg: fewer than 3 subjects: training on all, no validation", file=sys.stderr)
    train = list(dataset_volumes(folder, split["train"], label_map, args.label_map))
    val = list(dataset_volumes(folder, split["val"], label_map, args.label_map))
    data = {
        "dataset": str(args.dataset),
        "fractions": list(args.fractions),
        "split_seed": args.split_seed,
        "held_out_test": [case.name for case in split["test"]],
    }
    return train, val, [1.0] * len(train), data, label_map


def _train_seg(args: argparse.Namespace) -> None:
    from .nets.unet import UNetConfig
    from .training.events import TrainingFinished, ValidationCompleted
    from .training.seg_trainer import SegTrainer, SegTrainingConfig, make_spec

    check_training_out(args.out, args.resume, args.overwrite, args.out / "last")
    train, val, weights, data, label_map = _training_data(args)
    architecture = UNetConfig(label_map.num_classes, args.base_channels, args.depth)
    config = SegTrainingConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.lr,
        cosine=not args.constant_lr,
        dice_weight=args.dice_weight,
        augment=not args.no_augment,
        domain_augment=args.domain_augment,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        precision=args.precision,
        channels_last=args.channels_last,
    )
    spec = make_spec(architecture, label_map, pixel_spacing=(args.spacing, args.spacing))
    trainer = SegTrainer(
        args.out,
        train,
        val,
        architecture,
        spec,
        config,
        weights,
        resume=args.resume,
        overwrite=args.overwrite,
        provenance={"command": args.command_line, "data": data},
    )
    print(f"training on {len(train)} volumes, validating on {len(val)}; Ctrl-C stops and saves")
    for event in with_progress(trainer, "train-seg"):
        if isinstance(event, ValidationCompleted):
            dice = ", ".join(f"{k} {fmt(v)}" for k, v in event.dice.items())
            mark = "  (best)" if event.is_best else ""
            print(
                f"epoch {event.epoch + 1}: validation Dice {dice}; mean {event.mean_dice:.3f}{mark}"
            )
        elif isinstance(event, TrainingFinished):
            state = "stopped" if event.stopped else "finished"
            print(
                f"{state} at step {event.step}; best model: {event.best_path}; "
                f"resume state: {event.last_path}"
            )


def _eval_seg(args: argparse.Namespace) -> None:
    from .evaluation.metrics import dice_per_label, mean_dice
    from .evaluation.slice_bootstrap import slice_bootstrap, slice_counts
    from .inference import segment_volume
    from .segmentation import default_model_path
    from .training.distributed import current_world

    world = current_world()
    if args.json is not None:
        check_output_file(args.json, "--json")
    check_data_files(args)
    model = load_model(args)
    # reads each volume when used, its labels in the model's channels
    volumes = eval_volumes(args, label_map=model.spec.label_map)
    names = model.spec.label_map.names
    rows, counts = [], []
    # each rank scores its shard of the subjects, one in memory at a time
    for volume in progress(world.shard(volumes), "subjects"):
        prediction = segment_volume(model, volume)
        reference = volume.require_labels()
        dice = dice_per_label(prediction, reference, model.spec.label_map)
        rows.append({"subject": volume.name, "dice": dice})
        if args.bootstrap:
            counts.append(slice_counts(prediction, reference, model.spec.label_map))
        del volume, prediction, reference
    rows = world.gather(rows, len(volumes))
    counts = world.gather(counts, len(volumes)) if args.bootstrap else []
    if not world.is_main:
        return
    summary = mean_dice([row["dice"] for row in rows], names)
    print(f"model: {model_source(model, args.model)}  ({len(rows)} subjects)")
    print(f"fed as: {model.spec.describe()}")
    print(_table(rows, summary, names))
    intervals = None
    if args.bootstrap:
        intervals = slice_bootstrap({"model": counts}, names, samples=args.bootstrap)
        ci = intervals["models"]["model"]["dice_ci"]
        print(
            "95 % interval (bootstrap over slices): "
            + ", ".join(f"{n} {_interval_text(ci[n])}" for n in names)
        )
    if args.json:
        result = {
            "model": str(args.model or default_model_path()),
            "fold": model.config.get("fold"),
            "spec": model.spec.to_dict(),
            "dice": summary,
            "subjects": rows,
            "convention": "3D Dice per subject, mean over subjects where defined",
        }
        if intervals is not None:
            result["dice_ci"] = intervals["models"]["model"]["dice_ci"]
            result["bootstrap"] = {
                key: intervals[key] for key in ("samples", "seed", "slices", "convention")
            }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def _interval_text(interval: list[float] | None) -> str:
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _table(rows: list[dict], summary: dict[str, float | None], names: list[str]) -> str:
    width = max([len("subject"), *(len(row["subject"]) for row in rows)])
    lines = ["subject".ljust(width) + "".join(f"{n:>10}" for n in names)]
    for row in rows:
        lines.append(
            row["subject"].ljust(width) + "".join(f"{fmt(row['dice'][n]):>10}" for n in names)
        )
    lines.append("mean".ljust(width) + "".join(f"{fmt(summary[n]):>10}" for n in names))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
