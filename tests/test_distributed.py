"""Training and evaluation on several processes (issue 13): gloo on the CPU, as under torchrun.

The two-process runs are real: ``torchrun --standalone --nproc_per_node=2`` launches the
command line, and the references are computed here in one process from the same per-rank
batches, averaging the per-rank gradients as DistributedDataParallel does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_advseg.cli import main
from napari_advseg.data.nifti import load_volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.nets.attacker import Attacker
from napari_advseg.nets.critic import Critic
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import load_unet, save_unet
from napari_advseg.training.attack_settings import AttackTrainingConfig
from napari_advseg.training.attack_trainer import AttackSteps
from napari_advseg.training.attacker_io import attacker_architectures, load_attacker_state
from napari_advseg.training.checkpoint import read_config
from napari_advseg.training.distributed import SINGLE, World
from napari_advseg.training.seg_trainer import PatchSource, SegTrainingConfig, training_batch
from napari_advseg.training.slice_bank import SliceBank

from .conftest import blob_volume, save_pair

TOLERANCE = 1e-5
TINY_NET = ["--base-channels", "2", "--depth", "3", "--device", "cpu"]


def torchrun(args: list[str], cwd: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``advseg ARGS`` under torchrun with gloo on the CPU, one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "napari_advseg.cli", *args]
    return _run(command, cwd)


def single(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``advseg ARGS`` in one process with the same environment as :func:`torchrun`."""
    return _run([sys.executable, "-m", "napari_advseg.cli", *args], cwd)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(name, None)
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture
def one_thread():
    """The references run with one thread, as each torchrun process does: the same kernels, so
    a gradient that is zero but for rounding cannot change sign between the two (RMSProp and
    Adam's first steps move every weight by about the learning rate, whatever its size)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Five labelled blob cases as NIfTI pairs (names s0 ... s4)."""
    folder = tmp_path_factory.mktemp("cases")
    return [save_pair(folder, blob_volume(seed=i), f"s{i}") for i in range(5)]


def _data(pairs, labels=True) -> list[str]:
    images = ["--images", *[str(p[0]) for p in pairs]]
    return images + (["--labels", *[str(p[1]) for p in pairs]] if labels else [])


def _parameters(tensors: dict[str, torch.Tensor], prefix: str, module: torch.nn.Module) -> dict:
    """The saved values of ``module``'s parameters (not its buffers) under ``prefix``."""
    return {name: tensors[prefix + name] for name, _ in module.named_parameters()}


def _assert_close(saved: dict, module: torch.nn.Module) -> None:
    for name, parameter in module.named_parameters():
        difference = float((saved[name] - parameter.detach()).abs().max())
        assert difference <= TOLERANCE, (name, difference)


def _average_into(module: torch.nn.Module, per_rank: list[list[torch.Tensor | None]]) -> None:
    """Set each parameter's gradient to the mean over ranks (what DDP's all-reduce makes)."""
    for index, parameter in enumerate(module.parameters()):
        grads = [grads[index] for grads in per_rank]
        parameter.grad = None if grads[0] is None else torch.stack(grads).mean(dim=0)


# --- the world of one process, and refusals ----------------------------------------------------


def test_world_shares_and_streams():
    assert SINGLE.subject_indices(3) == [0, 1, 2]
    ranks = [World(rank, 2) for rank in range(2)]
    assert [w.subject_indices(5) for w in ranks] == [[0, 2, 4], [1, 3, 0]]
    assert [list(w.shard(list(range(5)))) for w in ranks] == [[0, 2, 4], [1, 3]]
    assert ranks[1].local_batch(8) == 4
    with pytest.raises(InvalidInputError, match="multiple of 2") as error:
        ranks[0].local_batch(5)
    assert "\n" not in str(error.value)
    # rank 0 draws what one process draws; another rank draws its own stream
    assert ranks[0].numpy_rng(3, 7).random() == np.random.default_rng([3, 7]).random()
    assert ranks[1].numpy_rng(3, 7).random() != ranks[0].numpy_rng(3, 7).random()
    first = ranks[0].torch_generator(11)
    assert torch.equal(
        torch.rand(4, generator=first), torch.rand(4, generator=SINGLE.torch_generator(11))
    )
    assert ranks[0].facts(8) == {"world_size": 2, "global_batch": 8, "batch_per_rank": 4}


