"""An attacker's record holds the full spec of its f_seg; a model fed otherwise is refused."""

import dataclasses
import json

import pytest
import torch

from napari_advseg.cli import main
from napari_advseg.data.normalization import Normalization
from napari_advseg.errors import CheckpointError
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.segmentation import SegmentationModel
from napari_advseg.training.attack_trainer import AttackTrainer, AttackTrainingConfig
from napari_advseg.training.attacker_io import load_attacker, save_attacker
from napari_advseg.training.events import TrainingFinished

from .conftest import blob_volume

TINY = AttackerConfig(latent_dim_d=3, latent_dim_v=2, base_channels=4, depth=3, output_stride=2)


@pytest.fixture
def saved(tmp_path, tiny_unet):
    network, spec = tiny_unet
    seg = SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"})
    torch.manual_seed(0)
    folder = save_attacker(
        tmp_path / "att", Attacker(TINY), seg, AttackTrainingConfig(xi=1.5), {"step": 1}
    )
    return folder, network, spec


def test_the_record_holds_the_spec_and_the_weights_hash(saved):
    folder, _, spec = saved
    target = json.loads((folder / "config.json").read_text())["target"]
    assert target["spec"] == spec.to_dict() and target["weights_sha256"] == "abc"


@pytest.mark.parametrize(
    "change, said",
    [
        ({"pixel_spacing": (1.5, 1.5)}, "pixel spacing 3x3 mm vs 1.5x1.5 mm"),
        (
            {"normalization": Normalization((-175.0, 250.0), "window")},
            "normalisation per-subject z-score",
        ),
        ({"input_multiple": 32}, "input multiple"),
        ({"orientation": "ras"}, "orientation radiological vs ras"),
    ],
)
def test_a_model_fed_otherwise_is_refused_unless_forced(saved, change, said):
    folder, network, spec = saved
    loaded = load_attacker(folder)
    other = SegmentationModel(network, dataclasses.replace(spec, **change), "other")
    with pytest.raises(CheckpointError) as raised:
        loaded.check_target(other)
    message = str(raised.value)
    assert said in message and "\n" not in message and "--init" in message
    assert "forced" in loaded.check_target(other, force=True)


def test_the_same_feeding_with_other_weights_is_a_transfer_warning(saved):
    folder, network, spec = saved
    loaded = load_attacker(folder)
    assert (
        loaded.check_target(SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"}))
        is None
    )
    other = SegmentationModel(network, spec, "other", {"weights_sha256": "def"})
    assert "transfer attack" in loaded.check_target(other)


def test_a_version_1_record_compares_what_it_holds(saved):
    folder, network, spec = saved
    config = json.loads((folder / "config.json").read_text())
    del config["target"]["spec"]
    config["format_version"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_attacker(folder)
    same = SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"})
    assert loaded.check_target(same) is None
    finer = SegmentationModel(network, dataclasses.replace(spec, pixel_spacing=(1.5, 1.5)), "x")
    with pytest.raises(CheckpointError, match="pixel spacing"):
        loaded.check_target(finer)


def test_generate_refuses_a_mismatched_attacker_in_one_line(saved, tmp_path, capsys):
    """The shipped attacker against a user model described at 1.5 mm: exit 2, one line."""
    folder, network, spec = saved
    from napari_advseg.segmentation import save_unet

    fine = save_unet(
        tmp_path / "fine", network, dataclasses.replace(spec, pixel_spacing=(1.5, 1.5))
    )
    from .conftest import save_pair

    image, _ = save_pair(tmp_path / "data", blob_volume(shape=(2, 40, 48), spacing=(1.5,) * 3))
    argv = ["generate", "--image", str(image), "--out", str(tmp_path / "out")]
    argv += ["--model", str(fine), "--attacker", str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fed differently" in err[0], err
    assert main([*argv, "--force-attacker"]) == 0
    assert "forced" in capsys.readouterr().err


def test_init_starts_from_an_attacker_and_skips_the_record_check(saved, tmp_path):
    folder, network, spec = saved
    other = SegmentationModel(network, dataclasses.replace(spec, pixel_spacing=(1.5, 1.5)), "x")
    start = dict(load_attacker(folder).attacker.named_parameters())
    trainer = AttackTrainer(
        tmp_path / "warm",
        other,
        [blob_volume(shape=(3, 48, 48), spacing=(1.5,) * 3)],
        AttackerConfig(latent_dim_d=8),  # replaced by the initial attacker's architecture
        config=AttackTrainingConfig(steps=1, batch_size=2, crop_size=32, learning_rate=1e-12),
        init_from=folder,
    )
    assert trainer.attacker_config == TINY
    events = list(trainer.run())
    assert isinstance(events[-1], TrainingFinished)
    warm = load_attacker(tmp_path / "warm")
    weights = dict(warm.attacker.named_parameters())
    for key, value in start.items():  # one step at lr 1e-12 leaves the weights as given
        torch.testing.assert_close(weights[key], value, atol=1e-6, rtol=0)
    assert warm.config["training"]["init"]["from"] == str(folder)
    assert warm.check_target(other) is None  # the new record names the new model
