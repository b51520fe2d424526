"""Trainers refuse before any work what would lose a checkpoint, a NaN or more than the memory."""

import math

import pytest
import torch

from napari_advseg import validation
from napari_advseg.errors import CheckpointError, InvalidInputError, ResourceError
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.nets.critic import CriticConfig
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import SegmentationModel, load_unet
from napari_advseg.training import losses, seg_trainer
from napari_advseg.training.attack_trainer import AttackTrainer, AttackTrainingConfig
from napari_advseg.training.attacker_io import load_attacker_state
from napari_advseg.training.checkpoint import load_checkpoint
from napari_advseg.training.events import CheckpointSaved, StepCompleted, TrainingFinished
from napari_advseg.training.seg_trainer import SegTrainer, SegTrainingConfig, make_spec

from .conftest import blob_volume

TINY = UNetConfig(base_channels=4, depth=3)
SMALL = AttackerConfig(latent_dim_d=2, latent_dim_v=2, base_channels=4, depth=3, output_stride=2)
NAN = float("nan")


def seg_quick(**overrides) -> SegTrainingConfig:
    settings = dict(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=16, device="cpu")
    settings.update(overrides)
    return SegTrainingConfig(**settings)


def attack_quick(**overrides) -> AttackTrainingConfig:
    settings = dict(
        steps=2,
        batch_size=2,
        crop_size=32,
        critic_steps=1,
        monitor_every=1,
        checkpoint_every=1,
        device="cpu",
    )
    settings.update(overrides)
    return AttackTrainingConfig(**settings)


@pytest.fixture
def organ_everywhere():
    """A random tiny U-Net whose argmax is organ 1 everywhere: every slice goes to the bank."""
    torch.manual_seed(0)
    network = UNet(TINY)
    with torch.no_grad():
        network.head.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0, 0.0]))
    return SegmentationModel(network, make_spec(TINY), "tiny", {"weights_sha256": "abc"})


def seg(out, **kwargs) -> SegTrainer:
    config = kwargs.pop("config", seg_quick())
    return SegTrainer(out, [blob_volume()], [], TINY, config=config, **kwargs)


def attack(out, model, **kwargs) -> AttackTrainer:
    config = kwargs.pop("config", attack_quick())
    critic = kwargs.pop("critic", None)
    return AttackTrainer(out, model, [blob_volume()], SMALL, critic, config, **kwargs)


# Defect 1: a folder holding a checkpoint is never replaced silently, nor its other files lost.


def test_seg_trainer_refuses_a_checkpoint_folder_and_overwrite_keeps_the_model_card(tmp_path):
    out = tmp_path / "unet"
    list(seg(out).run())
    (out / "MODEL_CARD.md").write_text("# card")
    with pytest.raises(CheckpointError, match="use --resume to continue it, or --overwrite") as e:
        seg(out)
    assert "\n" not in str(e.value) and str(out) in str(e.value)
    before = (out / "weights.safetensors").read_bytes()
    list(seg(out, overwrite=True, config=seg_quick(seed=1)).run())
    assert (out / "MODEL_CARD.md").read_text() == "# card"
    assert (out / "weights.safetensors").read_bytes() != before


def test_a_stopped_overwrite_leaves_no_model_of_the_replaced_run(tmp_path):
    out = tmp_path / "unet"
    list(seg(out).run())
    trainer = seg(out, overwrite=True, config=seg_quick(epochs=5, seed=1))
    for event in trainer.run():
        if isinstance(event, StepCompleted):
            trainer.stop()  # after step 1, before the first validation
    assert isinstance(event, TrainingFinished) and event.stopped and event.step == 1
    assert load_unet(out)[0].config["training"]["step"] == 1
    assert load_unet(out / "last")[0].config["training"]["step"] == 1


def test_attack_trainer_refuses_a_checkpoint_folder(tmp_path, organ_everywhere):
    out = tmp_path / "att"
    list(attack(out, organ_everywhere).run())
    (out / "MODEL_CARD.md").write_text("# card")
    with pytest.raises(CheckpointError, match="use --resume to continue it, or --overwrite"):
        attack(out, organ_everywhere)
    events = list(attack(out, organ_everywhere, overwrite=True).run())
    assert events[-1].step == 2
    assert (out / "MODEL_CARD.md").read_text() == "# card"


