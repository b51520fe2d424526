"""Attacker checkpoint folders: the generator, what it targets, and how it was trained."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..nets.attacker import Attacker, AttackerConfig
from ..nets.critic import CriticConfig
from ..segmentation import SegmentationModel
from .checkpoint import check_finite, load_checkpoint, save_checkpoint
from .memory import check_weights_fit
from .schema import check_attacker_config

ATTACKER_KIND = "attacker"


def save_attacker(
    folder: str | os.PathLike[str],
    attacker: Attacker,
    target: SegmentationModel,
    settings: Any,
    training: Mapping[str, Any],
    critic_config: Any = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write an attacker checkpoint folder atomically.

    The config records the attacker's architecture (latent sizes, mode), the training settings
    (xi, reference, lambdas, ...), and the target f_seg by name and weights hash.
    """
    config = {
        "kind": ATTACKER_KIND,
        "attacker": attacker.config.to_dict(),
        "critic": None if critic_config is None else critic_config.to_dict(),
        "attack": settings.to_dict() if hasattr(settings, "to_dict") else dict(settings),
        "target": target_description(target),
        "training": dict(training),
    }
    tensors = {f"attacker/{k}": v for k, v in attacker.state_dict().items()}
    tensors.update(extra_tensors or {})
    return save_checkpoint(folder, tensors, config)


def target_description(model: SegmentationModel) -> dict[str, Any]:
    """What identifies f_seg: name, weights hash, and its full spec (how it was fed).

    ``pixel_spacing_mm`` and ``labels`` repeat what the spec says, as version-1 records held
    them (older readers look there).
    """
    return {
        "name": model.name,
        "weights_sha256": model.config.get("weights_sha256"),
        "pixel_spacing_mm": list(model.spec.pixel_spacing),
        "labels": model.spec.label_map.names,
        "spec": model.spec.to_dict(),
    }


def attacker_architectures(
    folder: str | os.PathLike[str], config: Mapping[str, Any]
) -> tuple[AttackerConfig, CriticConfig | None]:
    """Check an attacker checkpoint's config and read its attacker and critic architectures.

    Raises
    ------
    CheckpointError
        One line naming the entry, for a config of the wrong shape or with invalid values.
    """
    checker = check_attacker_config(folder, config)
    attacker = checker.build("attacker", lambda: AttackerConfig.from_dict(config["attacker"]))
    critic = None
    if config.get("critic") is not None:
        critic = checker.build("critic", lambda: CriticConfig.from_dict(config["critic"]))
    checker.build("attack settings", lambda: _check_attack_settings(config["attack"]))
    return attacker, critic


def _check_attack_settings(attack: Mapping[str, Any]) -> None:
    from ..validation import check_number
    from .losses import REFERENCES

    check_number(attack["xi"], "xi", low=0.0)
    if attack.get("reference", "warped") not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {attack['reference']!r}")


def _check_attacker_weights(
    folder: str | os.PathLike[str], config: AttackerConfig, weights: Mapping[str, torch.Tensor]
) -> None:
    """Weights that fit the architecture, finite, and memory for the network, before building."""
    what = f"attacker ({config.base_channels} base channels)"
    check_weights_fit(folder, lambda: Attacker(config), weights, what)
    check_finite(folder, weights)


