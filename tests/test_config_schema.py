"""Malformed checkpoint configs end in one CheckpointError line each, never a traceback."""

import copy
import json

import pytest
import torch

from napari_advseg.errors import CheckpointError, ResourceError
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.segmentation import SegmentationModel, load_segmentation_model, save_unet
from napari_advseg.training.attack_trainer import AttackTrainingConfig
from napari_advseg.training.attacker_io import load_attacker, save_attacker

TINY = AttackerConfig(latent_dim_d=3, latent_dim_v=2, base_channels=4, depth=3, output_stride=2)


def edit(config: dict, path: str, value) -> dict:
    """A copy of ``config`` with the entry at dotted ``path`` set (or deleted for ``...``)."""
    config = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return config


UNET_CASES = {
    "spec missing": ("spec", ...),
    "spec a list": ("spec", [3.0]),
    "unknown spec entry": ("spec.spacing", [3, 3]),
    "normalization null": ("spec.normalization", None),
    "normalization without kind": ("spec.normalization.kind", ...),
    "unknown normalization": ("spec.normalization.kind", "minmax"),
    "unknown normalization entry": ("spec.normalization.scale", 2),
    "clip a string": ("spec.normalization.clip_hu", "wide"),
    "clip reversed": ("spec.normalization.clip_hu", [1000, -1000]),
    "clip NaN": ("spec.normalization.clip_hu", [float("nan"), 1000]),
    "architecture a list": ("architecture", [16, 4]),
    "architecture missing": ("architecture", ...),
    "architecture of another name": ("architecture.name", "resnet"),
    "depth a string": ("architecture.depth", "4"),
    "depth fractional": ("architecture.depth", 3.5),
    "depth zero": ("architecture.depth", 0),
    "base channels negative": ("architecture.base_channels", -4),
    "unknown architecture entry": ("architecture.dropout", 0.1),
    "spacing zero and negative": ("spec.pixel_spacing_mm", [0, -3]),
    "spacing of three": ("spec.pixel_spacing_mm", [3, 3, 3]),
    "spacing a string": ("spec.pixel_spacing_mm", "3"),
    "spacing infinite": ("spec.pixel_spacing_mm", [3, float("inf")]),
    "input multiple zero": ("spec.input_multiple", 0),
    "input multiple null": ("spec.input_multiple", None),
    "input multiple fractional": ("spec.input_multiple", 2.5),
    "min size zero": ("spec.min_size", 0),
    "unknown orientation": ("spec.orientation", "lps"),
    "labels a list": ("spec.labels", ["liver"]),
    "labels null": ("spec.labels", None),
    "label name empty": ("spec.labels.1", ""),
    "label channel a word": ("spec.labels.one", "gallbladder"),
    "label channels with a gap": ("spec.labels.7", "gallbladder"),
    "label color of two": ("spec.labels.1", {"name": "pancreas", "color": [1, 2]}),
    "label color 300": ("spec.labels.1", {"name": "pancreas", "color": [300, 0, 0]}),
    "duplicate label names": ("spec.labels.2", "pancreas"),
    "training a list": ("training", []),
}


@pytest.fixture
def unet_folder(tmp_path, tiny_unet):
    network, spec = tiny_unet
    return save_unet(tmp_path / "unet", network, spec, {"step": 1})


@pytest.mark.parametrize("case", UNET_CASES)
def test_malformed_unet_configs(unet_folder, case):
    path, value = UNET_CASES[case]
    config = json.loads((unet_folder / "config.json").read_text())
    (unet_folder / "config.json").write_text(json.dumps(edit(config, path, value)))
    with pytest.raises(CheckpointError) as error:
        load_segmentation_model(unet_folder)
    message = str(error.value)
    assert "\n" not in message and str(unet_folder) in message, message


def test_an_architecture_too_large_for_memory_is_refused_before_allocating(unet_folder):
    config = json.loads((unet_folder / "config.json").read_text())
    (unet_folder / "config.json").write_text(
        json.dumps(edit(config, "architecture.base_channels", 100000))
    )
    # The weights no longer fit: said before the 100000-channel network is built.
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_segmentation_model(unet_folder)


def test_non_finite_weights_are_refused(tmp_path, tiny_unet):
    network, spec = tiny_unet
    with torch.no_grad():
        next(network.parameters())[0].fill_(float("nan"))
    folder = save_unet(tmp_path / "nan", network, spec)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_segmentation_model(folder)


ATTACKER_CASES = {
    "attack missing": ("attack", ...),
    "attack null": ("attack", None),
    "xi missing": ("attack.xi", ...),
    "xi a string": ("attack.xi", "two"),
    "xi NaN": ("attack.xi", float("nan")),
    "xi negative": ("attack.xi", -1.0),
    "unknown reference": ("attack.reference", "both"),
    "unknown eq5 form": ("attack.eq5", "blur"),
    "a setting a list": ("attack.lambda_d", [0.1]),
    "attacker a list": ("attacker", [8, 8]),
    "attacker missing": ("attacker", ...),
    "latent size a string": ("attacker.latent_dim_d", "8"),
    "latent size zero": ("attacker.latent_dim_d", 0),
    "unknown mode": ("attacker.mode", "dvx"),
    "mode a number": ("attacker.mode", 3),
    "output stride 3": ("attacker.output_stride", 3),
    "unknown attacker entry": ("attacker.width", 3),
    "critic a string": ("critic", "batch"),
    "critic norm unknown": ("critic.norm", "instance"),
    "critic without depth": ("critic.depth", ...),
    "target a list": ("target", []),
    "target labels a string": ("target.labels", "liver"),
    "training step a string": ("training.step", "three"),
    "training a list": ("training", [1]),
}


@pytest.fixture
def attacker_folder(tmp_path, tiny_unet):
    from napari_advseg.nets.critic import CriticConfig

    network, spec = tiny_unet
    seg = SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"})
    return save_attacker(
        tmp_path / "att",
        Attacker(TINY),
        seg,
        AttackTrainingConfig(xi=1.5),
        {"step": 3},
        critic_config=CriticConfig(4, 3),
    )


@pytest.mark.parametrize("case", ATTACKER_CASES)
def test_malformed_attacker_configs(attacker_folder, case):
    path, value = ATTACKER_CASES[case]
    config = json.loads((attacker_folder / "config.json").read_text())
    (attacker_folder / "config.json").write_text(json.dumps(edit(config, path, value)))
    with pytest.raises(CheckpointError) as error:
        load_attacker(attacker_folder)
    message = str(error.value)
    assert "\n" not in message and str(attacker_folder) in message, message


def test_well_formed_configs_still_load(unet_folder, attacker_folder):
    assert load_segmentation_model(unet_folder).name == "unet"
    assert load_attacker(attacker_folder).xi == 1.5


def test_resource_error_is_a_checkpoint_loaders_answer_to_a_huge_network(tmp_path, monkeypatch):
    """Weights that fit a network too large for this machine: refused by the memory estimate."""
    from napari_advseg import validation

    monkeypatch.setattr(validation, "available_memory", lambda: 1000)
    torch.manual_seed(0)
    folder = save_attacker(
        tmp_path / "att",
        Attacker(TINY),
        SegmentationModel(torch.nn.Identity(), _spec(), "x"),
        AttackTrainingConfig(),
        {},
    )
    with pytest.raises(ResourceError, match="memory"):
        load_attacker(folder)


def _spec():
    from napari_advseg.segmentation import ModelSpec

    return ModelSpec()
