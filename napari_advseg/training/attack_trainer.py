"""Training the attacker (section 3.2): generator against critic and frozen f_seg, as events.

Each step trains the critic ``critic_steps`` times on fresh batches (eq. 3, with weight clipping
or a gradient penalty), then the generator once on eq. 6 (+ the KL term). f_seg is frozen: eval
mode, so its batch-norm statistics never move, and no gradient to its weights. The output folder
holds the attacker (what the app and the evaluation load) together with the critic and both
optimizers' states for ``resume``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..class_map import class_map
from ..data.slices import pad_to_multiple
from ..data.volume import Volume
from ..errors import InvalidInputError
from ..evaluation.metrics import overall_mean
from ..inference import to_model_grid
from ..nets.attacker import Attacker, AttackerConfig, AttackOutput, Encoding
from ..nets.critic import Critic, CriticConfig
from ..segmentation import SegmentationModel
from . import losses
from .attacker_io import ATTACKER_KIND, load_attacker_state, save_attacker
from .base import StoppableTrainer, environment_facts
from .checkpoint import optimizer_tensors, restore_optimizer
from .device import select_device
from .events import (
    AttackProgress,
    CheckpointSaved,
    StepCompleted,
    TrainingEvent,
    TrainingFinished,
    TrainingStarted,
)


@dataclass(frozen=True)
class AttackTrainingConfig:
    """Settings of an attacker training run (defaults: the paper where it says, ours elsewhere).

    Attributes
    ----------
    xi
        Target masked cross-entropy of eq. 4, nats per organ pixel.
    reference
        ``"warped"`` (anatomy-consistent: S0 warped by D) or ``"original"`` (eq. 4 literally).
    lambda_d, lambda_v
        Weights of eq. 2 (paper: 0.1 and 0.01).
    kl_weight
        Weight of KL(q(z|I0) || N(0, I)); 0 is the paper-exact eq. 6.
    diversity_weight, diversity_cap_d, diversity_cap_v
        Our option (0: off, the paper): reward the decoders for giving different D and V to
        different latent draws (:func:`losses.diversity`), capped at ``cap_d`` pixels and
        ``cap_v`` intensity units per unit of z.
    per_organ
        Our option: eq. 4 with one target per organ (:func:`losses.organ_xi_loss`) instead of
        one for the mask of all organs (the paper, default).
    learning_rate, rmsprop_alpha, rmsprop_eps
        RMSProp for generator and critic (paper: 1e-4, decay 0.9, eps 1e-10).
    critic_steps
        Critic updates per generator update (WGAN: 5).
    clip
        Critic weight clipping bound (WGAN: 0.01); used when ``gradient_penalty`` is 0.
    gradient_penalty
        Weight of the WGAN-GP penalty instead of clipping (0: clipping).
    steps, batch_size, crop_size
        Generator steps, slices per batch, square crop of the model-grid slices (pixels).
    monitor_every, checkpoint_every
        Steps between progress measurements and between checkpoints.
    """

    xi: float = 2.0
    reference: str = "warped"
    lambda_d: float = 0.1
    lambda_v: float = 0.01
    kl_weight: float = 0.01
    diversity_weight: float = 0.0
    diversity_cap_d: float = 0.5
    diversity_cap_v: float = 0.05
    per_organ: bool = False
    learning_rate: float = 1e-4
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-10
    critic_steps: int = 5
    clip: float = 0.01
    gradient_penalty: float = 0.0
    steps: int = 1000
    batch_size: int = 8
    crop_size: int = 128
    monitor_every: int = 25
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.reference not in losses.REFERENCES:
            raise InvalidInputError(f"reference must be one of {losses.REFERENCES}.")
        weights = (self.lambda_d, self.lambda_v, self.kl_weight, self.diversity_weight)
        if self.xi < 0 or min(weights) < 0:
            raise InvalidInputError(
                "xi, lambda_D, lambda_V, the KL weight and the diversity weight must be >= 0."
            )
        if min(self.steps, self.batch_size, self.crop_size, self.critic_steps) < 1:
            raise InvalidInputError("steps, batch size, crop size and critic steps must be >= 1.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class SliceBank:
    """Normalised axial slices at f_seg's grid, padded to at least one crop, for training.

    Only slices on which f_seg finds an organ (at least ``min_organ_pixels``) are kept: the
    attack targets organs, and eq. 5's mask is empty elsewhere. No labels are needed.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        seg_model: SegmentationModel,
        crop_size: int,
        min_organ_pixels: int = 20,
    ) -> None:
        self.crop_size = crop_size
        self.slices: list[torch.Tensor] = []
        for volume in volumes:
            grid = to_model_grid(volume, seg_model.spec, pad=False)
            images = grid.images
            organ = _organ_pixels(seg_model, images)
            keep = images[organ >= min_organ_pixels]
            fill = float(images.min())
            for image in keep:
                self.slices.append(_pad_to_at_least(image, crop_size, fill))
        if not self.slices:
            raise InvalidInputError(
                "No slice of the training volumes shows an organ to f_seg; the attacker has "
                "nothing to attack. Check the scans and the segmentation model."
            )

    def __len__(self) -> int:
        return len(self.slices)

    def sample(self, count: int, rng: np.random.Generator) -> torch.Tensor:
        """A (count, 1, crop, crop) batch of random slices and random crops."""
        batch = []
        for index in rng.integers(0, len(self.slices), count):
            image = self.slices[index]
            y = int(rng.integers(0, image.shape[-2] - self.crop_size + 1))
            x = int(rng.integers(0, image.shape[-1] - self.crop_size + 1))
            batch.append(image[:, y : y + self.crop_size, x : x + self.crop_size])
        return torch.stack(batch)

    def fixed(self, count: int) -> torch.Tensor:
        """A deterministic batch of evenly spaced slices (centre crops) to monitor progress."""
        indices = np.linspace(0, len(self.slices) - 1, min(count, len(self.slices))).astype(int)
        batch = []
        for index in indices:
            image = self.slices[index]
            y = (image.shape[-2] - self.crop_size) // 2
            x = (image.shape[-1] - self.crop_size) // 2
            batch.append(image[:, y : y + self.crop_size, x : x + self.crop_size])
        return torch.stack(batch)