def test_output_folder_problems_are_refused_in_the_constructor(tmp_path, organ_everywhere):
    afile = tmp_path / "file"
    afile.write_text("x")
    for out in (afile, afile / "under"):
        with pytest.raises(InvalidInputError):
            seg(out)
        with pytest.raises(InvalidInputError):
            attack(out, organ_everywhere)
    with pytest.raises(InvalidInputError, match="not both"):
        seg(tmp_path / "x", resume=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing was created


# Defect 7: --resume needs a checkpoint, and the same settings.


def test_resume_without_a_checkpoint_is_an_error(tmp_path, organ_everywhere):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(CheckpointError, match="no checkpoint to resume"):
            seg(out, resume=True)
        with pytest.raises(CheckpointError, match="no checkpoint to resume"):
            attack(out, organ_everywhere, resume=True)


def test_resume_with_another_critic_or_settings_is_one_line(tmp_path, organ_everywhere):
    out = tmp_path / "att"
    list(attack(out, organ_everywhere).run())  # weight clipping
    with pytest.raises(CheckpointError, match="cannot resume with other settings") as error:
        attack(out, organ_everywhere, resume=True, config=attack_quick(gradient_penalty=10.0))
    message = str(error.value)
    assert "\n" not in message and "gradient_penalty 0.0 -> 10.0" in message
    with pytest.raises(CheckpointError, match=r"xi 2\.0 -> 3\.0"):
        attack(out, organ_everywhere, resume=True, config=attack_quick(xi=3.0))
    other_critic = CriticConfig(base_channels=8, depth=3)
    with pytest.raises(CheckpointError, match="critic"):
        attack(out, organ_everywhere, resume=True, critic=other_critic)
    organ_everywhere.config["weights_sha256"] = "def"
    with pytest.raises(CheckpointError, match="same segmentation model"):
        attack(out, organ_everywhere, resume=True)
    organ_everywhere.config["weights_sha256"] = "abc"
    resumed = attack(out, organ_everywhere, resume=True, config=attack_quick(steps=3))
    assert [e.step for e in resumed.run() if isinstance(e, StepCompleted)] == [3]


def test_resume_of_an_exported_attacker_is_refused(tmp_path, organ_everywhere):
    from napari_advseg.training.attacker_io import export_attacker

    out = tmp_path / "att"
    list(attack(out, organ_everywhere).run())
    shipped = export_attacker(out, tmp_path / "shipped")
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        attack(shipped, organ_everywhere, resume=True)


# Defect 4: numbers are checked, memory is estimated, and a diverging run keeps its checkpoint.

BAD_SETTINGS = [
    (AttackTrainingConfig, {"xi": NAN}),
    (AttackTrainingConfig, {"xi": -1.0}),
    (AttackTrainingConfig, {"learning_rate": -1e-4}),
    (AttackTrainingConfig, {"learning_rate": NAN}),
    (AttackTrainingConfig, {"gradient_penalty": -10.0}),
    (AttackTrainingConfig, {"clip": 0.0}),
    (AttackTrainingConfig, {"lambda_v": math.inf}),
    (AttackTrainingConfig, {"diversity_cap_v": 0.0}),
    (AttackTrainingConfig, {"rmsprop_alpha": 1.5}),
    (AttackTrainingConfig, {"steps": 0}),
    (AttackTrainingConfig, {"batch_size": 2.5}),
    (AttackTrainingConfig, {"seed": -1}),
    (SegTrainingConfig, {"learning_rate": -1e-3}),
    (SegTrainingConfig, {"learning_rate": NAN}),
    (SegTrainingConfig, {"dice_weight": NAN}),
    (SegTrainingConfig, {"foreground_fraction": 2.0}),
    (SegTrainingConfig, {"patch_size": 0}),
    (SegTrainingConfig, {"epochs": True}),
    (UNetConfig, {"base_channels": 0}),
    (UNetConfig, {"depth": 9}),
    (UNetConfig, {"num_classes": 1}),
    (AttackerConfig, {"latent_dim_d": 0}),
    (AttackerConfig, {"latent_dim_v": 100_000}),
    (AttackerConfig, {"depth": 1, "output_stride": 1}),
    (CriticConfig, {"depth": 0}),
    (CriticConfig, {"base_channels": -1}),
]


@pytest.mark.parametrize(("kind", "settings"), BAD_SETTINGS)
def test_every_number_is_checked(kind, settings):
    with pytest.raises(InvalidInputError) as error:
        kind(**settings)
    assert "\n" not in str(error.value)


def test_temperature_must_be_finite_and_not_negative():
    attacker = Attacker(SMALL).eval()
    posterior = attacker.encode(torch.zeros(1, 1, 16, 16)).posterior
    for temperature in (NAN, -1.0, math.inf):
        with pytest.raises(InvalidInputError, match="temperature"):
            attacker.sample_latents(posterior, "prior", temperature)


def test_sizes_the_network_cannot_take_are_refused(tmp_path, organ_everywhere):
    with pytest.raises(InvalidInputError, match="multiple of the U-Net's stride 4"):
        seg(tmp_path / "u", config=seg_quick(patch_size=18))
    with pytest.raises(InvalidInputError, match="multiple of the attacker's stride 4"):
        attack(tmp_path / "a", organ_everywhere, config=attack_quick(crop_size=30))
    with pytest.raises(InvalidInputError, match="critic's minimum 16"):
        attack(tmp_path / "a", organ_everywhere, config=attack_quick(crop_size=8))


def test_runs_larger_than_memory_are_refused_before_allocating(tmp_path, organ_everywhere):
    huge = UNetConfig(base_channels=100_000, depth=4)
    with pytest.raises(ResourceError, match="memory"):
        SegTrainer(tmp_path / "u", [blob_volume()], [], huge, config=seg_quick(patch_size=16))
    with pytest.raises(ResourceError, match="memory"):
        seg(tmp_path / "u", config=seg_quick(patch_size=100_000))
    with pytest.raises(ResourceError, match="memory") as error:
        attack(tmp_path / "a", organ_everywhere, config=attack_quick(crop_size=100_000))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "u").exists() and not (tmp_path / "a").exists()


