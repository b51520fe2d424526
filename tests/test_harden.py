"""Hardening (adversarial fine-tuning): the schedule, the outputs, resume, the CLI, user networks.

Tiny models and a few steps: the tests assert on files, step counts and weights, never on how
much more robust a model became.
"""

import hashlib
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from napari_advseg.cli import main
from napari_advseg.errors import CheckpointError, InvalidInputError
from napari_advseg.finetuned import FINETUNED_KIND
from napari_advseg.model_spec import save_spec_file
from napari_advseg.nets.attacker import AttackerConfig
from napari_advseg.segmentation import load_segmentation_model, load_unet
from napari_advseg.training.attack_settings import AttackTrainingConfig
from napari_advseg.training.attack_trainer import AttackTrainer
from napari_advseg.training.attacker_io import load_attacker
from napari_advseg.training.events import (
    CheckpointSaved,
    StepCompleted,
    TrainingFinished,
    TrainingStarted,
    ValidationCompleted,
)
from napari_advseg.training.harden_card import CARD_MARK
from napari_advseg.training.harden_trainer import HardenConfig, HardenTrainer

from .conftest import TEST_DATA

PATCH = 32
"""A multiple of the attacker's stride (8) and of the tiny U-Net's input multiple."""
ATTACKER = AttackerConfig(4, 4)


def settings(steps=2, critic_steps=1, **schedule):
    """A tiny hardening schedule and its attacker's settings (as ``advseg harden`` builds them)."""
    config = HardenConfig(
        steps=steps,
        batch_size=2,
        patch_size=PATCH,
        monitor_every=1000,
        checkpoint_every=1000,
        device="cpu",
        **schedule,
    )
    attack = AttackTrainingConfig(
        xi=2.0,
        steps=config.attacker_steps(),
        batch_size=2,
        crop_size=PATCH,
        critic_steps=critic_steps,
        device="cpu",
    )
    return config, attack