@torch.inference_mode()
def _organ_pixels(seg_model: SegmentationModel, images: torch.Tensor) -> torch.Tensor:
    counts = []
    for start in range(0, images.shape[0], 16):
        batch, crop = pad_to_multiple(images[start : start + 16], seg_model.spec.input_multiple)
        prediction = class_map(crop(seg_model(batch.to(seg_model.device))))
        counts.append((prediction > 0).sum(dim=(1, 2)).cpu())
    return torch.cat(counts)


def _pad_to_at_least(image: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not (pad_h or pad_w):
        return image
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return F.pad(image, pads, value=fill)


def segment_logits(seg_model: SegmentationModel, images: torch.Tensor) -> torch.Tensor:
    """f_seg logits for a batch whose size may not be a multiple of its stride."""
    padded, crop = pad_to_multiple(images, seg_model.spec.input_multiple)
    return crop(seg_model(padded))


def dice_drop(
    seg_model: SegmentationModel,
    s0_labels: torch.Tensor,
    reference: torch.Tensor,
    sdv_labels: torch.Tensor,
) -> dict[str, float | None]:
    """Per organ: relative decrease (%) of batch Dice, S0 vs S_DV, both against ``reference``."""
    result: dict[str, float | None] = {}
    for label in seg_model.spec.label_map:
        ref = reference == label.id
        dice = []
        for prediction in (s0_labels, sdv_labels):
            pred = prediction == label.id
            total = int(pred.sum() + ref.sum())
            dice.append(None if total == 0 else 2.0 * int((pred & ref).sum()) / total)
        before, after = dice
        result[label.name] = None if not before else 100.0 * (before - (after or 0.0)) / before
    return result


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
        Continue from ``out_dir`` if it holds a checkpoint.
    provenance
        Extra facts to record (e.g. the command line and the data).
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
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        if not volumes:
            raise InvalidInputError("No training volumes given.")
        self.out_dir = Path(out_dir)
        self.seg_model = seg_model.freeze()
        self.volumes = list(volumes)
        self.attacker_config = attacker_config or AttackerConfig()
        self.config = config or AttackTrainingConfig()
        self.critic_config = critic_config or CriticConfig(
            norm="none" if self.config.gradient_penalty > 0 else "batch"
        )
        if self.config.crop_size % self.attacker_config.stride:
            raise InvalidInputError(
                f"Crop size {self.config.crop_size} must be a multiple of the attacker's stride "
                f"{self.attacker_config.stride}."
            )
        self.resume = resume
        self.provenance = dict(provenance or {})

    def run(self) -> Iterator[TrainingEvent]:
        """Train, yielding events; the last one is always :class:`TrainingFinished`."""
        cfg = self.config
        device = select_device(cfg.device)
        seg = self.seg_model.to(device)
        bank = SliceBank(self.volumes, seg, cfg.crop_size)
        monitor = bank.fixed(16).to(device)
        torch.manual_seed(cfg.seed)
        attacker = Attacker(self.attacker_config).to(device)
        critic = Critic(self.critic_config).to(device)

        def rmsprop(params: Any) -> torch.optim.Optimizer:
            return torch.optim.RMSprop(
                params, lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps
            )

        opt_g, opt_c = rmsprop(attacker.parameters()), rmsprop(critic.parameters())
        state: dict[str, Any] = {"step": 0, "seconds": 0.0}
        if self.resume and (self.out_dir / "config.json").is_file():
            state.update(self._restore(attacker, critic, opt_g, opt_c, device))
        parameters = sum(p.numel() for p in attacker.parameters())
        yield TrainingStarted(cfg.steps, state["step"], str(device), parameters)
        rng = np.random.default_rng([cfg.seed, state["step"]])
        generator = torch.Generator().manual_seed(cfg.seed * 7919 + state["step"])
        started = time.perf_counter() - state["seconds"]
        seg_before = {k: v.detach().clone() for k, v in seg.network.state_dict().items()}
        stopped = False
        while state["step"] < cfg.steps:
            if self.stop_requested:
                stopped = True
                break
            tick = time.perf_counter()
            attacker.train()
            critic.train()
            wasserstein = self._train_critic(attacker, critic, opt_c, bank, rng, generator, device)
            values = self._train_generator(
                attacker, critic, opt_g, seg, bank, rng, generator, device
            )
            values["critic"] = -wasserstein
            values["wasserstein"] = wasserstein
            state["step"] += 1
            yield StepCompleted(state["step"], cfg.steps, 0, values, time.perf_counter() - tick)
            if state["step"] % cfg.monitor_every == 0 or state["step"] == cfg.steps:
                yield self._progress(attacker, seg, monitor, state["step"])
            if state["step"] % cfg.checkpoint_every == 0:
                state["seconds"] = time.perf_counter() - started
                path = self._save(attacker, critic, opt_g, opt_c, state, str(device))
                yield CheckpointSaved(state["step"], path, "last")
        if any(not torch.equal(v, seg.network.state_dict()[k]) for k, v in seg_before.items()):
            raise RuntimeError("f_seg changed during attacker training; this is a bug.")
        state["seconds"] = time.perf_counter() - started
        path = self._save(attacker, critic, opt_g, opt_c, state, str(device))
        yield CheckpointSaved(state["step"], path, "last")
        yield TrainingFinished(state["step"], stopped, path, path, {})

    def _train_critic(
        self,
        attacker: Attacker,
        critic: Critic,
        optimizer: torch.optim.Optimizer,
        bank: SliceBank,
        rng: np.random.Generator,
        generator: torch.Generator,
        device: torch.device,
    ) -> float:
        cfg = self.config
        estimate = 0.0
        for _ in range(cfg.critic_steps):
            real = bank.sample(cfg.batch_size, rng).to(device)
            with torch.no_grad():
                fake = attacker(real, generator)[0].image
            loss = losses.critic_loss(critic(real), critic(fake))
            estimate = -float(loss.detach())
            if cfg.gradient_penalty > 0:
                loss = loss + cfg.gradient_penalty * losses.gradient_penalty(critic, real, fake)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.gradient_penalty == 0:
                with torch.no_grad():
                    for parameter in critic.parameters():
                        parameter.clamp_(-cfg.clip, cfg.clip)
        return estimate

    def _train_generator(
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
        cfg = self.config
        real = bank.sample(cfg.batch_size, rng).to(device)
        with torch.no_grad():
            s0 = torch.softmax(segment_logits(seg, real), dim=1)
        encoding = attacker.encode(real)
        posterior = encoding.posterior
        z_d, z_v = attacker.sample_latents(posterior, "posterior", 1.0, generator)
        output = attacker.decode(encoding, real, z_d, z_v)
        reference = losses.segmentation_reference(s0, output.displacement, cfg.reference)
        logits_dv = segment_logits(seg, output.image)
        xent = losses.masked_cross_entropy(reference, logits_dv)
        if cfg.per_organ:
            xi_term = losses.organ_xi_loss(
                *losses.organ_cross_entropy(reference, logits_dv), cfg.xi
            )
        else:
            xi_term = losses.xi_loss(xent, cfg.xi)
        for parameter in critic.parameters():
            parameter.requires_grad_(False)
        terms = {
            "adversarial": losses.generator_adversarial_loss(critic(real), critic(output.image)),
            "xi": xi_term,
            "displacement": losses.displacement_penalty(output.displacement, cfg.lambda_d),
            "intensity": losses.intensity_penalty(output.intensity, cfg.lambda_v),
            "kl": cfg.kl_weight * losses.kl_divergence(posterior),
        }
        if cfg.diversity_weight > 0:
            terms["diversity"] = -cfg.diversity_weight * self._diversity(
                attacker, encoding, real, (z_d, z_v), output, generator
            )
        for parameter in critic.parameters():
            parameter.requires_grad_(True)
        total = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        values = {name: float(value.detach()) for name, value in terms.items()}
        values["total"] = float(total.detach())
        values["masked_xent"] = float(xent.detach().mean())
        return values

    def _diversity(
        self,
        attacker: Attacker,
        encoding: Encoding,
        real: torch.Tensor,
        latents: tuple[torch.Tensor, torch.Tensor],
        output: AttackOutput,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The diversity of a second posterior draw against the first, D's plus V's.

        A field the mode switches off is zero for both draws and adds nothing.
        """
        cfg = self.config
        z_d, z_v = attacker.sample_latents(encoding.posterior, "posterior", 1.0, generator)
        other = attacker.decode(encoding, real, z_d, z_v)
        return losses.diversity(
            output.displacement, other.displacement, latents[0], z_d, cfg.diversity_cap_d
        ) + losses.diversity(
            output.intensity, other.intensity, latents[1], z_v, cfg.diversity_cap_v
        )

    @torch.no_grad()
    def _progress(
        self, attacker: Attacker, seg: SegmentationModel, images: torch.Tensor, step: int
    ) -> AttackProgress:
        attacker.eval()
        encoding = attacker.encode(images)
        z_d, z_v = attacker.sample_latents(encoding.posterior, "mean")
        output = attacker.decode(encoding, images, z_d, z_v)
        s0 = torch.softmax(segment_logits(seg, images), dim=1)
        reference = losses.segmentation_reference(s0, output.displacement, self.config.reference)
        s_dv = class_map(segment_logits(seg, output.image))
        drop = dice_drop(seg, class_map(s0), class_map(reference), s_dv)
        p = float((output.image - images).abs().mean())
        return AttackProgress(step, drop, overall_mean(drop), p)

    def _save(
        self,
        attacker: Attacker,
        critic: Critic,
        opt_g: torch.optim.Optimizer,
        opt_c: torch.optim.Optimizer,
        state: Mapping[str, Any],
        device: str,
    ) -> Path:
        tensors_g, meta_g = optimizer_tensors(opt_g, "optimizer_g")
        tensors_c, meta_c = optimizer_tensors(opt_c, "optimizer_c")
        extra = {f"critic/{k}": v for k, v in critic.state_dict().items()}
        extra.update(tensors_g)
        extra.update(tensors_c)
        training = {
            **self.provenance,
            "settings": self.config.to_dict(),
            "step": state["step"],
            **environment_facts(device, state["seconds"]),
            "resume": {"optimizer_g": meta_g, "optimizer_c": meta_c},
        }
        return save_attacker(
            self.out_dir,
            attacker,
            self.seg_model,
            self.config,
            training,
            critic_config=self.critic_config,
            extra_tensors=extra,
        )

    def _restore(
        self,
        attacker: Attacker,
        critic: Critic,
        opt_g: torch.optim.Optimizer,
        opt_c: torch.optim.Optimizer,
        device: torch.device,
    ) -> dict[str, Any]:
        config, tensors = load_attacker_state(self.out_dir, self.attacker_config)
        attacker.load_state_dict(
            {k[9:]: v for k, v in tensors.items() if k.startswith("attacker/")}
        )
        critic_state = {k[7:]: v for k, v in tensors.items() if k.startswith("critic/")}
        if not critic_state:
            raise InvalidInputError(
                f"{self.out_dir}: an exported attacker without critic and optimizer state; "
                "it cannot be resumed. Train into a new folder."
            )
        critic.load_state_dict(critic_state)
        moved = {k: v.to(device) for k, v in tensors.items()}
        resume = config["training"]["resume"]
        restore_optimizer(opt_g, moved, resume["optimizer_g"], "optimizer_g")
        restore_optimizer(opt_c, moved, resume["optimizer_c"], "optimizer_c")
        return {
            "step": int(config["training"]["step"]),
            "seconds": float(config["training"]["seconds"]),
        }


__all__ = ["ATTACKER_KIND", "AttackTrainer", "AttackTrainingConfig", "SliceBank"]
