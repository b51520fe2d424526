"""Training the attacker (section 3.2): generator against critic and frozen f_seg, as events.

Each step trains the critic ``critic_steps`` times on fresh batches (eq. 3, with weight clipping
or a gradient penalty), then the generator once on eq. 6 (+ the KL term). f_seg is frozen: eval
mode, so its batch-norm statistics never move, and no gradient to its weights. The critic is in
train mode for its own steps and in eval mode for the generator's, and scores real and fake in
one pass (with batch norm they then share the batch statistics, so a batch-wide intensity shift
is not normalised away). The output folder holds the attacker (what the app and the evaluation
load) together with the critic and both optimizers' states for ``resume``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..class_map import class_map
from ..data.volume import Volume
from ..errors import CheckpointError, InvalidInputError
from ..evaluation.decrease import decreases, paired_decrease
from ..evaluation.metrics import dice_per_label, overall_mean
from ..labels import LabelMap
from ..nets.attacker import Attacker, AttackerConfig, AttackOutput, Encoding
from ..nets.critic import Critic, CriticConfig
from ..nets.unet import UNet
from ..segmentation import SegmentationModel
from ..validation import check_integer, check_number
from . import losses
from .attack_settings import RESUME_FREE, AttackTrainingConfig, check_resumable
from .attacker_io import (
    ATTACKER_KIND,
    attacker_architectures,
    load_attacker_state,
    save_attacker,
)
from .base import (
    Diverged,
    StoppableTrainer,
    check_gradients,
    check_out_dir,
    check_step,
    divergence_reason,
    environment_facts,
)
from .checkpoint import optimizer_tensors, read_config, restore_optimizer, weights_sha256
from .distributed import World, current_world
from .events import (
    AttackProgress,
    CheckpointSaved,
    StepCompleted,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
)
from .memory import FLOAT_BYTES, attack_training_bytes, check_run_memory, slices_bytes
from .precision import autocast, memory_format
from .slice_bank import SliceBank

DEFAULT_CRITIC = CriticConfig(norm="layer")
"""The critic a run gets unless told otherwise: per-sample layer norm.

