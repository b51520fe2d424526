"""Pieces shared by the ``advseg`` subcommands: data arguments, progress bars, formatting."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidInputError

SPLIT_CHOICES = ("train", "val", "test", "all")


def add_data_arguments(parser: argparse.ArgumentParser, default_sample: str | None) -> None:
    group = parser.add_argument_group("data (a bundled sample or your own NIfTI files)")
    group.add_argument(
        "--sample",
        nargs="+",
        choices=("phantom", "real"),
        default=default_sample,
        help="bundled sample(s): the phantom cohort and/or the real CT case",
    )
    group.add_argument(
        "--split", choices=SPLIT_CHOICES, default=None, help="phantom split (eval default: test)"
    )
    group.add_argument("--subjects", type=int, default=150, help="phantom cohort size")
    group.add_argument("--cohort-seed", type=int, default=0, help="phantom cohort seed")
    group.add_argument(
        "--image",
        "--images",
        dest="images",
        nargs="+",
        type=Path,
        default=None,
        help="CT NIfTI file(s)",
    )
    group.add_argument(
        "--labels",
        nargs="+",
        type=Path,
        default=None,
        help="label NIfTI file(s), one per image, in the same order",
    )


def user_volumes(args: argparse.Namespace, require_labels: bool = True) -> list[Any]:
    """The user's --image files with their --labels (optional where labels are not needed)."""
    from .data.nifti import load_volume

    if not args.labels and not require_labels:
        return [load_volume(image) for image in args.images]
    if not args.labels or len(args.labels) != len(args.images):
        raise InvalidInputError("Give one --labels file per --image file, in the same order.")
    return [load_volume(i, lab) for i, lab in zip(args.images, args.labels, strict=True)]


def check_data_choice(args: argparse.Namespace) -> None:
    if bool(args.sample) == bool(args.images):
        raise InvalidInputError("Give either --sample or --image/--labels (one of the two).")


def with_progress(trainer: Any, label: str) -> Iterator[Any]:
    """Drive a trainer with a progress bar; Ctrl-C asks it to stop and save."""
    from tqdm import tqdm

    from .training.events import StepCompleted, TrainingStarted

    previous = signal.signal(signal.SIGINT, lambda *_: trainer.stop())
    bar = None
    try:
        for event in trainer.run():
            if isinstance(event, TrainingStarted):
                bar = tqdm(
                    total=event.total_steps,
                    initial=event.start_step,
                    desc=label,
                    unit="step",
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
                bar.write(f"device {event.device}, {event.num_parameters:,} parameters")
            elif isinstance(event, StepCompleted) and bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in event.losses.items()}, refresh=False)
                bar.update(event.step - bar.n)
            else:
                if bar is not None:
                    bar.clear()
                yield event
                if bar is not None:
                    bar.refresh()
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def progress(items: Sequence[Any], label: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=label, file=sys.stderr, dynamic_ncols=True, leave=False)


def eval_volumes(
    args: argparse.Namespace, default_split: str = "test", require_labels: bool = True
) -> list[Any]:
    """The volumes named by the data arguments (phantom default: the test split)."""
    from .data.samples import PhantomCohort, load_real_case

    check_data_choice(args)
    if args.images:
        return user_volumes(args, require_labels)
    volumes = []
    if "phantom" in args.sample:
        cohort = PhantomCohort(args.subjects, args.cohort_seed)
        volumes += cohort.volumes(args.split or default_split)
    if "real" in args.sample:
        volumes.append(load_real_case())
    return volumes
