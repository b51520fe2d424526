"""Pieces shared by the ``advseg`` subcommands: data arguments, progress bars, formatting."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .data.lazy import LazyVolumes
from .data.samples import MAX_SUBJECTS, SAMPLE_NAMES
from .data.splits import PAPER_SPLIT
from .errors import InvalidInputError
from .labels import DEFAULT_LABEL_MAP, LabelMap
from .validation import arg_float, arg_int

PHANTOM_SPLITS = ("train", "val", "test", "all")
SPLIT_CHOICES = (*PHANTOM_SPLITS, "imagesTs")


# Upper bounds of the numeric options: generous for real use, small enough that a typo is caught
# before it asks for days of training or terabytes (memory is checked again by the backend).
MAX_STEPS = 10_000_000
MAX_BATCH = 1024
MAX_PATCH = 1024
MAX_CHANNELS = 256
MAX_DEPTH = 8
MAX_LATENT = 512
MAX_CRITIC_STEPS = 100
MAX_SPACING_MM = 50.0
MAX_SAMPLES = 100
MAX_SEED = 2**32 - 1
SEED = arg_int(0, MAX_SEED)
"""The argparse type of every seed."""
DOMAIN_AUGMENT_HELP = (
    "also vary resolution, noise, contrast phase and field of view, for scans unlike the "
    "training data"
)


def add_data_arguments(parser: argparse.ArgumentParser, default_sample: str | None) -> None:
    group = parser.add_argument_group("data (a bundled sample or your own NIfTI files)")
    group.add_argument(
        "--sample",
        nargs="+",
        choices=SAMPLE_NAMES,
        default=default_sample,
        help=(
            "bundled sample(s): the phantom cohort and/or the real CT case (real: all of it; "
            "real-test: its held-out block of slices 20-31; real-train: the rest, less two guard "
            "slices on each side)"
        ),
    )
    group.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default=None,
        help="phantom or --dataset split (eval default: test; train-attack: train)",
    )
    group.add_argument(
        "--subjects",
        type=arg_int(3, MAX_SUBJECTS),
        default=150,
        help=f"phantom cohort size, 3 to {MAX_SUBJECTS} (default 150)",
    )
    group.add_argument("--cohort-seed", type=SEED, default=0, help="phantom cohort seed")
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
    group.add_argument(
        "--dataset",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "an nnU-Net v2 or Medical Segmentation Decathlon folder (imagesTr/, labelsTr/, "
            "dataset.json), split by subject (--fractions, --split-seed); --split imagesTs "
            "takes its test images"
        ),
    )
    group.add_argument(
        "--label-map",
        type=Path,
        default=None,
        metavar="FILE",
        help=(
            "JSON file mapping the data's labels (values or names) to the model's organs, "
            'e.g. {"left kidney": "kidneys", "right kidney": "kidneys", "gallbladder": '
            '"background"}; without it labels are matched by name'
        ),
    )
    group.add_argument(
        "--fractions",
        nargs=3,
        type=arg_float(0, 1e6),
        default=list(PAPER_SPLIT),
        metavar=("TRAIN", "VAL", "TEST"),
        help="subject split of --dataset (and of --images in train-seg): default 60 15 75",
    )
    group.add_argument(
        "--split-seed", type=SEED, default=0, help="seed of the subject split of --dataset"
    )


def user_volumes(
    args: argparse.Namespace,
    require_labels: bool = True,
    cache_bytes: int = 0,
    label_map: LabelMap = DEFAULT_LABEL_MAP,
) -> LazyVolumes:
    """The user's --image files with their --labels (optional where labels are not needed).

    Every file's header is checked now; the volumes are read one at a time when used.
    """
    from .data.nifti import lazy_volumes

    if not args.labels and not require_labels:
        return lazy_volumes(args.images, label_map=label_map, cache_bytes=cache_bytes)
    if not args.labels or len(args.labels) != len(args.images):
        raise InvalidInputError("Give one --labels file per --image file, in the same order.")
    return lazy_volumes(args.images, args.labels, label_map, cache_bytes=cache_bytes)


def check_data_choice(args: argparse.Namespace) -> None:
    given = [bool(args.sample), bool(args.images), getattr(args, "dataset", None) is not None]
    if sum(given) != 1:
        raise InvalidInputError(
            "Give one of --sample, --image/--labels or --dataset (exactly one of the three)."
        )
    if args.split == "imagesTs" and not args.dataset:
        raise InvalidInputError("--split imagesTs takes the test images of a --dataset folder.")


def dataset_split(args: argparse.Namespace, split: str) -> tuple[Any, list[Any]]:
    """The ``--dataset`` folder and its cases of ``split`` (train, val, test, all, imagesTs)."""
    from .data.dataset_folder import read_dataset_folder, split_cases

    folder = read_dataset_folder(args.dataset)
    if split == "imagesTs":
        if not folder.test:
            raise InvalidInputError(f"{args.dataset}: no imagesTs/ cases to take.")
        return folder, list(folder.test)
    if split == "all":
        return folder, list(folder.training)
    cases = split_cases(folder.training, tuple(args.fractions), args.split_seed)
    if not cases[split]:
        raise InvalidInputError(
            f"{args.dataset}: the {split} split is empty ({len(folder.training)} cases at "
            f"fractions {':'.join(f'{f:g}' for f in args.fractions)}); use --split all, or "
            "other --fractions."
        )
    return folder, cases[split]


def with_progress(trainer: Any, label: str) -> Iterator[Any]:
    """Drive a trainer with a progress bar; Ctrl-C (or SIGTERM) asks it to stop and save.

    Under torchrun only rank 0 shows progress and gets the events; the other ranks train.
    """
    from tqdm import tqdm

    from .training.distributed import current_world
    from .training.events import StepCompleted, TrainingStarted

    main = current_world().is_main
    previous = {
        number: signal.signal(number, lambda *_: trainer.stop())
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    bar = None
    try:
        for event in trainer.run():
            if not main:
                continue
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
        for number, handler in previous.items():
            signal.signal(number, handler)
        if bar is not None:
            bar.close()


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def progress(items: Sequence[Any], label: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=label, file=sys.stderr, dynamic_ncols=True, leave=False)


def check_data_files(
    args: argparse.Namespace, default_split: str = "test", require_labels: bool = True
) -> None:
    """Check the data arguments and every file's header before the model is loaded.

    The data's organs are matched with the model's later, once it is loaded: nothing here
    assumes the shipped model's organs.
    """
    from .data.label_remap import read_label_map_file
    from .data.nifti import lazy_volumes

    check_data_choice(args)
    if getattr(args, "label_map", None) is not None:
        read_label_map_file(args.label_map)
    if args.dataset is not None:
        _, cases = dataset_split(args, args.split or default_split)
        lazy_volumes([case.image for case in cases], [case.labels for case in cases])
    elif args.images:
        if (args.labels or require_labels) and len(args.labels or []) != len(args.images):
            raise InvalidInputError("Give one --labels file per --image file, in the same order.")
        lazy_volumes(args.images, args.labels or None)


def eval_volumes(
    args: argparse.Namespace,
    default_split: str = "test",
    require_labels: bool = True,
    cache_bytes: int = 0,
    label_map: LabelMap = DEFAULT_LABEL_MAP,
) -> LazyVolumes:
    """The volumes named by the data arguments (phantom default: the test split).

    They are made one at a time when used (see :class:`LazyVolumes`), so evaluating a cohort
    holds one subject at a time; ``cache_bytes`` keeps some for a second pass.
    """
    from .data.label_remap import relabeled_volumes, remapped_file_volumes
    from .data.samples import PhantomCohort, load_real_case, real_case_part

    check_data_choice(args)
    if args.dataset is not None:
        from .data.dataset_folder import dataset_volumes

        folder, cases = dataset_split(args, args.split or default_split)
        return dataset_volumes(folder, cases, label_map, args.label_map, cache_bytes)
    if args.images:
        if args.label_map is not None and args.labels:
            if len(args.labels) != len(args.images):
                raise InvalidInputError(
                    "Give one --labels file per --image file, in the same order."
                )
            return remapped_file_volumes(
                args.images, args.labels, label_map, args.label_map, cache_bytes
            )
        return user_volumes(args, require_labels, cache_bytes, label_map)
    volumes = LazyVolumes([], cache_bytes)
    if "phantom" in args.sample:
        cohort = PhantomCohort(args.subjects, args.cohort_seed)
        volumes += cohort.lazy_volumes(args.split or default_split, cache_bytes)
    if "real" in args.sample:
        volumes += LazyVolumes([("abdomen_ct_ts", load_real_case)], cache_bytes)
    for part in ("train", "test"):
        if f"real-{part}" in args.sample:  # a few slices of a small case: made at once
            blocks = real_case_part(part)
            volumes += LazyVolumes([(b.name, partial(_itself, b)) for b in blocks], cache_bytes)
    return relabeled_volumes(volumes, DEFAULT_LABEL_MAP, label_map, args.label_map)


def _itself(volume: Any) -> Any:
    return volume


def check_training_out(out: Path, resume: bool, overwrite: bool, *resume_from: Path) -> None:
    """The trainers' output-folder rule, applied before loading any data or model.

    A folder holding a checkpoint is refused without ``--resume`` or ``--overwrite``, and
    ``--resume`` needs a checkpoint (see :func:`napari_advseg.training.base.check_out_dir`);
    the trainer checks again when it is made.
    """
    from .training.base import check_out_dir

    check_out_dir(out, resume, overwrite, *resume_from)


class _DeprecatedAlias(argparse.Action):
    """Store the value like the option it stands for, and say once that the name is old."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"advseg: warning: {option_string} is deprecated; use --model (the same model).",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: the segmentation model under attack, in every command that takes one.

    ``--seg``, its old name in train-attack, sweep and generate, still works and says so.
    """
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=(
            "segmentation model: a checkpoint folder, an nnU-Net v2 results folder "
            "(DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__2d), a TorchScript file or a "
            "torch.export .pt2 file (default: the shipped U-Net)"
        ),
    )
    parser.add_argument(
        "--fold",
        default=None,
        metavar="N",
        help=(
            "fold of an nnU-Net results folder: a number or 'all' (default: the only or the "
            "first trained fold)"
        ),
    )
    parser.add_argument(
        "--seg", type=Path, dest="model", action=_DeprecatedAlias, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--model-spec",
        type=Path,
        default=None,
        metavar="FILE",
        help=(
            "JSON file saying how the model is fed: labels, pixel_spacing_mm, normalization, "
            "input_multiple, orientation (needed for a TorchScript or .pt2 model; a checkpoint "
            "folder carries its own, and an nnU-Net folder's is derived from its plans)"
        ),
    )


def add_workers_argument(parser: Any) -> None:
    """``--workers``: DataLoader workers for the U-Net's patches (``train-seg``, ``harden``)."""
    from .training.patch_loader import MAX_WORKERS

    parser.add_argument(
        "--workers",
        type=arg_int(0, MAX_WORKERS),
        default=0,
        help="DataLoader workers that sample and augment the model's patches (default 0: in the "
        "trainer; with workers a seed repeats a run only with the same number)",
    )


