"""Training the U-Net to be attacked, as an iterator of typed events.

``for event in SegTrainer(...).run(): ...`` trains; :meth:`SegTrainer.stop` (from any thread)
ends training after the current step and keeps the last checkpoint. The output folder is the
best checkpoint by validation Dice; ``<out>/last`` holds the latest state for resuming.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..class_map import class_map
from ..data.normalization import Normalization
from ..data.slices import sample_patch_origins
from ..data.volume import Volume
from ..errors import CheckpointError, InvalidInputError
from ..evaluation.metrics import dice_per_label, mean_dice, overall_mean
from ..inference import labels_to_model_grid, predict_probabilities, to_model_grid
from ..labels import DEFAULT_LABEL_MAP, LabelMap
from ..nets.unet import UNet, UNetConfig
from ..segmentation import ModelSpec, SegmentationModel, load_unet, save_unet
from ..validation import check_integer, check_number
from .augment import augment_batch, check_augmentation
from .base import (
    Diverged,
    StoppableTrainer,
    check_gradients,
    check_out_dir,
    check_step,
    divergence_reason,
    environment_facts,
)
from .checkpoint import optimizer_tensors, restore_optimizer
from .distributed import World, current_world
from .events import (
    CheckpointSaved,
    StepCompleted,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
    ValidationCompleted,
)
from .memory import check_run_memory, slices_bytes, unet_training_bytes
from .patch_loader import MAX_WORKERS, PatchBatches, batch_stream
from .precision import autocast, check_precision, memory_format

LAST_DIR = "last"


@dataclass(frozen=True)
class SegTrainingConfig:
    """Settings of a U-Net training run.

    Cross-entropy is the paper's loss; ``dice_weight`` > 0 adds a soft Dice term over the organs.
    Adam with a cosine decay of the learning rate to zero over the run is our choice (the paper
    does not say how its U-Net was optimised); ``cosine=False`` keeps it constant.

    ``batch_size`` is the global batch (shared among processes under torchrun). ``workers``
    sample and augment batches in DataLoader workers (:mod:`.patch_loader`); ``precision``
    ``"bf16"`` runs the forward pass under bfloat16 autocast (weights and optimizer stay
    float32); ``channels_last`` stores the network and its inputs channels-last. The last
    three change speed, not the method (bf16 rounds the activations).
    """

    epochs: int = 12
    steps_per_epoch: int = 200
    batch_size: int = 16
    patch_size: int = 96
    learning_rate: float = 1e-3
    cosine: bool = True
    dice_weight: float = 0.0
    foreground_fraction: float = 0.5
    augment: bool = True
    domain_augment: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_integer(self.epochs, "epochs", low=1, high=1_000_000)
        check_integer(self.workers, "workers", low=0, high=MAX_WORKERS)
        check_precision(self.precision)
        if not isinstance(self.channels_last, bool):
            raise InvalidInputError("channels_last must be True or False.")
        check_integer(self.steps_per_epoch, "steps per epoch", low=1, high=10_000_000)
        check_integer(self.batch_size, "batch size", low=1, high=4096)
        check_integer(self.patch_size, "patch size", low=1, high=2**20)
        check_number(self.learning_rate, "learning rate", low=0.0, high=10.0, low_open=True)
        check_number(self.dice_weight, "Dice weight", low=0.0, high=1e6)
        check_number(self.foreground_fraction, "foreground fraction", low=0.0, high=1.0)
        check_integer(self.seed, "seed", low=0, high=2**32 - 1)
        if not isinstance(self.cosine, bool):
            raise InvalidInputError("cosine must be True or False.")
        check_augmentation(self.augment, self.domain_augment)
        if not isinstance(self.device, str):
            raise InvalidInputError(f"device must be a name such as 'auto', got {self.device!r}.")


def make_spec(
    architecture: UNetConfig,
    label_map: LabelMap = DEFAULT_LABEL_MAP,
    pixel_spacing: tuple[float, float] = (3.0, 3.0),
    normalization: Normalization | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of a U-Net of this architecture."""
    if architecture.num_classes != label_map.num_classes:
        raise InvalidInputError(
            f"A U-Net with {architecture.num_classes} outputs cannot segment "
            f"{len(label_map)} labels."
        )
    return ModelSpec(
        label_map=label_map,
        pixel_spacing=pixel_spacing,
        normalization=normalization or Normalization(),
        input_multiple=architecture.stride,
        min_size=architecture.stride * 2,
    )


