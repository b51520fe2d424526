"""Time from a new segmentation model to an attacker that meets the 30 % rule: scratch vs --init.

For each U-Net given (e.g. ``advseg train-seg --sample phantom --epochs 3 --seed 1``), trains an
attacker with the shipped attackers' settings twice, from random weights and from a shipped
attacker (``train-attack --init``), and every ``--eval-every`` steps evaluates it on the first
``--val-subjects`` subjects of the phantom validation split: the attack meets the rule when every
organ's 3D Dice (against the warped reference, the sweep's convention) falls by at least 30 % at a
perceptibility p of at most 0.1 (the sweep's headline bar: without it an untrained generator's
noise, p about 0.24, "succeeds" after 25 steps).
The clock counts training only (data preparation included, evaluation excluded); each run stops
at success or at ``--cap-minutes``.

Run: ``.venv/bin/python benchmarks/bench_warm_start.py --unets runs/unet_seed1 runs/unet_seed2``
on a quiet machine. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from napari_advseg._resources import default_attacker_name, models_dir
from napari_advseg.data.samples import PhantomCohort
from napari_advseg.evaluation.attack_eval import evaluate_attack
from napari_advseg.evaluation.attacks import LearnedAttack
from napari_advseg.evaluation.sweep import MAX_PERCEPTIBILITY
from napari_advseg.segmentation import load_segmentation_model
from napari_advseg.training.attack_trainer import AttackTrainer, AttackTrainingConfig
from napari_advseg.training.attacker_io import load_attacker
from napari_advseg.training.events import CheckpointSaved, TrainingFinished

SHIPPED_SETTINGS = {
    "xi": 2.5,
    "gradient_penalty": 10.0,
    "per_organ": True,
    "diversity_weight": 0.3,
    "diversity_cap_v": 0.02,
}
"""The settings of the shipped attackers (``scripts/build_attackers.sh``)."""


def run(
    seg_dir: Path, init: Path | None, args: argparse.Namespace, out: Path
) -> tuple[float | None, int, float, str]:
    """(seconds to success or None, steps, training seconds, last evaluation)."""
    seg = load_segmentation_model(seg_dir)
    cohort = PhantomCohort(args.subjects, 0)
    train = cohort.volumes("train")
    val = cohort.volumes("val")[: args.val_subjects]
    config = AttackTrainingConfig(
        **SHIPPED_SETTINGS,
        steps=args.max_steps,
        checkpoint_every=args.eval_every,
        monitor_every=args.eval_every,
        device="cpu",
    )
    if init is not None:  # the initial attacker as it is: a transfer attack, no training
        met, last = evaluate(seg, init, val)
        print(f"    step     0 (transfer), 0.0 min: Dice drop {last}", flush=True)
        if met:
            return 0.0, 0, 0.0, last
    trainer = AttackTrainer(out, seg, train, config=config, init_from=init)
    events = trainer.run()
    seconds, step, last = 0.0, 0, "-"
    while True:
        tick = time.perf_counter()
        event = next(events, None)
        seconds += time.perf_counter() - tick
        if event is None or isinstance(event, TrainingFinished):
            return None, step, seconds, last
        if not isinstance(event, CheckpointSaved):
            continue
        step = event.step
        met, last = evaluate(seg, out, val)
        print(f"    step {step:5d}, {seconds / 60:5.1f} min: Dice drop {last}", flush=True)
        if met:
            return seconds, step, seconds, last
        if seconds > args.cap_minutes * 60:
            trainer.stop()


def evaluate(seg: Any, attacker: Path, val: list[Any]) -> tuple[bool, str]:
    """Whether the attacker meets the 30 % rule on every organ, and its Dice drops and p."""
    summary = evaluate_attack(seg, LearnedAttack(load_attacker(attacker)), val).summary()
    drops = summary["decrease_warped"]
    text = ", ".join(f"{o} {v:.0f}%" for o, v in drops.items() if v is not None)
    text += f"; p {summary['p']:.3f}"
    success = all(v for v in summary["success_warped"].values() if v is not None)
    return success and summary["p"] <= MAX_PERCEPTIBILITY, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unets", type=Path, nargs="+", required=True)
    parser.add_argument("--init", type=Path, default=models_dir() / default_attacker_name())
    parser.add_argument("--cap-minutes", type=float, default=20.0)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--val-subjects", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=150)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; cap {args.cap_minutes} min a run")
    rows = []
    for seg_dir in args.unets:
        for label, init in (("scratch", None), ("warm (--init)", args.init)):
            print(f"{seg_dir.name}, {label}:", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                found, steps, spent, last = run(seg_dir, init, args, Path(tmp) / "attacker")
            rows.append((seg_dir.name, label, found, steps, spent, last))
    print("\n| U-Net | start | time to the 30 % rule | steps | last evaluation |")
    print("|---|---|---|---|---|")
    for name, label, found, steps, spent, last in rows:
        shown = f"{found / 60:.1f} min" if found is not None else f"not met in {spent / 60:.1f} min"
        print(f"| {name} | {label} | {shown} | {steps} | {last} |")
    for name in dict.fromkeys(row[0] for row in rows):
        scratch, warm = (row for row in rows if row[0] == name)
        if warm[2] == 0.0:
            print(f"{name}: the initial attacker meets the rule as it is (a transfer attack)")
        elif scratch[2] is not None and warm[2] is not None:
            print(f"{name}: warm start {scratch[2] / warm[2]:.1f}x faster")


if __name__ == "__main__":
    main()