def add_speed_arguments(parser: Any) -> None:
    """``--precision`` and ``--channels-last``, the trainers' options for GPUs."""
    from .training.precision import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: forward passes under bfloat16 autocast (for GPUs; weights stay float32)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last memory layout (for GPUs)"
    )


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    """``--force-attacker``: use an attacker trained against a model fed differently."""
    parser.add_argument(
        "--force-attacker",
        action="store_true",
        help=(
            "use an attacker trained against a model fed differently (other spacing, "
            "normalisation, labels, stride or orientation); refused without it"
        ),
    )


def load_model(args: argparse.Namespace) -> Any:
    """The model named by ``--model``, ``--model-spec`` and ``--fold`` (checked and probed)."""
    from .segmentation import load_segmentation_model

    return load_segmentation_model(args.model, args.model_spec, getattr(args, "fold", None))


def model_source(model: Any, given: Path | None) -> str:
    """Where a loaded model came from (``given``: its ``--model``; an nnU-Net fold says which)."""
    from .segmentation import default_model_path

    config = model.config
    if config.get("kind") == "segmentation/nnunet":
        return (
            f"{config['path']} (nnU-Net {config['configuration']}, fold {config['fold']}, "
            f"{config['checkpoint']})"
        )
    return str(given or default_model_path())


def check_attacker_target(loaded: Any, seg: Any, args: argparse.Namespace) -> None:
    """Refuse an attacker trained against a model fed otherwise (unless forced); warn else."""
    warning = loaded.check_target(seg, force=getattr(args, "force_attacker", False))
    if warning:
        print(f"advseg: warning: {warning}", file=sys.stderr)