def test_the_defaults_fit_a_small_machine(tmp_path, organ_everywhere, monkeypatch):
    """The estimates are estimates, not inflated: default runs fit in 4 GB."""
    monkeypatch.setattr(validation, "available_memory", lambda: 4 * 10**9)
    SegTrainer(tmp_path / "u", [blob_volume()], [], config=SegTrainingConfig(device="cpu"))
    AttackTrainer(
        tmp_path / "a", organ_everywhere, [blob_volume()], config=AttackTrainingConfig(device="cpu")
    )


def nan_after(calls: int, function):
    """``function`` for the first ``calls`` calls, then NaN."""
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        result = function(*args, **kwargs)
        return result * NAN if count[0] > calls else result

    return wrapped


def test_a_diverging_seg_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(seg_trainer, "soft_dice_loss", nan_after(2, seg_trainer.soft_dice_loss))
    out = tmp_path / "unet"
    events = list(seg(out, config=seg_quick(dice_weight=1.0, epochs=3)).run())
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.stopped
    assert finished.step == 2
    assert finished.reason.startswith("losses became non-finite at step 3 (loss dice)")
    assert "kept the checkpoint of step 2" in finished.reason
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [2, 2]
    for folder in (out, out / "last"):
        _, tensors = load_checkpoint(folder)
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
    assert load_unet(out / "last")[0].config["training"]["step"] == 2


def test_a_diverging_attack_run_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, organ_everywhere
):
    monkeypatch.setattr(losses, "displacement_penalty", nan_after(2, losses.displacement_penalty))
    out = tmp_path / "att"
    events = list(attack(out, organ_everywhere, config=attack_quick(steps=5)).run())
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.stopped and finished.step == 2
    assert "non-finite at step 3 (loss displacement)" in finished.reason
    assert "kept the checkpoint of step 2" in finished.reason
    config, tensors = load_attacker_state(out)
    assert config["training"]["step"] == 2
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_a_run_diverging_before_any_checkpoint_says_so(tmp_path, monkeypatch, organ_everywhere):
    monkeypatch.setattr(losses, "displacement_penalty", nan_after(0, losses.displacement_penalty))
    out = tmp_path / "att"
    finished = list(attack(out, organ_everywhere).run())[-1]
    assert finished.stopped and finished.step == 0 and finished.last_path is None
    assert "no checkpoint had been saved" in finished.reason
    assert not (out / "config.json").exists()
