"""The hardening experiment of issue 12: harden the shipped U-Net, then measure it honestly.

Stages, each an ``advseg`` command run in this process (its output goes to the log):

1. ``harden``: fine-tune ``models/unet_default`` on the data it was trained on (the phantom's
   training subjects and the real case's training slices), starting the attacker from the
   shipped ``attacker_dv_xi2`` (the one that broke it), with the sweep's attack settings.
2. ``sweep`` against the hardened model: fresh attackers, the settings and steps of the ones
   that broke the original, xi chosen on validation, the p-vs-damage curve on the test split.
3. The same sweep against the original, on the same machine, for a like-for-like "before".
4. Transfer: the shipped attackers (trained against the original) against the hardened model.
5. Clean Dice of both models on the real case's held-out block.
6. ``report --sweep BEFORE --after AFTER --transfer TRANSFER``.

A stage that fails is logged and the next one runs; a stage that would start after
``--budget-min`` is skipped (and said so). A trial run on the CPU:
``.venv/bin/python scripts/harden_experiment.py --out /tmp/trial --steps 2 --attack-steps 2
--subjects 6``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from napari_advseg.cli import main as advseg

SETTINGS = [
    "--gradient-penalty",
    "10",
    "--per-organ",
    "--diversity-weight",
    "0.3",
    "--diversity-cap-v",
    "0.02",
]
"""The attack settings of scripts/build_attackers.sh (the attackers that broke the original)."""
SHIPPED_ATTACKERS = [
    "attacker_dv_xi1.5",
    "attacker_dv_xi2",
    "attacker_dv_xi2.5",
    "attacker_dv_xi3",
    "attacker_d_xi2",
    "attacker_v_xi2",
]


def stage(name: str, argv: list[str], log: dict, started: float, budget_s: float) -> bool:
    """Run one ``advseg`` command; record its status and time in ``log``."""
    elapsed = time.perf_counter() - started
    if elapsed > budget_s:
        spent = f"{elapsed / 60:.1f} min spent of {budget_s / 60:.1f}"
        print(f"== {name}: skipped, {spent}", flush=True)
        log[name] = {"status": "skipped", "argv": argv}
        return False
    print(f"== {name}: advseg {' '.join(argv)}", flush=True)
    tick = time.perf_counter()
    try:
        status = advseg(argv)
    except Exception:  # log it and go on to the next stage
        traceback.print_exc()
        status = -1
    seconds = time.perf_counter() - tick
    print(f"== {name}: status {status} in {seconds / 60:.1f} min", flush=True)
    log[name] = {"status": status, "seconds": round(seconds, 1), "argv": argv}
    return status == 0


def export_fresh_attacker(out: Path, log: dict) -> None:
    """Export the headline fresh attacker against the hardened model (seed 0, no critic)."""
    from napari_advseg.training.attacker_io import export_attacker

    rows = json.loads((out / "after" / "rows.json").read_text())
    xi = rows["headline"]["xi"]
    source = out / "after" / "attackers" / f"dv_xi{xi:g}_seed0"
    destination = out / "attacker_fresh_dv"
    export_attacker(source, destination)
    log["fresh_attacker"] = {"from": str(source), "xi": xi, "to": str(destination)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/harden"))
    parser.add_argument("--steps", type=int, default=2000, help="hardening steps")
    parser.add_argument("--attack-steps", type=int, default=100, help="steps of each attacker")
    parser.add_argument("--subjects", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--xi",
        type=float,
        nargs="+",
        default=[2, 3, 4, 6],
        help="the sweeps' xi: the headline 2, and larger ones so that the curve of damage "
        "against p reaches the 30 %% rule on every organ",
    )
    parser.add_argument("--budget-min", type=float, default=1e9)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    budget = args.budget_min * 60
    log: dict = {"args": vars(args) | {"out": str(out)}}
    import torch

    log["torch"] = torch.__version__
    log["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {log['torch']} on {log['device']}", flush=True)
    hardened = str(out / "unet_hardened_xi2")
    original = "models/unet_default"
    phantom = f"--sample phantom --subjects {args.subjects}".split()
    attack = [*SETTINGS, *f"--steps {args.attack_steps} --device {args.device}".split()]
    xis = ["--xi", *(f"{xi:g}" for xi in args.xi)]
    sweep = [*phantom, *f"--with-real-train --seeds {args.seeds} --curve-on-test".split()]
    sweep += [*xis, *attack]
    shipped = [f"models/{name}" for name in SHIPPED_ATTACKERS]
    stages = [
        (
            "harden",
            [
                *f"harden --model {original} --init-attacker models/attacker_dv_xi2".split(),
                *f"--sample phantom real-train --subjects {args.subjects} --xi 2".split(),
                *SETTINGS,
                *f"--steps {args.steps} --device {args.device} --overwrite".split(),
                *["--out", hardened],
            ],
        ),
        ("sweep_after", ["sweep", "--model", hardened, *sweep, "--out", f"{out}/after"]),
        ("sweep_before", ["sweep", "--model", original, *sweep, "--out", f"{out}/before"]),
        (
            "transfer",
            [
                *["sweep", "--model", hardened, *phantom, "--headline-xi", "2"],
                *["--attackers", *shipped, "--curve-on-test", "--device", args.device],
                *["--out", f"{out}/transfer"],
            ],
        ),
    ]
    for model, name in ((hardened, "hardened"), (original, "original")):
        json_file = f"{out}/real_test_{name}.json"
        argv = ["eval-seg", "--model", model, "--sample", "real-test", "--json", json_file]
        stages.append((f"real_{name}", argv))
    report = [*["report", "--sweep", f"{out}/before", "--after", f"{out}/after"]]
    report += ["--transfer", f"{out}/transfer", "--out", f"{out}/robustness.html"]
    stages.append(("report", report))
    for name, argv in stages:
        stage(name, argv, log, started, budget)
        (out / "experiment_log.json").write_text(json.dumps(log, indent=1) + "\n")
        if name == "sweep_after" and log[name]["status"] == 0:
            export_fresh_attacker(out, log)
    log["minutes"] = round((time.perf_counter() - started) / 60, 2)
    (out / "experiment_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"done in {log['minutes']} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