Not batch norm: its statistics couple the images of a batch, so a batch-wide intensity shift
(what V does) is normalised away, and the gradient penalty's per-sample gradients are mixed.
Layer norm rather than none: it keeps each image's score its own (as the penalty assumes;
Gulrajani et al. 2017 recommend it), and it keeps the activations' scale under weight clipping,
the paper's setting and the default, which without normalisation shrinks them level by level.
"""


def dice_drop(
    label_map: LabelMap,
    s0_labels: torch.Tensor,
    sdv_labels: torch.Tensor,
    displacement: torch.Tensor | None,
    num_classes: int,
) -> dict[str, float | None]:
    """Per organ: the decrease (%) of :mod:`~napari_advseg.evaluation.decrease`, batch as one.

    The reference R is S0's labels (the trainer has no ground truth): Dice(S0) is scored against
    R, Dice(S_DV) against R moved by ``displacement`` as labels are (R itself for ``None``, the
    ``"original"`` reference); the batch is one subject.
    """
    reference = s0_labels
    moved = (
        reference
        if displacement is None
        else losses.move_labels(reference, displacement, num_classes)
    )
    before = dice_per_label(s0_labels.cpu().numpy(), reference.cpu().numpy(), label_map)
    after = dice_per_label(sdv_labels.cpu().numpy(), moved.cpu().numpy(), label_map)
    return decreases(paired_decrease([before], [after], label_map.names))


class GeneratorPass(torch.nn.Module):
    """The attacker's share of a generator update as one forward pass, for DDP to wrap.

    ``DistributedDataParallel`` averages the gradients of what its ``forward`` computed; the
    update encodes, draws the latents and decodes (twice with a diversity term), so all of it
    happens here. Returns the posterior, the latents, the output and, for ``second_draw``, the
    second draw's latents and output.
    """

    def __init__(self, attacker: Attacker) -> None:
        super().__init__()
        self.attacker = attacker

    def forward(
        self, real: torch.Tensor, generator: torch.Generator, second_draw: bool
    ) -> tuple[Encoding, tuple[torch.Tensor, torch.Tensor], AttackOutput, Any]:
        """Encode ``real``, draw from the posterior and decode (once more if asked)."""
        attacker = self.attacker
        encoding = attacker.encode(real)
        latents = attacker.sample_latents(encoding.posterior, "posterior", 1.0, generator)
        output = attacker.decode(encoding, real, *latents)
        other = None
        if second_draw:
            others = attacker.sample_latents(encoding.posterior, "posterior", 1.0, generator)
            other = (others, attacker.decode(encoding, real, *others))
        return encoding, latents, output, other


class AttackSteps:
    """One critic round and one generator update of section 3.2, for any trainer that runs them.

    The attacker trainer alternates them against a frozen f_seg; the hardening trainer
    (:mod:`.harden_trainer`) interleaves them with f_seg's own updates. ``seg``'s weights get
    no gradient here only if the caller froze them: the generator's loss backpropagates through
    f_seg to the image.

    With several processes (``world``) each rank draws its share of the global batch and
    ``DistributedDataParallel`` averages the critic's and the generator's gradients. The
    critic's gradient penalty differentiates the critic with ``torch.autograd.grad``, which DDP
    does not see; it is taken through the unwrapped critic inside the same loss, so its part of
    the parameters' gradients arrives in the one ``backward`` that DDP averages.
    """

    def __init__(self, config: AttackTrainingConfig, world: World | None = None) -> None:
        self.config = config
        self.world = world = world or current_world()
        self.batch = world.local_batch(config.batch_size)
        self._wrapped: dict[int, torch.nn.Module] = {}

    def _parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module``'s DDP wrapper (made on first use; ``module`` itself in one process).

        The generator is wrapped as its :class:`GeneratorPass`; an attack mode that leaves a
        decoder out leaves its parameters without gradients, which DDP is told to expect.
        """
        key = id(module)
        if key not in self._wrapped:
            if isinstance(module, Attacker):
                unused = module.config.mode != "dv"
                self._wrapped[key] = self.world.wrap(GeneratorPass(module), unused)
            else:
                self._wrapped[key] = self.world.wrap(module)
        return self._wrapped[key]

    def train_critic(
        self,
        attacker: Attacker,
        critic: Critic,
        optimizer: torch.optim.Optimizer,
        bank: SliceBank,
        rng: np.random.Generator,
        generator: torch.Generator,
        device: torch.device,
    ) -> float:
        """Train the critic ``critic_steps`` times (eq. 3); return its last Wasserstein estimate."""
        cfg = self.config
        critic.train()
        parallel = self._parallel(critic)
        estimate = 0.0
        for _ in range(cfg.critic_steps):
            real = bank.sample(self.batch, rng).to(device)
            with autocast(device, cfg.precision):
                with torch.no_grad():
                    fake = attacker(real, generator)[0].image.float()
                loss = losses.critic_loss(*_score(parallel, real, fake)).float()
            estimate = -float(loss.detach())
            if cfg.gradient_penalty > 0:  # in float32: a second derivative
                penalty = losses.gradient_penalty(critic, real, fake, generator)
                loss = loss + cfg.gradient_penalty * penalty
            check_step({"critic": loss}, "loss", self.world)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            check_gradients(critic.parameters(), "critic")
            optimizer.step()
            if cfg.gradient_penalty == 0:
                with torch.no_grad():
                    for parameter in critic.parameters():
                        parameter.clamp_(-cfg.clip, cfg.clip)
        return estimate

    def train_generator(
        self,
        attacker: Attacker,
        critic: Critic,
        optimizer: torch.optim.Optimizer,
        seg: SegmentationModel,
        bank: SliceBank,
        rng: np.random.Generator,
        generator: torch.Generator,
        device: torch.device,
    ) -> dict[str, float]:
        """One generator update on eq. 6 (+ KL, + diversity); return the loss terms."""
        real = bank.sample(self.batch, rng).to(device)
        with autocast(device, self.config.precision):
            terms, xent = self._generator_terms(attacker, critic, seg, real, generator)
        terms = {name: value.float() for name, value in terms.items()}
        total = sum(terms.values())
        check_step(terms, "loss", self.world)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        check_gradients(attacker.parameters(), "generator")
        optimizer.step()
        values = {name: float(value.detach()) for name, value in terms.items()}
        values["total"] = float(total.detach())
        values["masked_xent"] = float(xent.detach().float().mean())
        return values

    def _generator_terms(
        self,
        attacker: Attacker,
        critic: Critic,
        seg: SegmentationModel,
        real: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The terms of the generator's loss on ``real``, and the masked cross-entropy."""
        cfg = self.config
        with torch.no_grad():
            s0 = torch.softmax(seg.logits(real), dim=1)
        encoding, (z_d, z_v), output, other = self._parallel(attacker)(
            real, generator, cfg.diversity_weight > 0
        )
        posterior = encoding.posterior
        reference = losses.eq5_reference(s0, output.displacement, cfg.reference, cfg.eq5)
        logits_dv = seg.logits(output.image)
        xent = losses.masked_cross_entropy(reference, logits_dv, cfg.eq5)
        if cfg.per_organ:
            xi_term = losses.organ_xi_loss(
                *losses.organ_cross_entropy(reference, logits_dv, eq5=cfg.eq5), cfg.xi
            )
        else:
            xi_term = losses.xi_loss(xent, cfg.xi)
        critic.eval()  # the generator is scored, not the critic trained: no batch statistics
        for parameter in critic.parameters():
            parameter.requires_grad_(False)
        terms = {
            "adversarial": losses.generator_adversarial_loss(*_score(critic, real, output.image)),
            "xi": xi_term,
            "displacement": losses.displacement_penalty(output.displacement, cfg.lambda_d),
            "intensity": losses.intensity_penalty(output.intensity, cfg.lambda_v),
            "kl": cfg.kl_weight * losses.kl_divergence(posterior),
        }
        if other is not None:
            terms["diversity"] = -cfg.diversity_weight * self.diversity((z_d, z_v), output, *other)
        for parameter in critic.parameters():
            parameter.requires_grad_(True)
        return terms, xent

    def diversity(
        self,
        latents: tuple[torch.Tensor, torch.Tensor],
        output: AttackOutput,
        other_latents: tuple[torch.Tensor, torch.Tensor],
        other: AttackOutput,
    ) -> torch.Tensor:
        """The diversity of a second posterior draw against the first, D's plus V's.

        A field the mode switches off is zero for both draws and adds nothing.
        """
        cfg = self.config
        z_d, z_v = other_latents
        return losses.diversity(
            output.displacement, other.displacement, latents[0], z_d, cfg.diversity_cap_d
        ) + losses.diversity(
            output.intensity, other.intensity, latents[1], z_v, cfg.diversity_cap_v
        )

    @torch.no_grad()
    def progress(
        self, attacker: Attacker, seg: SegmentationModel, images: torch.Tensor, step: int
    ) -> AttackProgress:
        """The attack's effect on ``images`` (posterior means): Dice drop per organ and p."""
        attacker.eval()
        encoding = attacker.encode(images)
        z_d, z_v = attacker.sample_latents(encoding.posterior, "mean")
        output = attacker.decode(encoding, images, z_d, z_v)
        logits = seg.logits(images)
        s_dv = class_map(seg.logits(output.image))
        moved = output.displacement if self.config.reference == "warped" else None
        drop = dice_drop(seg.spec.label_map, class_map(logits), s_dv, moved, logits.shape[1])
        p = float((output.image - images).abs().mean())
        return AttackProgress(step, drop, overall_mean(drop), p)


class AttackTrainer(StoppableTrainer):
    """Trains an :class:`Attacker` against a frozen segmentation model; see the module docstring.

    Parameters
    ----------
    out_dir
        Checkpoint folder to write.
    seg_model
        f_seg, the model under attack (frozen here).
    volumes
        Training scans (labels are not needed).
    attacker_config, critic_config, config
        Architectures and settings.
    resume
        Continue from the checkpoint ``out_dir`` holds (which must exist, with the same
        architectures, f_seg and settings but for those in :data:`RESUME_FREE`).
    overwrite
        Replace the checkpoint ``out_dir`` holds (its other files are kept). Without
        ``resume`` or ``overwrite``, a folder holding a checkpoint is refused.
    provenance
        Extra facts to record (e.g. the command line and the data).
    init_from
        An attacker checkpoint to start from (fine-tuning it against ``seg_model``) instead of
        random weights; its architecture replaces ``attacker_config``. The critic starts fresh.
        Its record of the model it was trained against is not checked: adapting it is the point.
    world
        The processes of the run (default: those :func:`~.distributed.init_world` joined):
        each rank draws its slices from its share of the volumes and its share of the global
        ``batch_size``; rank 0 writes the checkpoint.

    Raises
    ------
    InvalidInputError, CheckpointError, ResourceError
        Before any work: unusable settings or output folder, a checkpoint in the way (or none
        to resume, or one trained otherwise), or a run that needs more memory than is free.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        seg_model: SegmentationModel,
        volumes: Sequence[Volume],
        attacker_config: AttackerConfig | None = None,
        critic_config: CriticConfig | None = None,
        config: AttackTrainingConfig | None = None,
        resume: bool = False,
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
        init_from: str | os.PathLike[str] | None = None,
        world: World | None = None,
    ) -> None:
        if not volumes:
            raise InvalidInputError("No training volumes given.")
        self.seg_model = seg_model.freeze()
        self.volumes = list(volumes)
        self.init_weights: dict[str, torch.Tensor] | None = None
        if init_from is not None and not resume:
            from .attacker_io import load_attacker

            initial = load_attacker(init_from)
            attacker_config = initial.attacker.config
            self.init_weights = {k: v.clone() for k, v in initial.attacker.state_dict().items()}
            provenance = {
                **(provenance or {}),
                "init": {
                    "from": str(init_from),
                    "weights_sha256": weights_sha256(init_from),
                    "trained_against": initial.config.get("target", {}).get("name"),
                },
            }
        self.attacker_config = attacker = attacker_config or AttackerConfig()
        self.config = cfg = config or AttackTrainingConfig()
        self.world = world = world or current_world()
        local_batch = world.local_batch(cfg.batch_size)
        self.rank_volumes = world.share(self.volumes)
        if critic_config is None and resume:
            critic_config = self._saved_critic(out_dir)
        self.critic_config = critic = critic_config or DEFAULT_CRITIC
        if not critic.per_sample and cfg.gradient_penalty > 0:
            raise InvalidInputError(
                "A batch-norm critic mixes the images whose gradients the gradient penalty "
                "takes one by one; use critic norm 'layer' or 'none' with a gradient penalty."
            )
        if cfg.crop_size % attacker.stride:
            raise InvalidInputError(
                f"Crop size {cfg.crop_size} must be a multiple of the attacker's stride "
                f"{attacker.stride} (2 ** (depth - 1)); try "
                f"{max(1, round(cfg.crop_size / attacker.stride)) * attacker.stride}."
            )
        if cfg.crop_size < critic.min_size:
            raise InvalidInputError(
                f"Crop size {cfg.crop_size} is below the critic's minimum {critic.min_size} "
                f"(2 ** depth, depth {critic.depth})."
            )
        self.out_dir = check_out_dir(out_dir, resume, overwrite)
        self.resume = resume
        self.overwrite = overwrite
        self.provenance = dict(provenance or {})
        if resume:
            self._check_resume()
        device = world.device(cfg.device)
        target = seg_model.network.config if isinstance(seg_model.network, UNet) else None
        seg_parameters = sum(p.numel() for p in seg_model.network.parameters()) * FLOAT_BYTES
        check_run_memory(
            slices_bytes(self.rank_volumes, seg_model.spec.pixel_spacing, cfg.crop_size, 4),
            attack_training_bytes(
                attacker, critic, target, local_batch, cfg.crop_size, cfg.diversity_weight > 0
            )
            + seg_parameters,
            device,
            f"Training an attacker ({attacker.base_channels} base channels) on "
            f"{local_batch} crops of {cfg.crop_size} pixels",
        )

    @staticmethod
    def _saved_critic(out_dir: str | os.PathLike[str]) -> CriticConfig | None:
        """The critic a checkpoint to resume records (its norm included), if it can be read.

        A folder that cannot be read is left to the checks that follow, which say why.
        """
        try:
            config = read_config(out_dir, ATTACKER_KIND)
            return attacker_architectures(out_dir, config)[1]
        except (CheckpointError, OSError):
            return None

    def _check_resume(self) -> None:
        """Refuse, in one line, a checkpoint that this run cannot continue."""
        config = read_config(self.out_dir, ATTACKER_KIND)
        check_resumable(
            self.out_dir,
            config,
            attacker_architectures(self.out_dir, config),
            (self.attacker_config, self.critic_config, self.config),
            self.seg_model,
        )

    def run(self) -> Iterator[TrainingEvent]:
        """Train, yielding events; the last one is always :class:`TrainingFinished`.

        A step whose losses or gradients are NaN or infinite ends the run before the optimizer
        applies it: nothing more is saved, and ``TrainingFinished.reason`` says which step and
        which checkpoint was kept.
        """
        cfg, world = self.config, self.world
        device = world.device(cfg.device)
        seg = self.seg_model.to(device)
        torch.manual_seed(cfg.seed)
        layout = memory_format(cfg.channels_last)
        attacker = Attacker(self.attacker_config).to(device, memory_format=layout)
        critic = Critic(self.critic_config).to(device, memory_format=layout)

        def rmsprop(params: Any) -> torch.optim.Optimizer:
            return torch.optim.RMSprop(
                params, lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps
            )

        opt_g, opt_c = rmsprop(attacker.parameters()), rmsprop(critic.parameters())
        state: dict[str, Any] = {"step": 0, "seconds": 0.0, "saved_step": None}
        if self.resume:
            state.update(self._restore(attacker, critic, opt_g, opt_c, device))
            state["saved_step"] = state["step"]
        elif self.init_weights is not None:
            attacker.load_state_dict(self.init_weights, strict=True)
        bank = SliceBank(self.rank_volumes, seg, cfg.crop_size)
        monitor = bank.fixed(16).to(device)  # rank 0's share with several processes
        parameters = sum(p.numel() for p in attacker.parameters())
        yield TrainingStarted(cfg.steps, state["step"], str(device), parameters)
        rng = world.numpy_rng(cfg.seed, state["step"])
        generator = world.torch_generator(cfg.seed * 7919 + state["step"])
        started = time.perf_counter() - state["seconds"]
        seg_before = {k: v.detach().clone() for k, v in seg.network.state_dict().items()}
        steps = AttackSteps(cfg, world)
        stopped = False
        while state["step"] < cfg.steps:
            if world.any(self.stop_requested):  # every rank stops after the same step
                stopped = True
                break
            tick = time.perf_counter()
            attacker.train()
            critic.train()
            try:
                wasserstein = steps.train_critic(
                    attacker, critic, opt_c, bank, rng, generator, device
                )
                values = steps.train_generator(
                    attacker, critic, opt_g, seg, bank, rng, generator, device
                )
            except Diverged as error:
                reason = divergence_reason(state["step"] + 1, str(error), state["saved_step"])
                path = self.out_dir if state["saved_step"] is not None else None
                yield TrainingFinished(state["step"], True, path, path, {}, reason)
                return
            values["critic"] = -wasserstein
            values["wasserstein"] = wasserstein
            state["step"] += 1
            yield StepCompleted(state["step"], cfg.steps, 0, values, time.perf_counter() - tick)
            if state["step"] % cfg.monitor_every == 0 or state["step"] == cfg.steps:
                yield steps.progress(attacker, seg, monitor, state["step"])
            if state["step"] % cfg.checkpoint_every == 0:
                state["seconds"] = time.perf_counter() - started
                path = self._save(attacker, critic, opt_g, opt_c, state, str(device))
                yield CheckpointSaved(state["step"], path, "last")
        if any(not torch.equal(v, seg.network.state_dict()[k]) for k, v in seg_before.items()):
            raise RuntimeError("f_seg changed during attacker training; this is a bug.")
        if state["saved_step"] != state["step"]:
            state["seconds"] = time.perf_counter() - started
            path = self._save(attacker, critic, opt_g, opt_c, state, str(device))
            yield CheckpointSaved(state["step"], path, "last")
        world.barrier()  # every rank returns once the checkpoint is written
        yield TrainingFinished(state["step"], stopped, self.out_dir, self.out_dir, {})

    def _save(
        self,
        attacker: Attacker,
        critic: Critic,
        opt_g: torch.optim.Optimizer,
        opt_c: torch.optim.Optimizer,
        state: dict[str, Any],
        device: str,
    ) -> Path:
        if not self.world.is_main:
            state["saved_step"] = state["step"]
            return self.out_dir
        tensors_g, meta_g = optimizer_tensors(opt_g, "optimizer_g")
        tensors_c, meta_c = optimizer_tensors(opt_c, "optimizer_c")
        extra = {f"critic/{k}": v for k, v in critic.state_dict().items()}
        extra.update(tensors_g)
        extra.update(tensors_c)
        training = {
            **self.provenance,
            "settings": self.config.to_dict(),
            **self.world.facts(self.config.batch_size),
            "step": state["step"],
            **environment_facts(device, state["seconds"]),
            "resume": {"optimizer_g": meta_g, "optimizer_c": meta_c},
        }
        path = save_attacker(
            self.out_dir,
            attacker,
            self.seg_model,
            self.config,
            training,
            critic_config=self.critic_config,
            extra_tensors=extra,
        )
        state["saved_step"] = state["step"]
        return path

    def _restore(
        self,
        attacker: Attacker,
        critic: Critic,
        opt_g: torch.optim.Optimizer,
        opt_c: torch.optim.Optimizer,
        device: torch.device,
    ) -> dict[str, Any]:
        config, tensors = load_attacker_state(self.out_dir, self.attacker_config)
        critic_state = {k[7:]: v for k, v in tensors.items() if k.startswith("critic/")}
        try:
            attacker.load_state_dict(
                {k[9:]: v for k, v in tensors.items() if k.startswith("attacker/")}
            )
            critic.load_state_dict(critic_state)
        except RuntimeError as error:
            raise CheckpointError(
                f"{self.out_dir}: its weights do not fit the attacker and critic of this run "
                f"({str(error).splitlines()[0]}); train into a new folder."
            ) from error
        moved = {k: v.to(device) for k, v in tensors.items()}
        try:
            resume = config["training"]["resume"]
            restore_optimizer(opt_g, moved, resume["optimizer_g"], "optimizer_g")
            restore_optimizer(opt_c, moved, resume["optimizer_c"], "optimizer_c")
            return {
                "step": check_integer(config["training"]["step"], "step", low=0),
                "seconds": check_number(config["training"]["seconds"], "seconds", low=0.0),
            }
        except (KeyError, TypeError, ValueError, CheckpointError) as error:
            raise CheckpointError(
                f"{self.out_dir}: holds no usable resume state ({error}); train into a new folder."
            ) from error


def _score(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's scores of ``real`` and ``fake``, in one pass (shared batch statistics)."""
    scores = critic(torch.cat([real, fake]))
    return scores[: real.shape[0]], scores[real.shape[0] :]


__all__ = [
    "ATTACKER_KIND",
    "RESUME_FREE",
    "AttackSteps",
    "AttackTrainer",
    "AttackTrainingConfig",
    "SliceBank",
]
