"""Hardening f_seg against its own attacker: adversarial fine-tuning as a min-max game.

The paper's future work, and what AdvChain (Chen et al. 2022) does with such generators: f_seg
is fine-tuned on a mix of clean slices and attacked ones, whose labels are moved by D as the
evaluation moves them, while the attacker keeps training (critic and generator, section 3.2)
against the current f_seg. The schedule, in steps:

- ``warmup_steps`` attacker-only steps first (for a fresh attacker; 0 when it starts from one
  that already breaks the model, ``init_attacker``);
- then ``steps`` f_seg steps; before every ``attacker_every``-th of them, one attacker step
  (``critic_steps`` critic updates, then one generator update, with f_seg frozen for it).

Each f_seg batch holds ``batch_size`` labelled patches, of which ``attacked_fraction`` are
replaced by the attacker's I_DV (a posterior draw, no gradient to the attacker) with their labels
moved by D. Adam at a constant ``learning_rate`` trains f_seg (batch norm in training mode for
its steps, in eval mode whenever it is attacked or scored).

The output folder is the hardened model (a U-Net checkpoint, or a fine-tuned copy of a user's
network: :mod:`napari_advseg.finetuned`), with ``attacker/`` (the co-trained attacker, targeting
the hardened model) and ``last/`` (everything a resumed run needs, written atomically as one
folder). Robustness is not measured here: a model hardened against one attacker may look robust
to that attacker only; train a fresh one against it (``advseg sweep``) to measure it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.volume import Volume
from ..errors import CheckpointError, InvalidInputError
from ..evaluation.metrics import overall_mean
from ..finetuned import load_model_folder, save_model, trainable_network
from ..nets.attacker import Attacker, AttackerConfig
from ..nets.critic import Critic, CriticConfig
from ..nets.unet import UNet
from ..segmentation import SegmentationModel
from ..validation import check_integer, check_number
from . import losses
from .attack_settings import RESUME_FREE as ATTACK_RESUME_FREE
from .attack_settings import AttackTrainingConfig
from .attack_trainer import DEFAULT_CRITIC, AttackSteps
from .attacker_io import save_attacker
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
    ValidationCompleted,
)
from .harden_card import CARD_MARK, CARD_NAME, hardening_card
from .harden_settings import RESUME_FREE, HardenConfig
from .memory import (
    FLOAT_BYTES,
    attack_training_bytes,
    check_run_memory,
    slices_bytes,
    unet_training_bytes,
)
from .patch_loader import PatchBatches, batch_stream
from .precision import autocast, memory_format
from .seg_trainer import PatchSource, evaluate_dice, soft_dice_loss, training_batch
from .slice_bank import SliceBank

LAST_DIR = "last"
ATTACKER_DIR = "attacker"


@dataclass
class _Game:
    """The players of a hardening run and their optimizers."""

    network: nn.Module
    current: SegmentationModel
    training: SegmentationModel  # the same network, through DDP with several processes
    attacker: Attacker
    critic: Critic
    opt_seg: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    opt_c: torch.optim.Optimizer


class HardenTrainer(StoppableTrainer):
    """Fine-tunes a segmentation model against its attacker; see the module docstring.

    Parameters
    ----------
    out_dir
        The hardened model's folder (with ``attacker/`` and ``last/`` inside).
    seg_model
        The model to harden: the built-in U-Net or any trainable network. It is not changed:
        a copy of its network is trained.
    train, val
        Labelled training volumes; validation volumes (optional) whose clean Dice is measured
        before hardening and at each checkpoint.
    config, attack_config
        The hardening schedule, and the attacker's settings (xi, lambdas, learning rate,
        critic steps, crops...; its ``steps`` is ignored). Its ``precision`` and
        ``channels_last`` apply to f_seg's steps too.
    attacker_config, critic_config
        Architectures of a fresh attacker and of the critic.
    init_attacker
        An attacker folder to start from (the one that broke the model, typically); it must
        have been trained against a model fed as ``seg_model`` is.
    train_weights
        Relative sampling weight of each training volume in f_seg's batches (default: equal).
    resume, overwrite, provenance
        As in the other trainers.
    world
        The processes of the run (default: those :func:`~.distributed.init_world` joined):
        each rank trains on its share of the volumes and of both global batches (f_seg's and
        the attacker's); DDP averages every player's gradients; rank 0 writes.

    Raises
    ------
    InvalidInputError, CheckpointError, ResourceError
        Before any work, in one line.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        seg_model: SegmentationModel,
        train: Sequence[Volume],
        val: Sequence[Volume] = (),
        config: HardenConfig | None = None,
        attack_config: AttackTrainingConfig | None = None,
        attacker_config: AttackerConfig | None = None,
        critic_config: CriticConfig | None = None,
        init_attacker: str | os.PathLike[str] | None = None,
        train_weights: Sequence[float] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
        world: World | None = None,
    ) -> None:
        if not train:
            raise InvalidInputError("No training volumes given.")
        if train_weights is not None and (
            len(train_weights) != len(train)
            or sum(check_number(w, "sampling weight", low=0.0) for w in train_weights) <= 0
        ):
            raise InvalidInputError(
                "Give one non-negative sampling weight per training volume, not all zero."
            )
        self.train_weights = None if train_weights is None else list(train_weights)
        self.base = seg_model
        self.train_volumes = list(train)
        self.val_volumes = list(val)
        self.config = cfg = config or HardenConfig()
        self.attack_config = attack_config or AttackTrainingConfig()
        self.world = world = world or current_world()
        self.local_batch = world.local_batch(cfg.batch_size)
        local_attack_batch = world.local_batch(self.attack_config.batch_size, "the attack's batch")
        self.rank_volumes = world.share(self.train_volumes)  # this rank's share, and weights
        self.rank_weights = world.share(self.train_weights)
        self.provenance = dict(provenance or {})
        self.init_weights: dict[str, torch.Tensor] | None = None
        if init_attacker is not None and not resume:
            from .attacker_io import load_attacker

            initial = load_attacker(init_attacker)
            warning = initial.check_target(seg_model)
            attacker_config = initial.attacker.config
            self.init_weights = {k: v.clone() for k, v in initial.attacker.state_dict().items()}
            self.provenance["init_attacker"] = {
                "from": str(init_attacker),
                "weights_sha256": weights_sha256(init_attacker),
                "trained_against": initial.config.get("target", {}).get("name"),
                "warning": warning,
            }
        self.attacker_config = attacker = attacker_config or AttackerConfig()
        self.critic_config = critic = critic_config or DEFAULT_CRITIC
        if not critic.per_sample and self.attack_config.gradient_penalty > 0:
            raise InvalidInputError(
                "A batch-norm critic mixes the images whose gradients the gradient penalty "
                "takes one by one; use critic norm 'layer' or 'none' with a gradient penalty."
            )
        multiple = int(np.lcm(attacker.stride, seg_model.spec.input_multiple))
        for size, what in ((cfg.patch_size, "Patch size"), (self.attack_config.crop_size, "Crop")):
            if size % multiple:
                raise InvalidInputError(
                    f"{what} {size} must be a multiple of {multiple} (the attacker's stride "
                    f"{attacker.stride} and the model's input multiple "
                    f"{seg_model.spec.input_multiple}); try "
                    f"{max(1, round(size / multiple)) * multiple}."
                )
        if self.attack_config.crop_size < critic.min_size:
            raise InvalidInputError(
                f"Crop size {self.attack_config.crop_size} is below the critic's minimum "
                f"{critic.min_size} (2 ** depth, depth {critic.depth})."
            )
        self.out_dir = check_out_dir(out_dir, resume, overwrite, Path(out_dir) / LAST_DIR)
        self.resume = resume
        self.overwrite = overwrite
        if resume:
            self._check_resume()
        device = world.device(cfg.device)
        network = seg_model.network
        seg_parameters = sum(p.numel() for p in network.parameters())
        if isinstance(network, UNet):
            seg_bytes = unet_training_bytes(network.config, self.local_batch, cfg.patch_size)
        else:  # weights, gradients and Adam's two moments; activations are the network's own
            seg_bytes = seg_parameters * FLOAT_BYTES * 4
        acfg = self.attack_config
        target = network.config if isinstance(network, UNet) else None
        check_run_memory(
            slices_bytes(self.rank_volumes, seg_model.spec.pixel_spacing, cfg.patch_size, 12),
            seg_bytes
            + attack_training_bytes(
                attacker,
                critic,
                target,
                local_attack_batch,
                acfg.crop_size,
                acfg.diversity_weight > 0,
            ),
            device,
            f"Hardening {seg_model.name} on {self.local_batch} patches of {cfg.patch_size} pixels",
        )

    # -- resume ------------------------------------------------------------------------------

    def _check_resume(self) -> None:
        """Refuse, in one line, a ``last/`` state that this run cannot continue."""
        folder = self.out_dir / LAST_DIR
        training = read_config(folder).get("training", {})
        try:
            saved = HardenConfig.from_dict(training["harden"])
            saved_attack = AttackTrainingConfig.from_dict(training["attack"])
            saved_attacker = AttackerConfig.from_dict(training["attacker"])
            saved_critic = CriticConfig.from_dict(training["critic"])
            base_sha = training["base_model"]["weights_sha256"]
        except (KeyError, TypeError, InvalidInputError) as error:
            raise CheckpointError(
                f"{folder}: holds no usable hardening state ({error}); harden into a new folder."
            ) from error
        differences = [
            f"{name} {getattr(saved, name)!r} -> {getattr(self.config, name)!r}"
            for name in self.config.to_dict()
            if name not in RESUME_FREE and getattr(saved, name) != getattr(self.config, name)
        ]
        differences += [
            f"attack {name} {value!r} -> {getattr(self.attack_config, name)!r}"
            for name, value in saved_attack.to_dict().items()
            if name not in ATTACK_RESUME_FREE and value != getattr(self.attack_config, name)
        ]
        if self.init_weights is None and saved_attacker != self.attacker_config:
            self.attacker_config = saved_attacker  # resume needs no --init-attacker
        if saved_critic != self.critic_config:
            differences.append(f"critic {saved_critic} -> {self.critic_config}")
        if differences:
            raise CheckpointError(
                f"{folder}: cannot resume with other settings ({'; '.join(differences)}); use "
                "the settings it was hardened with (its config.json), or harden into a new folder."
            )
        actual = self.base.config.get("weights_sha256")
        if base_sha and actual and base_sha != actual:
            raise CheckpointError(
                f"{folder}: hardens another model than {self.base.name!r}; resume with the "
                "model it started from."
            )

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Iterator[TrainingEvent]:
        """Harden, yielding events; the last one is always :class:`TrainingFinished`."""
        cfg, world = self.config, self.world
        device = world.device(cfg.device)
        torch.manual_seed(cfg.seed)
        for volume in (*self.train_volumes, *self.val_volumes):
            volume.require_labels()
            self.base.spec.label_map.check_values(volume.labels, volume.name)
        game, state = self._setup(device)
        spec = self.base.spec
        source = PatchSource.from_volumes(
            self.rank_volumes, spec, cfg.patch_size, self.rank_weights
        )
        bank = SliceBank(self.rank_volumes, self.base.to(device), self.attack_config.crop_size)
        self.base.to("cpu")
        monitor = bank.fixed(16).to(device)  # rank 0's share with several processes
        steps = AttackSteps(self.attack_config, world)
        num_parameters = sum(p.numel() for p in game.network.parameters())
        num_parameters += sum(p.numel() for p in game.attacker.parameters())
        yield TrainingStarted(cfg.total_steps, state["step"], str(device), num_parameters)
        if state["step"] == 0 and self.val_volumes:
            dice = evaluate_dice(game.current, self.val_volumes, world)
            state["clean_dice_before"] = dice
            yield ValidationCompleted(0, 0, dice, overall_mean(dice) or 0.0, False)
        rng = world.numpy_rng(cfg.seed, state["step"])
        generator = world.torch_generator(cfg.seed * 7919 + state["step"])
        patches = None  # without workers, f_seg's patches come from ``rng`` and ``generator``
        if cfg.workers:
            stream = PatchBatches(
                partial(training_batch, source, cfg),
                self.local_batch,
                world,
                cfg.seed,
                cfg.seed * 7919 + state["step"],
                state["step"],
            )
            patches = batch_stream(stream, cfg.workers, device)
        started = time.perf_counter() - state["seconds"]
        stopped = False
        while state["step"] < cfg.total_steps:
            if world.any(self.stop_requested):  # every rank stops after the same step
                stopped = True
                break
            tick = time.perf_counter()
            index = state["step"]  # 0-based index of this step
            values: dict[str, float] = {}
            try:
                seg_step = index >= cfg.warmup_steps
                if cfg.trains_attacker and (
                    not seg_step or (index - cfg.warmup_steps) % cfg.attacker_every == 0
                ):
                    values.update(self._attacker_step(game, steps, bank, rng, generator, device))
                if seg_step:
                    batch = (
                        next(patches)
                        if patches is not None
                        else training_batch(source, cfg, self.local_batch, rng, generator)
                    )
                    values.update(self._seg_step(game, batch, generator, device))
            except Diverged as error:
                reason = divergence_reason(index + 1, str(error), state["saved_step"])
                path = self.out_dir if state["saved_step"] is not None else None
                yield TrainingFinished(index, True, path, path, {}, reason)
                return
            state["step"] += 1
            step = state["step"]
            yield StepCompleted(step, cfg.total_steps, 0, values, time.perf_counter() - tick)
            if cfg.trains_attacker and (step % cfg.monitor_every == 0 or step == cfg.total_steps):
                yield self._progress(game, monitor, step)
            if step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
                state["seconds"] = time.perf_counter() - started
                yield from self._checkpoint(game, state, device)
        if state["saved_step"] != state["step"]:
            state["seconds"] = time.perf_counter() - started
            yield from self._checkpoint(game, state, device)
        if world.is_main:
            self._write_card(state, device)
        world.barrier()  # every rank returns once the last checkpoint is written
        yield TrainingFinished(
            state["step"],
            stopped,
            self.out_dir,
            self.out_dir / LAST_DIR,
            dict(state.get("clean_dice") or {}),
        )

    def _setup(self, device: torch.device) -> tuple[_Game, dict[str, Any]]:
        """The players (restored on resume) and the run's state."""
        state: dict[str, Any] = {"step": 0, "seconds": 0.0, "saved_step": None}
        tensors: dict[str, torch.Tensor] = {}
        training: Mapping[str, Any] = {}
        if self.resume:  # the state is read once: weights, tensors and the record together
            model, tensors = load_model_folder(self.out_dir / LAST_DIR)
            training = model.config.get("training", {})
            network = model.network
            for parameter in network.parameters():
                parameter.requires_grad_(True)
        else:
            network = trainable_network(self.base)
        network.to(device)
        current = SegmentationModel(
            network,
            self.base.spec,
            self.out_dir.name,
            {"weights_sha256": None},
            check_outputs=self.base.check_outputs,
        )
        layout = memory_format(self.attack_config.channels_last)
        if self.attack_config.channels_last:  # asked for: a user's network may not take it
            network.to(memory_format=layout)
        attacker = Attacker(self.attacker_config).to(device, memory_format=layout)
        critic = Critic(self.critic_config).to(device, memory_format=layout)
        acfg = self.attack_config

        def rmsprop(params: Any) -> torch.optim.Optimizer:
            return torch.optim.RMSprop(
                params, lr=acfg.learning_rate, alpha=acfg.rmsprop_alpha, eps=acfg.rmsprop_eps
            )

        training_view = SegmentationModel(
            self.world.wrap(network),
            self.base.spec,
            self.out_dir.name,
            check_outputs=self.base.check_outputs,
        )
        game = _Game(
            network,
            current,
            training_view,
            attacker,
            critic,
            torch.optim.Adam(network.parameters(), lr=self.config.learning_rate),
            rmsprop(attacker.parameters()),
            rmsprop(critic.parameters()),
        )
        if self.resume:
            state.update(self._restore(game, tensors, training, device))
            state["saved_step"] = state["step"]
        elif self.init_weights is not None:
            attacker.load_state_dict(self.init_weights, strict=True)
        return game, state

    def _attacker_step(
        self,
        game: _Game,
        steps: AttackSteps,
        bank: SliceBank,
        rng: np.random.Generator,
        generator: torch.Generator,
        device: torch.device,
    ) -> dict[str, float]:
        """One critic round and one generator update against the current, frozen f_seg."""
        game.network.eval()
        for parameter in game.network.parameters():
            parameter.requires_grad_(False)
        try:
            game.attacker.train()
            wasserstein = steps.train_critic(
                game.attacker, game.critic, game.opt_c, bank, rng, generator, device
            )
            values = steps.train_generator(
                game.attacker, game.critic, game.opt_g, game.current, bank, rng, generator, device
            )
        finally:
            for parameter in game.network.parameters():
                parameter.requires_grad_(True)
        values["wasserstein"] = wasserstein
        return {f"attacker_{name}": value for name, value in values.items()}

    def _seg_step(
        self,
        game: _Game,
        patches: tuple[torch.Tensor, torch.Tensor],
        generator: torch.Generator,
        device: torch.device,
    ) -> dict[str, float]:
        """One f_seg update on clean and attacked ``patches`` (labels moved by D)."""
        cfg, batch = self.config, self.local_batch
        images, labels = (tensor.to(device, non_blocking=True) for tensor in patches)
        attacked = round(batch * cfg.attacked_fraction)
        if attacked:
            game.attacker.eval()
            with torch.no_grad():
                output, _ = game.attacker(images[:attacked], generator)
            moved = losses.move_labels(
                labels[:attacked], output.displacement, game.current.spec.label_map.num_classes
            )
            images = torch.cat([output.image, images[attacked:]])
            labels = torch.cat([moved, labels[attacked:]])
        game.network.train()
        with autocast(device, self.attack_config.precision):
            logits = game.training.logits(images).float()
        pixel_loss = F.cross_entropy(logits, labels, reduction="none").mean(dim=(1, 2))
        terms = {"seg_cross_entropy": pixel_loss.mean()}
        if cfg.dice_weight > 0:
            terms["seg_dice"] = cfg.dice_weight * soft_dice_loss(logits, labels)
        total = sum(terms.values())
        check_step(terms, "loss", self.world)
        game.opt_seg.zero_grad(set_to_none=True)
        total.backward()
        check_gradients(game.network.parameters(), "f_seg")
        game.opt_seg.step()
        game.network.eval()
        self.world.sync_buffers(game.network)  # attacked and scored as rank 0's f_seg
        values = {name: float(value.detach()) for name, value in terms.items()}
        if attacked:
            values["seg_attacked"] = float(pixel_loss[:attacked].mean().detach())
        if attacked < batch:
            values["seg_clean"] = float(pixel_loss[attacked:].mean().detach())
        return values

    def _progress(self, game: _Game, monitor: torch.Tensor, step: int) -> AttackProgress:
        """The attack's effect on the current f_seg, on the fixed monitoring batch."""
        game.network.eval()
        return AttackSteps(self.attack_config).progress(game.attacker, game.current, monitor, step)

    # -- saving ------------------------------------------------------------------------------

    def _training_record(self, state: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        return {
            **self.provenance,
            "hardened": True,
            "base_model": {
                "name": self.base.name,
                "kind": self.base.config.get("kind"),
                "path": self.base.config.get("path"),
                "weights_sha256": self.base.config.get("weights_sha256"),
            },
            "harden": self.config.to_dict(),
            **self.world.facts(self.config.batch_size),
            "attack": self.attack_config.to_dict(),
            "attacker": self.attacker_config.to_dict(),
            "critic": self.critic_config.to_dict(),
            "step": state["step"],
            "attacker_steps": self.config.attacker_steps(state["step"]),
            "train_subjects": [volume.name for volume in self.train_volumes],
            "val_subjects": [volume.name for volume in self.val_volumes],
            "clean_dice_before": state.get("clean_dice_before"),
            "clean_dice": state.get("clean_dice"),
            **environment_facts(device, state["seconds"]),
        }

    def _checkpoint(
        self, game: _Game, state: dict[str, Any], device: torch.device
    ) -> Iterator[TrainingEvent]:
        """Validate; write ``last/`` (one atomic folder), then the model and its attacker."""
        if self.val_volumes:
            game.network.eval()
            dice = evaluate_dice(game.current, self.val_volumes, self.world)
            state["clean_dice"] = dice
            yield ValidationCompleted(state["step"], 0, dice, overall_mean(dice) or 0.0, False)
        if not self.world.is_main:
            state["saved_step"] = state["step"]
            return
        record = self._training_record(state, device)
        extra: dict[str, torch.Tensor] = {}
        metas = {}
        for name, optimizer in (
            ("optimizer", game.opt_seg),
            ("optimizer_g", game.opt_g),
            ("optimizer_c", game.opt_c),
        ):
            tensors, metas[name] = optimizer_tensors(optimizer, name)
            extra.update(tensors)
        extra.update({f"attacker/{k}": v for k, v in game.attacker.state_dict().items()})
        extra.update({f"critic/{k}": v for k, v in game.critic.state_dict().items()})
        last = save_model(
            self.out_dir / LAST_DIR,
            game.network,
            self.base,
            {**record, "resume": metas},
            extra,
        )
        yield CheckpointSaved(state["step"], last, "last")
        save_model(self.out_dir, game.network, self.base, record)
        game.current.config["weights_sha256"] = weights_sha256(self.out_dir)
        yield CheckpointSaved(state["step"], self.out_dir, "best")
        if self.config.trains_attacker:  # a clean fine-tuning control has no attacker to ship
            attacker_record = {
                "hardening_attacker": True,
                "command": self.provenance.get("command"),
                "data": [volume.name for volume in self.train_volumes],
                "step": self.config.attacker_steps(state["step"]),
                **environment_facts(device, state["seconds"]),
            }
            save_attacker(
                self.out_dir / ATTACKER_DIR,
                game.attacker,
                game.current,
                self.attack_config,
                attacker_record,
                critic_config=self.critic_config,
            )
        state["saved_step"] = state["step"]

    def _restore(
        self,
        game: _Game,
        tensors: Mapping[str, torch.Tensor],
        training: Mapping[str, Any],
        device: torch.device,
    ) -> dict[str, Any]:
        folder = self.out_dir / LAST_DIR
        try:
            game.attacker.load_state_dict(
                {k[9:]: v for k, v in tensors.items() if k.startswith("attacker/")}
            )
            game.critic.load_state_dict(
                {k[7:]: v for k, v in tensors.items() if k.startswith("critic/")}
            )
            moved = {k: v.to(device) for k, v in tensors.items()}
            for name, optimizer in (
                ("optimizer", game.opt_seg),
                ("optimizer_g", game.opt_g),
                ("optimizer_c", game.opt_c),
            ):
                restore_optimizer(optimizer, moved, training["resume"][name], name)
            return {
                "step": check_integer(training["step"], "step", low=0),
                "seconds": check_number(training["seconds"], "seconds", low=0.0),
                "clean_dice_before": training.get("clean_dice_before"),
                "clean_dice": training.get("clean_dice"),
            }
        except (KeyError, TypeError, ValueError, RuntimeError, InvalidInputError) as error:
            raise CheckpointError(
                f"{folder}: holds no usable hardening state ({str(error).splitlines()[0]}); "
                "harden into a new folder."
            ) from error

    def _write_card(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Write the model card, unless the folder holds one that this module did not write."""
        path = self.out_dir / CARD_NAME
        if path.exists():
            try:
                ours = path.read_text().startswith(CARD_MARK)
            except (OSError, UnicodeDecodeError):
                ours = False
            if not ours:
                return
        text = hardening_card(self._training_record(state, device))
        temporary = path.with_name(f".{CARD_NAME}.tmp")
        temporary.write_text(text)
        os.replace(temporary, path)


__all__ = ["RESUME_FREE", "HardenConfig", "HardenTrainer"]