def file_bytes(folder):
    """Every file under ``folder`` by relative path, as a hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def optimizer_steps(folder):
    """The step count in each optimizer state that ``folder``/last holds, by optimizer."""
    tensors = load_file(str(folder / "last" / "weights.safetensors"))
    counts = {}
    for name, value in tensors.items():
        parts = name.split("/")
        if parts[0].startswith("optimizer") and parts[-1] == "step":
            counts.setdefault(parts[0], set()).add(int(value.item()))
    return {name: max(values) for name, values in counts.items()}


def differ(a, b):
    """Names of the floating tensors of two state dicts that are not equal."""
    return [k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k])]


@pytest.fixture
def volumes(cohort):
    return [cohort.subject(0), cohort.subject(1)], [cohort.subject(2)]


def test_hardening_runs_end_to_end_and_leaves_the_original_alone(
    trained_seg_dir, seg_model, volumes, tmp_path
):
    before = file_bytes(trained_seg_dir)
    original = {k: v.clone() for k, v in seg_model.network.state_dict().items()}
    out = tmp_path / "hardened"
    config, attack = settings(steps=3)
    trainer = HardenTrainer(out, seg_model, *volumes, config, attack, ATTACKER)
    events = list(trainer.run())
    assert isinstance(events[0], TrainingStarted) and events[0].total_steps == 3
    assert [e.step for e in events if isinstance(e, StepCompleted)] == [1, 2, 3]
    losses = next(e for e in events if isinstance(e, StepCompleted)).losses
    assert {"seg_cross_entropy", "seg_clean", "seg_attacked", "attacker_xi"} <= set(losses)
    assert "attacker_wasserstein" in losses
    validations = [e.step for e in events if isinstance(e, ValidationCompleted)]
    assert validations == [0, 3]  # clean Dice before hardening, and at the checkpoint
    saved = {(e.step, e.role) for e in events if isinstance(e, CheckpointSaved)}
    assert saved == {(3, "last"), (3, "best")}
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and not finished.stopped
    assert finished.best_path == out and finished.last_path == out / "last"

    hardened = load_segmentation_model(out)
    assert differ(hardened.network.state_dict(), original)  # fine-tuned
    assert hardened.spec == seg_model.spec
    assert file_bytes(trained_seg_dir) == before  # the original's files are untouched
    assert not differ(seg_model.network.state_dict(), original)  # and so is the loaded model
    attacker = load_attacker(out / "attacker")
    assert attacker.config["target"]["name"] == "hardened"
    assert attacker.config["target"]["weights_sha256"] == hardened.config["weights_sha256"]
    assert (out / "MODEL_CARD.md").read_text().startswith(CARD_MARK)
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["hardened"] and training["base_model"]["name"] == seg_model.name
    assert training["step"] == 3 and training["attacker_steps"] == 3


def test_the_schedule_calls_each_optimizer_as_configured(seg_model, volumes, tmp_path):
    config, attack = settings(steps=4, critic_steps=2, warmup_steps=1, attacker_every=2)
    assert config.total_steps == 5 and config.attacker_steps() == 3  # 1 warm-up + 2 of 4
    out = tmp_path / "hardened"
    trainer = HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER)
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, StepCompleted)]
    seg_steps = [e.step for e in steps if "seg_cross_entropy" in e.losses]
    attack_steps = [e.step for e in steps if "attacker_xi" in e.losses]
    assert seg_steps == [2, 3, 4, 5]  # none in the warm-up step
    assert attack_steps == [1, 2, 4]  # the warm-up, then before every second model step
    assert optimizer_steps(out) == {
        "optimizer": 4,  # f_seg's Adam
        "optimizer_g": config.attacker_steps(),  # the generator's RMSProp
        "optimizer_c": config.attacker_steps() * attack.critic_steps,  # the critic's
    }


def test_stop_then_resume_continues_to_the_total(seg_model, volumes, tmp_path):
    out = tmp_path / "hardened"
    config, attack = settings(steps=4)
    trainer = HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, StepCompleted) and event.step == 2:
            trainer.stop()
    finished = events[-1]
    assert finished.stopped and finished.step == 2
    assert optimizer_steps(out) == {"optimizer": 2, "optimizer_g": 2, "optimizer_c": 2}
    stopped_weights = load_file(str(out / "last" / "weights.safetensors"))

    resumed = HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER, resume=True)
    game, state = resumed._setup(torch.device("cpu"))  # the players as the run starts them
    assert state["step"] == 2
    weights = {f"model/{k}": v for k, v in game.network.state_dict().items()}
    assert not differ(weights, stopped_weights)  # the model continues from the checkpoint
    attacker = {f"attacker/{k}": v for k, v in game.attacker.state_dict().items()}
    assert not differ(attacker, stopped_weights)
    assert game.opt_seg.state_dict()["state"][0]["step"] == 2  # Adam's moments are restored

    events = list(resumed.run())
    assert events[0].start_step == 2
    assert [e.step for e in events if isinstance(e, StepCompleted)] == [3, 4]
    assert isinstance(events[-1], TrainingFinished) and not events[-1].stopped
    assert events[-1].step == 4
    assert optimizer_steps(out) == {"optimizer": 4, "optimizer_g": 4, "optimizer_c": 4}
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["step"] == 4


def test_resume_with_another_setting_is_refused_in_one_line(seg_model, volumes, tmp_path):
    out = tmp_path / "hardened"
    config, attack = settings(steps=1)
    list(HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER).run())
    changed, _ = settings(steps=3, attacked_fraction=0.25)
    with pytest.raises(CheckpointError, match=r"attacked_fraction 0\.5 -> 0\.25") as error:
        HardenTrainer(out, seg_model, volumes[0], (), changed, attack, ATTACKER, resume=True)
    assert "\n" not in str(error.value)
    longer, _ = settings(steps=3)  # more steps: allowed
    HardenTrainer(out, seg_model, volumes[0], (), longer, attack, ATTACKER, resume=True)


CLI_FAST = [
    "--sample",
    "phantom",
    "--subjects",
    "6",
    "--steps",
    "2",
    "--batch-size",
    "4",
    "--patch-size",
    "64",
    "--attack-batch-size",
    "2",
    "--critic-steps",
    "1",
    "--latent-d",
    "4",
    "--latent-v",
    "4",
    "--device",
    "cpu",
]


def test_the_cli_hardens_and_keeps_a_hand_written_card(trained_seg_dir, tmp_path, capsys):
    before = file_bytes(trained_seg_dir)
    out = tmp_path / "hardened"
    command = ["harden", "--model", str(trained_seg_dir), "--out", str(out), *CLI_FAST]
    assert main(command) == 0
    assert "finished at step 2" in capsys.readouterr().out
    card = (out / "MODEL_CARD.md").read_text()
    assert card.startswith(CARD_MARK) and f"from **{trained_seg_dir.name}**" in card
    assert " min on cpu" in card  # the device it ran on
    assert load_segmentation_model(out).spec == load_unet(trained_seg_dir)[0].spec
    assert (out / "attacker" / "config.json").is_file()
    assert file_bytes(trained_seg_dir) == before

    assert main(command) == 2  # a checkpoint in the way
    assert "already holds a checkpoint" in capsys.readouterr().err
    (out / "MODEL_CARD.md").write_text("# My notes\n")
    assert main([*command, "--overwrite"]) == 0
    assert (out / "MODEL_CARD.md").read_text() == "# My notes\n"  # kept: not ours to replace


@pytest.fixture
def torchscript_model(tmp_path):
    """The tiny U-Net as a TorchScript file (traced: the compiler cannot read the U-Net), with
    its spec as a JSON file."""
    unet = load_unet(TEST_DATA / "tiny_unet")[0]
    path = tmp_path / "user.pt"
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(unet.network.eval(), torch.zeros(1, 1, 32, 32)).save(str(path))
    spec = save_spec_file(tmp_path / "spec.json", unet.spec)
    return path, spec


def test_a_hardened_torchscript_model_is_a_finetuned_folder(torchscript_model, volumes, tmp_path):
    path, spec = torchscript_model
    before = path.read_bytes()
    model = load_segmentation_model(path, spec)
    original = {k: v.clone() for k, v in model.network.state_dict().items()}
    out = tmp_path / "hardened"
    config, attack = settings(steps=2)
    list(HardenTrainer(out, model, volumes[0], (), config, attack, ATTACKER).run())
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == FINETUNED_KIND
    assert saved["base"]["kind"] == "segmentation/torchscript"
    assert saved["base"]["path"] == str(path.resolve())
    assert path.read_bytes() == before

    hardened = load_segmentation_model(out)
    assert hardened.config["kind"] == FINETUNED_KIND
    loaded = hardened.network.state_dict()
    stored = load_file(str(out / "weights.safetensors"))
    assert set(loaded) == {k[len("model/") :] for k in stored if k.startswith("model/")}
    assert all(torch.equal(v, stored[f"model/{k}"]) for k, v in loaded.items())
    assert differ(loaded, original)  # the fine-tuned weights, not the file's

    path.unlink()
    with pytest.raises(CheckpointError, match="which is gone") as error:
        load_segmentation_model(out)
    assert "\n" not in str(error.value)


def test_the_fresh_attacker_evaluation_never_reuses_the_hardening_attackers_weights(
    seg_model, volumes, tmp_path
):
    out = tmp_path / "hardened"
    config, attack = settings(steps=1)
    list(HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER).run())
    hardened = load_segmentation_model(out)
    cotrained = load_attacker(out / "attacker").attacker.state_dict()
    fresh_dir = tmp_path / "fresh"
    fresh_config = AttackTrainingConfig(
        xi=2.0, steps=1, batch_size=2, crop_size=PATCH, critic_steps=1, seed=1, device="cpu"
    )
    trainer = AttackTrainer(fresh_dir, hardened, volumes[0], ATTACKER, config=fresh_config)
    assert trainer.init_weights is None  # nothing taken from the model's attacker/ folder
    list(trainer.run())
    fresh = load_attacker(fresh_dir)
    assert "init_from" not in json.dumps(fresh.config.get("training", {}))
    weights = fresh.attacker.state_dict()
    convolutions = [k for k, v in weights.items() if v.ndim >= 2]
    assert convolutions and set(differ(weights, cotrained)) >= set(convolutions)


def test_a_clean_control_run_trains_no_attacker(seg_model, volumes, tmp_path):
    config = HardenConfig(
        steps=3, batch_size=2, patch_size=PATCH, attacked_fraction=0.0, device="cpu"
    )
    assert not config.trains_attacker and config.attacker_steps() == 0
    attack = AttackTrainingConfig(xi=2.0, steps=1, batch_size=2, crop_size=PATCH, device="cpu")
    out = tmp_path / "control"
    events = list(HardenTrainer(out, seg_model, volumes[0], (), config, attack, ATTACKER).run())
    steps = [e for e in events if isinstance(e, StepCompleted)]
    assert [e.step for e in steps] == [1, 2, 3]
    assert all("seg_cross_entropy" in e.losses for e in steps)
    assert not any(name.startswith("attacker_") for e in steps for name in e.losses)
    assert "seg_attacked" not in steps[0].losses
    assert optimizer_steps(out) == {"optimizer": 3}  # the attacker's optimizers never stepped
    assert not (out / "attacker").exists()  # no untrained attacker shipped beside the model
    card = (out / "MODEL_CARD.md").read_text()
    assert "clean slices (control)" in card and "no attacker" in card


def test_a_clean_control_run_refuses_warm_up_steps():
    with pytest.raises(InvalidInputError, match="warm-up steps to 0"):
        HardenConfig(attacked_fraction=0.0, warmup_steps=5)