def test_commands_that_run_in_one_process_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["report", "--sweep", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "runs in one process; launch it without torchrun" in err


def test_a_global_batch_that_does_not_divide_is_refused_before_joining(
    monkeypatch, capsys, tmp_path, pairs
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "never"
    code = main(["train-seg", "--out", str(out), *_data(pairs), "--batch-size", "3", *TINY_NET])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--batch-size 3 is the global batch" in err
    assert not out.exists()


# --- two processes -----------------------------------------------------------------------------


def test_train_seg_on_two_processes_averages_gradients_and_resumes(tmp_path, pairs, one_thread):
    out = tmp_path / "seg"
    settings = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4"]
    settings += ["--patch-size", "16", "--seed", "5"]
    result = torchrun(
        ["train-seg", "--out", str(out), *_data(pairs), *settings, *TINY_NET], tmp_path
    )
    assert result.stdout.count("finished at step 1") == 1  # rank 0 alone prints
    config = json.loads((out / "last" / "config.json").read_text())
    training = config["training"]
    assert (training["world_size"], training["global_batch"], training["batch_per_rank"]) == (
        2,
        4,
        2,
    )
    # one writer: the two checkpoints (best and last), no leftover of a second save
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "last", "weights.safetensors"]
    assert sorted(p.name for p in (out / "last").iterdir()) == [
        "config.json",
        "weights.safetensors",
    ]

    # the reference: one process, the two ranks' batches, their gradients averaged
    model, _ = load_unet(out / "last")
    cfg = SegTrainingConfig(**training["settings"])
    by_name = {}
    for image, labels in pairs:
        volume = load_volume(image, labels)
        by_name[volume.name] = volume
    train = [by_name[name] for name in training["train_subjects"]]
    torch.manual_seed(cfg.seed)
    reference = UNet(model.network.config)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    per_rank = []
    for rank in range(2):
        world = World(rank, 2)
        reference.load_state_dict(initial)
        reference.train()
        shard = [train[i] for i in world.subject_indices(len(train))]
        source = PatchSource.from_volumes(shard, model.spec, cfg.patch_size, None)
        rng = world.numpy_rng(cfg.seed, 0)
        generator = world.torch_generator(cfg.seed * 1_000_003)
        images, labels = training_batch(source, cfg, 2, rng, generator)
        reference.zero_grad()
        F.cross_entropy(reference(images), labels).backward()
        per_rank.append([p.grad.clone() for p in reference.parameters()])
    reference.load_state_dict(initial)
    _average_into(reference, per_rank)
    torch.optim.Adam(reference.parameters(), lr=cfg.learning_rate).step()
    _assert_close(dict(model.network.named_parameters()), reference)

    # resume the two-process checkpoint in one process: the same run goes on from step 1
    code = main(
        [
            "train-seg",
            "--out",
            str(out),
            *_data(pairs),
            *settings,
            *TINY_NET,
            "--epochs",
            "2",
            "--resume",
        ]
    )
    assert code == 0
    resumed = json.loads((out / "last" / "config.json").read_text())["training"]
    assert (resumed["step"], resumed["world_size"], resumed["batch_per_rank"]) == (2, 1, 4)
    _, tensors = load_unet(out / "last")
    assert float(tensors["optimizer/0/step"]) == 2  # Adam's state went on, not restarted


def test_train_attack_with_a_gradient_penalty_on_two_processes(
    tmp_path, pairs, tiny_unet, one_thread
):
    network, spec = tiny_unet
    seg_dir = save_unet(tmp_path / "unet", network, spec, {"command": "test"})
    out = tmp_path / "attacker"
    settings = ["--steps", "1", "--batch-size", "4", "--crop-size", "32", "--critic-steps", "1"]
    settings += ["--latent-d", "2", "--latent-v", "2", "--gradient-penalty", "10", "--seed", "3"]
    settings += ["--device", "cpu"]
    images = [str(p[0]) for p in pairs[:3]]
    torchrun(
        [
            "train-attack",
            "--model",
            str(seg_dir),
            "--images",
            *images,
            "--out",
            str(out),
            *settings,
        ],
        tmp_path,
    )
    config = read_config(out)
    assert (config["training"]["world_size"], config["training"]["global_batch"]) == (2, 4)
    assert not [p for p in out.iterdir() if p.name not in ("config.json", "weights.safetensors")]

    attacker_config, critic_config = attacker_architectures(out, config)
    _, saved = load_attacker_state(out, attacker_config)
    cfg = AttackTrainingConfig.from_dict(config["training"]["settings"])
    seg = load_unet(seg_dir)[0].freeze()
    torch.manual_seed(cfg.seed)
    attacker, critic = Attacker(attacker_config), Critic(critic_config)

    def rmsprop(module):
        return torch.optim.RMSprop(
            module.parameters(), lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps
        )

    opt_g, opt_c = rmsprop(attacker), rmsprop(critic)
    volumes = [load_volume(path) for path in images]
    steps = AttackSteps(replace(cfg, batch_size=2), SINGLE)  # one rank's batch, no DDP
    ranks = []
    for rank in range(2):
        world = World(rank, 2)
        shard = [volumes[i] for i in world.subject_indices(len(volumes))]
        ranks.append(
            (
                SliceBank(shard, seg, cfg.crop_size),
                world.numpy_rng(cfg.seed, 0),
                world.torch_generator(cfg.seed * 7919),
            )
        )
    attacker.train()
    for phase in ("critic", "generator"):
        per_rank = []
        for bank, rng, generator in ranks:
            recorder = _Recorder(critic if phase == "critic" else attacker)
            if phase == "critic":
                steps.train_critic(attacker, critic, recorder, bank, rng, generator, "cpu")
            else:
                steps.train_generator(attacker, critic, recorder, seg, bank, rng, generator, "cpu")
            per_rank.append(recorder.grads)
        module, optimizer = (critic, opt_c) if phase == "critic" else (attacker, opt_g)
        _average_into(module, per_rank)
        optimizer.step()
    _assert_close(_parameters(saved, "attacker/", attacker), attacker)
    _assert_close(_parameters(saved, "critic/", critic), critic)


class _Recorder:
    """An optimizer that keeps the gradients it is asked to apply, and applies nothing."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.parameters = list(module.parameters())
        self.grads: list[torch.Tensor | None] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    def step(self) -> None:
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.parameters]
        self.zero_grad()


def test_sharded_eval_seg_equals_one_process(tmp_path, pairs, tiny_unet):
    network, spec = tiny_unet
    seg_dir = save_unet(tmp_path / "unet", network, spec, {"command": "test"})
    common = ["eval-seg", "--model", str(seg_dir), *_data(pairs), "--bootstrap", "50"]
    torchrun([*common, "--json", str(tmp_path / "two.json")], tmp_path)
    single([*common, "--json", str(tmp_path / "one.json")], tmp_path)
    two = json.loads((tmp_path / "two.json").read_text())
    assert two == json.loads((tmp_path / "one.json").read_text())
    assert [row["subject"] for row in two["subjects"]] == [f"s{i}_ct.nii.gz" for i in range(5)]


def _stop_worker(rank: int, folder: str) -> None:
    """One rank of a two-process U-Net run; rank 1 alone is asked to stop after step 2."""
    import torch.distributed as dist

    from napari_advseg.training.events import StepCompleted, TrainingFinished
    from napari_advseg.training.seg_trainer import SegTrainer

    torch.set_num_threads(1)
    root = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank, world_size=2
    )
    config = SegTrainingConfig(
        epochs=1, steps_per_epoch=50, batch_size=2, patch_size=16, device="cpu"
    )
    trainer = SegTrainer(
        root / "run",
        [blob_volume(seed=i) for i in range(3)],
        [],
        UNetConfig(base_channels=2, depth=3),
        config=config,
        world=World(rank, 2),
    )
    record = {"steps": [], "finished": None}
    for event in trainer.run():
        if isinstance(event, StepCompleted):
            record["steps"].append(event.step)
            if rank == 1 and event.step == 2:
                trainer.stop()
        elif isinstance(event, TrainingFinished):
            record["finished"] = [event.step, event.stopped]
    (root / f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def test_stop_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    torch.multiprocessing.spawn(_stop_worker, args=(str(tmp_path),), nprocs=2)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert records[0] == records[1] == {"steps": [1, 2], "finished": [2, True]}
    training = json.loads((tmp_path / "run" / "last" / "config.json").read_text())["training"]
    assert (training["step"], training["world_size"]) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json",
        "last",
        "weights.safetensors",
    ]


def test_harden_on_two_processes_writes_one_run_that_one_process_resumes(
    tmp_path, pairs, tiny_unet
):
    network, spec = tiny_unet
    seg_dir = save_unet(tmp_path / "unet", network, spec, {"command": "test"})
    out = tmp_path / "hardened"
    settings = ["--batch-size", "4", "--patch-size", "32", "--attack-batch-size", "2"]
    settings += ["--critic-steps", "1", "--latent-d", "2", "--latent-v", "2"]
    command = ["harden", "--model", str(seg_dir), "--out", str(out), *_data(pairs), *settings]
    result = torchrun([*command, "--steps", "2", "--device", "cpu"], tmp_path)
    assert result.stdout.count("finished at step 2") == 1
    training = json.loads((out / "last" / "config.json").read_text())["training"]
    assert (training["world_size"], training["global_batch"], training["step"]) == (2, 4, 2)
    assert sorted(p.name for p in out.iterdir()) == [
        "MODEL_CARD.md",
        "attacker",
        "config.json",
        "last",
        "weights.safetensors",
    ]
    assert main([*command, "--steps", "3", "--device", "cpu", "--resume"]) == 0
    training = json.loads((out / "last" / "config.json").read_text())["training"]
    assert (training["world_size"], training["step"]) == (1, 3)


def test_sweep_on_two_processes_equals_one_process(tmp_path, pairs, tiny_unet):
    network, spec = tiny_unet
    seg_dir = save_unet(tmp_path / "unet", network, spec, {"command": "test"})
    attacker = tmp_path / "attacker"
    settings = ["--steps", "1", "--batch-size", "2", "--crop-size", "32", "--critic-steps", "1"]
    settings += ["--latent-d", "2", "--latent-v", "2", "--device", "cpu", "--xi", "2"]
    train = ["train-attack", "--model", str(seg_dir), "--out", str(attacker), *settings]
    assert main([*train, "--images", str(pairs[0][0])]) == 0
    common = ["sweep", "--model", str(seg_dir), "--attackers", str(attacker), *_data(pairs)]
    common += ["--headline-xi", "2", "--device", "cpu"]
    torchrun([*common, "--out", "two", "--json", "two.json"], tmp_path)
    single([*common, "--out", "one", "--json", "one.json"], tmp_path)

    def rows(name: str) -> list[dict]:
        loaded = json.loads((tmp_path / name).read_text())
        return [{k: v for k, v in row.items() if k != "seconds_per_slice"} for row in loaded]

    two = rows("two.json")
    assert [row["mode"] for row in two] == [None, None, "dv", "random"]
    assert two == rows("one.json")
    assert (tmp_path / "two" / "report.html").is_file()


def test_sigterm_during_training_asks_the_trainer_to_stop_and_save():
    """SLURM's scancel and torchrun's shutdown send SIGTERM: it stops the run like Ctrl-C."""
    import signal

    from napari_advseg._cli_common import with_progress
    from napari_advseg.training.events import TrainingFinished

    class Trainer:
        stopped = False

        def stop(self):
            self.stopped = True

        def run(self):
            os.kill(os.getpid(), signal.SIGTERM)
            yield TrainingFinished(1, self.stopped, None, None, {})

    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer()
    events = list(with_progress(trainer, "test"))
    assert trainer.stopped and events[-1].stopped
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