@dataclass
class PatchSource:
    """Training slices at the model's spacing, padded to at least one patch, and their weights."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    @classmethod
    def from_volumes(
        cls,
        volumes: Sequence[Volume],
        spec: ModelSpec,
        patch_size: int,
        weights: Sequence[float] | None,
    ) -> PatchSource:
        """Normalise, resample and pad every training volume once."""
        source = cls()
        for index, volume in enumerate(volumes):
            labels = labels_to_model_grid(volume, spec).numpy()
            images = to_model_grid(volume, spec, pad=False).images[:, 0].numpy()
            pad_h = max(0, patch_size - images.shape[1])
            pad_w = max(0, patch_size - images.shape[2])
            if pad_h or pad_w:
                pads = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
                images = np.pad(images, pads, constant_values=float(images.min()))
                labels = np.pad(labels, pads)
            source.images.append(images)
            source.labels.append(labels)
            source.weights.append(1.0 if weights is None else float(weights[index]))
        return source

    def sample(
        self, count: int, patch_size: int, foreground_fraction: float, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of (count, 1, P, P) image patches and (count, P, P) label patches."""
        probabilities = np.asarray(self.weights) / np.sum(self.weights)
        volumes = rng.choice(len(self.images), size=count, p=probabilities)
        images = np.empty((count, 1, patch_size, patch_size), np.float32)
        labels = np.empty((count, patch_size, patch_size), np.int64)
        for i, v in enumerate(volumes):
            z = rng.integers(self.images[v].shape[0])
            ((y, x),) = sample_patch_origins(
                self.labels[v][z], patch_size, 1, rng, foreground_fraction
            )
            images[i, 0] = self.images[v][z, y : y + patch_size, x : x + patch_size]
            labels[i] = self.labels[v][z, y : y + patch_size, x : x + patch_size]
        return torch.from_numpy(images), torch.from_numpy(labels)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the organ channels of a batch."""
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probabilities.dtype)
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * intersection + 1.0) / (total + 1.0)).mean()


def evaluate_dice(
    model: SegmentationModel, volumes: Sequence[Volume], world: World | None = None
) -> dict[str, float | None]:
    """Mean over subjects of each organ's 3D Dice on the subjects' own grids.

    With several processes each scores its shard of the subjects and every rank gets the mean
    of all, the same figure as one process.
    """
    world = world or current_world()
    rows = []
    for volume in world.shard(volumes):
        probabilities = predict_probabilities(model, to_model_grid(volume, model.spec))
        prediction = class_map(probabilities).numpy()
        rows.append(dice_per_label(prediction, volume.require_labels(), model.spec.label_map))
    return mean_dice(world.gather(rows, len(volumes)), model.spec.label_map.names)


def training_batch(
    source: PatchSource,
    config: Any,
    count: int,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One rank's batch of ``count`` patches and labels, augmented as ``config`` says.

    ``config`` is a :class:`SegTrainingConfig` or a hardening run's config: anything with
    ``patch_size``, ``foreground_fraction``, ``augment`` and ``domain_augment``.
    """
    images, labels = source.sample(count, config.patch_size, config.foreground_fraction, rng)
    if config.augment:
        images, labels = augment_batch(images, labels, generator, config.domain_augment)
    return images, labels


