"""Attacker benchmarks: generator latency, a training step, and the cost of a successful attack.

Run: ``.venv/bin/python benchmarks/bench_attack.py [--attacker models/NAME]`` (default: the app's).
Without a shipped attacker the latency and training-step figures use random weights and the
comparison with per-image optimisation is skipped. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_advseg._resources import default_attacker_name, models_dir
from napari_advseg.data.samples import PhantomCohort
from napari_advseg.evaluation.attack_eval import warp_labels
from napari_advseg.evaluation.attacks import LearnedAttack, OptimizedAttack
from napari_advseg.evaluation.metrics import dice_per_label, overall_mean
from napari_advseg.inference import to_model_grid
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.nets.warp import warp
from napari_advseg.segmentation import load_segmentation_model
from napari_advseg.training.attack_trainer import AttackTrainer, AttackTrainingConfig
from napari_advseg.training.attacker_io import LoadedAttacker, load_attacker
from napari_advseg.training.events import StepCompleted


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        function()
        times.append(time.perf_counter() - tick)
    return times


def bench_latency(loaded: LoadedAttacker, repeats: int) -> None:
    print("generator latency per slice (encode + decode + warp):")
    attack = LearnedAttack(loaded)
    for size in (128, 256, 512):
        images = torch.randn(1, 1, size, size)
        attack(images)
        times = sorted(timed(lambda images=images: attack(images), repeats))
        print(
            f"  {size}x{size}: median {statistics.median(times) * 1000:7.1f} ms, "
            f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:7.1f} ms"
        )


SWEEP_SETTINGS = {
    "gradient_penalty": 10.0,
    "per_organ": True,
    "diversity_weight": 0.3,
    "diversity_cap_v": 0.02,
}
"""The settings of ``scripts/build_attackers.sh`` beyond the paper's."""


def bench_training_step(steps: int) -> None:
    seg = load_segmentation_model()
    volumes = [PhantomCohort().subject(i) for i in range(2)]
    medians = []
    for label, extra in (("paper (weight clipping)", {}), ("sweep settings", SWEEP_SETTINGS)):
        config = AttackTrainingConfig(
            steps=steps + 2,
            device="cpu",
            monitor_every=10_000,
            checkpoint_every=10_000,
            **extra,
        )
        stamps = [
            time.perf_counter()
            for e in AttackTrainer(
                "/tmp/advseg_bench_attack", seg, volumes, config=config, overwrite=True
            ).run()
            if isinstance(e, StepCompleted)
        ]
        medians.append(statistics.median(np.diff(stamps[1:])))
        print(
            f"attacker training step, {label} (batch {config.batch_size} x "
            f"{config.crop_size}^2, {config.critic_steps} critic steps): {medians[-1]:.2f} s"
        )
    print(f"  ratio sweep settings / paper: {medians[1] / medians[0]:.2f}")


def slice_success(seg, images, displacement, intensity) -> np.ndarray:
    """Per slice: mean organ Dice decrease >= 30 % against the warped S0."""
    with torch.no_grad():
        s0 = seg(images).argmax(dim=1)
        s_dv = seg(warp(images, displacement) + intensity).argmax(dim=1)
    reference = warp_labels(s0, displacement, seg.spec.label_map.num_classes)
    results = []
    for a, b, r in zip(s0.numpy(), s_dv.numpy(), reference.numpy(), strict=True):
        before = overall_mean(dice_per_label(a, r, seg.spec.label_map))
        after = overall_mean(dice_per_label(b, r, seg.spec.label_map))
        results.append(before is not None and after is not None and after <= 0.7 * before)
    return np.array(results)


def bench_success_cost(loaded: LoadedAttacker, slices: int, opt_steps: int) -> None:
    seg = load_segmentation_model()
    volume = PhantomCohort().subject(PhantomCohort().split("test")[0])
    grid = to_model_grid(volume, seg.spec)
    middle = grid.images.shape[0] // 2
    images = grid.images[middle - slices // 2 : middle + (slices + 1) // 2]
    learned = LearnedAttack(loaded)
    tick = time.perf_counter()
    d, v = learned(images)
    t_gen = time.perf_counter() - tick
    ok_gen = slice_success(seg, images, d, v)
    optimised = OptimizedAttack(seg, xi=loaded.xi, steps=opt_steps)
    tick = time.perf_counter()
    d, v = optimised(images)
    t_opt = time.perf_counter() - tick
    ok_opt = slice_success(seg, images, d, v)
    per_gen = t_gen / max(ok_gen.sum(), 1)
    per_opt = t_opt / max(ok_opt.sum(), 1)
    print(
        f"time per successfully attacked slice ({len(images)} mid-volume slices, xi {loaded.xi:g}):"
    )
    for label, successes, cost in (
        ("generator (one forward pass)", ok_gen.sum(), per_gen),
        (f"per-image optimisation ({opt_steps} steps)", ok_opt.sum(), per_opt),
    ):
        print(f"  {label:38s} {successes:3d} successes, {cost * 1000:9.1f} ms each")
    print(f"  ratio optimisation / generator: {per_opt / per_gen:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attacker", type=Path, default=models_dir() / default_attacker_name())
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--opt-steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads")
    if args.attacker.is_dir():
        loaded = load_attacker(args.attacker)
    else:
        print(f"({args.attacker} not found: random weights, no success comparison)")
        loaded = LoadedAttacker(
            Attacker(AttackerConfig()).eval(), {"attack": {"xi": 2.0}}, "random"
        )
    bench_latency(loaded, args.repeats)
    bench_training_step(args.steps)
    if args.attacker.is_dir():
        bench_success_cost(loaded, args.slices, args.opt_steps)


if __name__ == "__main__":
    main()
