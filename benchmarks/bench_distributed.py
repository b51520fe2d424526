"""Scaling of training over processes: 1 and N gloo processes on the CPU, one thread each.

Run: ``.venv/bin/python benchmarks/bench_distributed.py`` (``--processes 2``; ``--device cuda``
on a GPU machine uses NCCL, one GPU per process). For the U-Net trainer and the attacker
trainer (Table 1's settings: gradient penalty, per-organ xi, diversity) it prints steps per
second and slices per second at the same *global* batch with 1 and with N processes, and the
ratio. Each process is started by ``torch.multiprocessing`` as torchrun would, with its own
rank and share of the subjects; the trainers are the command line's. ``--precisions`` also
times one process with bf16 autocast and with bf16 and channels-last (meant for a GPU; on a CPU
without bfloat16 units bf16 is slower). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_advseg.data.samples import PhantomCohort
from napari_advseg.segmentation import default_model_path, load_segmentation_model
from napari_advseg.training.attack_settings import AttackTrainingConfig
from napari_advseg.training.attack_trainer import AttackTrainer
from napari_advseg.training.distributed import SINGLE, World
from napari_advseg.training.events import StepCompleted
from napari_advseg.training.seg_trainer import SegTrainer, SegTrainingConfig

WARMUP = 2


def _worker(rank: int, size: int, kind: str, options: dict, folder: str) -> None:
    torch.set_num_threads(options["threads"])
    root = Path(folder)
    if size > 1:
        backend = "nccl" if options["device"] == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend, init_method=f"file://{root / 'rendezvous'}", rank=rank, world_size=size
        )
    world = World(rank, size, rank) if size > 1 else SINGLE
    volumes = PhantomCohort(options["subjects"]).volumes("all")
    steps = options["steps"] + WARMUP
    device = options["device"]
    if kind == "unet":
        batch = options["seg_batch"]
        config = SegTrainingConfig(
            epochs=1,
            steps_per_epoch=steps,
            batch_size=batch,
            patch_size=96,
            device=device,
            precision=options["precision"],
            channels_last=options["channels_last"],
        )
        trainer = SegTrainer(root / "unet", volumes, [], config=config, world=world)
    else:
        batch = options["attack_batch"]
        seg = load_segmentation_model(default_model_path())
        config = AttackTrainingConfig(
            steps=steps,
            batch_size=batch,
            crop_size=128,
            gradient_penalty=10.0,
            per_organ=True,
            diversity_weight=0.3,
            diversity_cap_v=0.02,
            xi=2.0,
            checkpoint_every=10**6,
            monitor_every=10**6,
            device=device,
            precision=options["precision"],
            channels_last=options["channels_last"],
        )
        trainer = AttackTrainer(root / "attacker", seg, volumes, config=config, world=world)
    stamps = []
    for event in trainer.run():
        if isinstance(event, StepCompleted):
            stamps.append(time.perf_counter())
    if rank == 0:
        seconds = (stamps[-1] - stamps[WARMUP - 1]) / (len(stamps) - WARMUP)
        result = {"kind": kind, "processes": size, "seconds_per_step": seconds, "batch": batch}
        (root / "result.json").write_text(json.dumps(result))
    if size > 1:
        dist.destroy_process_group()


def measure(kind: str, size: int, options: dict, **changes: object) -> dict:
    """Seconds per step of ``kind`` ("unet" or "attacker") on ``size`` processes."""
    options = {"precision": "fp32", "channels_last": False, **options, **changes}
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(size, kind, options, folder), nprocs=size)
        return json.loads((Path(folder) / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=12, help="timed steps (after 2 warm-up)")
    parser.add_argument("--subjects", type=int, default=6, help="phantom subjects")
    parser.add_argument("--seg-batch", type=int, default=16, help="global U-Net batch (96x96)")
    parser.add_argument("--attack-batch", type=int, default=8, help="global attack batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("unet", "attacker"), default=None)
    parser.add_argument(
        "--precisions", action="store_true", help="also one process with bf16 (+ channels-last)"
    )
    options = vars(parser.parse_args())
    kinds = [options["only"]] if options["only"] else ["unet", "attacker"]
    print(f"torch {torch.__version__}, device {options['device']}, {options['threads']} thread(s)")
    for kind in kinds:
        one = measure(kind, 1, options)
        many = measure(kind, options["processes"], options)
        for result in (one, many):
            steps = 1.0 / result["seconds_per_step"]
            print(
                f"{kind:8s} {result['processes']} process(es): {steps:.2f} steps/s, "
                f"{steps * result['batch']:.1f} slices/s (global batch {result['batch']})"
            )
        ratio = one["seconds_per_step"] / many["seconds_per_step"]
        print(f"{kind:8s} scaling {options['processes']} / 1 process: {ratio:.2f}x")
        if options["precisions"]:
            for label, changes in (
                ("bf16", {"precision": "bf16"}),
                ("bf16 + channels-last", {"precision": "bf16", "channels_last": True}),
            ):
                other = measure(kind, 1, options, **changes)
                speedup = one["seconds_per_step"] / other["seconds_per_step"]
                print(
                    f"{kind:8s} 1 process, {label}: {1.0 / other['seconds_per_step']:.2f} "
                    f"steps/s, {speedup:.2f}x fp32"
                )


if __name__ == "__main__":
    main()