class SegTrainer(StoppableTrainer):
    """Trains a U-Net on labelled volumes; see the module docstring.

    Parameters
    ----------
    out_dir
        Checkpoint folder to write (the best model), with ``last/`` inside for resuming.
    train, val
        Labelled training and validation volumes (split by subject). Without validation volumes
        the latest model is also kept as the best.
    architecture, spec
        The U-Net and how it is fed; ``spec`` defaults to :func:`make_spec` of the architecture.
    config
        Training settings.
    train_weights
        Relative sampling weight of each training volume (default: equal).
    resume
        Continue from ``out_dir/last`` (which must exist).
    overwrite
        Replace the checkpoint ``out_dir`` holds (its other files are kept). Without
        ``resume`` or ``overwrite``, a folder holding a checkpoint is refused.
    provenance
        Extra facts to record in the checkpoint (e.g. the command line and the data).
    world
        The processes of the run (default: those :func:`~.distributed.init_world` joined).
        Each rank trains on its share of the training volumes with its share of the global
        ``batch_size``; gradients are averaged by ``DistributedDataParallel``; rank 0 writes.

    Raises
    ------
    InvalidInputError, CheckpointError, ResourceError
        Before any work: unusable settings or output folder, a checkpoint in the way (or none
        to resume), or a run that needs more memory than is free.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        train: Sequence[Volume],
        val: Sequence[Volume] = (),
        architecture: UNetConfig | None = None,
        spec: ModelSpec | None = None,
        config: SegTrainingConfig | None = None,
        train_weights: Sequence[float] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
        world: World | None = None,
    ) -> None:
        if not train:
            raise InvalidInputError("No training volumes given.")
        if train_weights is not None:
            if len(train_weights) != len(train):
                raise InvalidInputError("Give one sampling weight per training volume.")
            weights = [check_number(w, "sampling weight", low=0.0) for w in train_weights]
            if sum(weights) <= 0:
                raise InvalidInputError("At least one sampling weight must be positive.")
        self.architecture = architecture = architecture or UNetConfig()
        self.spec = spec or make_spec(architecture)
        if self.spec.input_multiple % architecture.stride:
            raise InvalidInputError(
                f"Inputs must be padded to a multiple of the U-Net stride {architecture.stride}."
            )
        self.config = config = config or SegTrainingConfig()
        self.world = world = world or current_world()
        self.local_batch = world.local_batch(config.batch_size)
        if config.patch_size % architecture.stride:
            raise InvalidInputError(
                f"Patch size {config.patch_size} must be a multiple of the U-Net's stride "
                f"{architecture.stride} (2 ** (depth - 1)); try "
                f"{max(1, round(config.patch_size / architecture.stride)) * architecture.stride}."
            )
        self.out_dir = check_out_dir(out_dir, resume, overwrite, Path(out_dir) / LAST_DIR)
        self.train_volumes = list(train)
        self.val_volumes = list(val)
        self.train_weights = train_weights
        self.rank_volumes = world.share(self.train_volumes)  # this rank's share, and weights
        self.rank_weights = world.share(train_weights)
        self.resume = resume
        self.overwrite = overwrite
        self.provenance = dict(provenance or {})
        device = world.device(config.device)
        check_run_memory(
            slices_bytes(self.rank_volumes, self.spec.pixel_spacing, config.patch_size, 4 + 8),
            unet_training_bytes(architecture, self.local_batch, config.patch_size),
            device,
            f"Training a U-Net ({architecture.base_channels} base channels, depth "
            f"{architecture.depth}) on {self.local_batch} patches of {config.patch_size} pixels",
        )

    def run(self) -> Iterator[TrainingEvent]:
        """Train, yielding events; the last one is always :class:`TrainingFinished`.

        A step whose losses or gradients are NaN or infinite ends the run before the optimizer
        applies it: nothing more is saved, and ``TrainingFinished.reason`` says which step and
        which checkpoint was kept.
        """
        cfg, world = self.config, self.world
        device = world.device(cfg.device)
        torch.manual_seed(cfg.seed)
        network = UNet(self.architecture).to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=cfg.learning_rate)
        total_steps = cfg.epochs * cfg.steps_per_epoch
        state: dict[str, Any] = {
            "step": 0,
            "best": -1.0,
            "best_dice": {},
            "seconds": 0.0,
            "saved_step": None,
        }
        if self.resume:
            state.update(self._restore(network, optimizer, device))
            state["saved_step"] = state["step"]
        for volume in (*self.train_volumes, *self.val_volumes):
            volume.require_labels()
            self.spec.label_map.check_values(volume.labels, volume.name)
        source = PatchSource.from_volumes(
            self.rank_volumes, self.spec, cfg.patch_size, self.rank_weights
        )
        model = SegmentationModel(network, self.spec, self.out_dir.name)
        network.to(memory_format=memory_format(cfg.channels_last))
        parallel = world.wrap(network)  # after restoring: DDP broadcasts rank 0's weights
        num_parameters = sum(p.numel() for p in network.parameters())
        yield TrainingStarted(total_steps, state["step"], str(device), num_parameters)
        batches = batch_stream(
            PatchBatches(
                partial(training_batch, source, cfg),
                self.local_batch,
                world,
                cfg.seed,
                cfg.seed * 1_000_003 + state["step"],
                state["step"],
            ),
            cfg.workers,
            device,
        )
        started = time.perf_counter() - state["seconds"]
        stopped = False
        reason = None
        while state["step"] < total_steps:
            if world.any(self.stop_requested):  # every rank stops after the same step
                stopped = True
                break
            network.train()
            tick = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = self._learning_rate(state["step"], total_steps)
            images, labels = next(batches)
            images = images.to(
                device, non_blocking=True, memory_format=memory_format(cfg.channels_last)
            )
            labels = labels.to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                logits = parallel(images)
            logits = logits.float()
            losses = {"cross_entropy": F.cross_entropy(logits, labels)}
            if cfg.dice_weight > 0:
                losses["dice"] = cfg.dice_weight * soft_dice_loss(logits, labels)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            try:
                check_step(losses, "loss", world)
                total.backward()
                check_gradients(network.parameters(), "U-Net")
            except Diverged as error:
                reason = divergence_reason(state["step"] + 1, str(error), state["saved_step"])
                break
            optimizer.step()
            state["step"] += 1
            epoch = (state["step"] - 1) // cfg.steps_per_epoch
            values = {name: float(value.detach()) for name, value in losses.items()}
            values["total"] = float(total.detach())
            yield StepCompleted(
                state["step"], total_steps, epoch, values, time.perf_counter() - tick
            )
            if state["step"] % cfg.steps_per_epoch == 0 or state["step"] == total_steps:
                state["seconds"] = time.perf_counter() - started
                yield from self._end_epoch(model, optimizer, state, epoch)
        if reason is not None:
            saved = state["saved_step"] is not None
            yield TrainingFinished(
                state["step"],
                True,
                self.out_dir if state["best"] >= 0 else None,
                self.out_dir / LAST_DIR if saved else None,
                dict(state["best_dice"]),
                reason,
            )
            return
        state["seconds"] = time.perf_counter() - started
        if state["best"] < 0 or state["saved_step"] != state["step"]:
            if state["best"] < 0:
                # Stopped before the first validation: validate now, so that the folder's best
                # model is this run's (with --overwrite, not the replaced run's).
                epoch = max(0, (state["step"] - 1) // cfg.steps_per_epoch)
                yield from self._end_epoch(model, optimizer, state, epoch)
            else:
                last = self._save_last(network, optimizer, state)
                yield CheckpointSaved(state["step"], last, "last")
        world.barrier()  # every rank returns once the last checkpoint is written
        yield TrainingFinished(
            state["step"],
            stopped,
            self.out_dir,
            self.out_dir / LAST_DIR,
            dict(state["best_dice"]),
        )

    def _learning_rate(self, step: int, total_steps: int) -> float:
        if not self.config.cosine:
            return self.config.learning_rate
        return self.config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

    def _end_epoch(
        self,
        model: SegmentationModel,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        epoch: int,
    ) -> Iterator[TrainingEvent]:
        """Validate, keep the best checkpoint, and save the latest state."""
        self.world.sync_buffers(model.network)  # validate and save rank 0's statistics
        if self.val_volumes:
            dice = evaluate_dice(model, self.val_volumes, self.world)
            score = overall_mean(dice) or 0.0
        else:
            dice, score = {}, float(state["step"])
        is_best = score > state["best"]
        if self.val_volumes:
            yield ValidationCompleted(state["step"], epoch, dice, score, is_best)
        if is_best:
            state["best"], state["best_dice"] = score, dice
            if self.world.is_main:
                provenance = self._provenance(state, model.device)
                save_unet(self.out_dir, model.network, self.spec, provenance)
            yield CheckpointSaved(state["step"], self.out_dir, "best")
        last = self._save_last(model.network, optimizer, state)
        yield CheckpointSaved(state["step"], last, "last")

    def _provenance(self, state: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        return {
            **self.provenance,
            "settings": asdict(self.config),
            **self.world.facts(self.config.batch_size),
            "step": state["step"],
            "best_validation_mean_dice": state["best"] if self.val_volumes else None,
            "validation_dice": state["best_dice"],
            "train_subjects": [volume.name for volume in self.train_volumes],
            "val_subjects": [volume.name for volume in self.val_volumes],
            **environment_facts(device, state["seconds"]),
        }

    def _save_last(
        self, network: UNet, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> Path:
        path = self.out_dir / LAST_DIR
        if self.world.is_main:
            tensors, meta = optimizer_tensors(optimizer)
            provenance = self._provenance(state, next(network.parameters()).device)
            provenance["resume"] = {
                "optimizer": meta,
                "best": state["best"],
                "best_dice": state["best_dice"],
            }
            path = save_unet(path, network, self.spec, provenance, tensors)
        state["saved_step"] = state["step"]
        return path

    def _restore(
        self, network: UNet, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> dict[str, Any]:
        folder = self.out_dir / LAST_DIR
        model, tensors = load_unet(folder, self.architecture, self.spec.label_map)
        if model.spec != self.spec:
            raise CheckpointError(
                f"{folder}: trained with pixel spacing {model.spec.pixel_spacing}, "
                f"normalisation {model.spec.normalization.to_dict()} and input multiple "
                f"{model.spec.input_multiple}, not {self.spec.pixel_spacing}, "
                f"{self.spec.normalization.to_dict()} and {self.spec.input_multiple}; resume "
                "with the same settings, or train into a new folder."
            )
        training = model.config["training"]
        try:
            resume = training["resume"]
            restored = {
                "step": check_integer(training["step"], "step", low=0),
                "best": check_number(resume["best"], "best"),
                "best_dice": dict(resume["best_dice"]),
                "seconds": check_number(training["seconds"], "seconds", low=0.0),
            }
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{folder}: holds no usable resume state ({error}); train into a new folder."
            ) from error
        network.load_state_dict(model.network.state_dict())
        restore_optimizer(
            optimizer, {k: v.to(device) for k, v in tensors.items()}, resume["optimizer"]
        )
        return restored