def load_attacker_state(
    folder: str | os.PathLike[str], expect: AttackerConfig | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and all tensors of an attacker checkpoint (for resuming)."""
    config, tensors = load_checkpoint(folder, kind=ATTACKER_KIND)
    architecture, _ = attacker_architectures(folder, config)
    if expect is not None and architecture != expect:
        raise CheckpointError(
            f"{folder}: attacker {architecture} differs from the requested {expect}; "
            "train into a new folder or use the same settings."
        )
    return config, tensors


@dataclass
class LoadedAttacker:
    """An attacker ready to generate, with its checkpoint config."""

    attacker: Attacker
    config: dict[str, Any]
    name: str

    @property
    def xi(self) -> float:
        """The xi it was trained with."""
        return float(self.config["attack"]["xi"])

    @property
    def mode(self) -> str:
        """``"dv"``, ``"d"`` or ``"v"``."""
        return self.attacker.config.mode

    def spec_differences(self, model: SegmentationModel) -> list[str]:
        """How ``model`` is fed differently from the f_seg this attacker was trained against.

        A version-1 record holds only the spacing and labels; those are compared (and nothing
        is, for the same weights, which were fed as they were then).
        """
        trained = self.config.get("target", {})
        if "spec" in trained:
            from ..model_spec import ModelSpec

            return ModelSpec.from_dict(trained["spec"]).differences(model.spec)
        if trained.get("weights_sha256") and (
            trained["weights_sha256"] == model.config.get("weights_sha256")
        ):
            return []
        found = []
        labels = trained.get("labels")
        if labels and labels != model.spec.label_map.names:
            found.append(f"labels {labels} vs {model.spec.label_map.names}")
        spacing = trained.get("pixel_spacing_mm")
        if spacing and tuple(float(s) for s in spacing) != tuple(model.spec.pixel_spacing):
            found.append(f"pixel spacing {spacing} vs {list(model.spec.pixel_spacing)} mm")
        return found

    def check_target(self, model: SegmentationModel, force: bool = False) -> str | None:
        """Check that ``model`` is fed as this attacker's f_seg was; return a warning or None.

        Raises
        ------
        CheckpointError
            If the model is fed differently (spacing, normalisation, labels, stride or
            orientation), unless ``force``: the attacker's fields would mean something else.
        """
        differences = self.spec_differences(model)
        if differences:
            message = (
                f"Attacker {self.name} was trained against a model fed differently from "
                f"{model.name} ({'; '.join(differences)})"
            )
            if not force:
                raise CheckpointError(
                    f"{message}; train an attacker for this model (train-attack --init "
                    f"{self.name} starts from this one), or force it."
                )
            return f"{message}; forced: expect its fields to fit this model poorly."
        return self.target_mismatch(model)

    def target_mismatch(self, model: SegmentationModel) -> str | None:
        """A warning if ``model`` is not the f_seg this attacker was trained against."""
        trained = self.config.get("target", {})
        expected = trained.get("weights_sha256")
        actual = model.config.get("weights_sha256")
        if expected and actual and expected != actual:
            return (
                f"Attacker {self.name} was trained against {trained.get('name')!r}, not "
                f"{model.name!r}: it still runs (a transfer attack), but expect less damage."
            )
        if trained.get("labels") and trained["labels"] != model.spec.label_map.names:
            return f"Attacker {self.name} was trained for labels {trained['labels']}."
        return None


def load_attacker(folder: str | os.PathLike[str]) -> LoadedAttacker:
    """Load an attacker checkpoint folder for generation (eval mode, no gradients)."""
    config, tensors = load_attacker_state(folder)
    architecture, _ = attacker_architectures(folder, config)
    weights = {k[len("attacker/") :]: v for k, v in tensors.items() if k.startswith("attacker/")}
    _check_attacker_weights(folder, architecture, weights)
    attacker = Attacker(architecture)
    attacker.load_state_dict(weights, strict=True)
    attacker.eval()
    for parameter in attacker.parameters():
        parameter.requires_grad_(False)
    return LoadedAttacker(attacker, config, Path(folder).name)


def export_attacker(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Copy an attacker checkpoint without its critic and optimizer states (to ship it)."""
    config, tensors = load_attacker_state(source)
    config = {k: v for k, v in config.items() if k not in ("format", "format_version")}
    config["training"] = {k: v for k, v in config["training"].items() if k != "resume"}
    weights = {k: v for k, v in tensors.items() if k.startswith("attacker/")}
    return save_checkpoint(destination, weights, config)
