"""The out-of-domain experiment of issue 12: does adversarial fine-tuning help on a real scan?

U-Nets trained on the phantom only (never on the real case), then scored on the whole real case
(46 slices) with 95 % intervals from a bootstrap over its axial slices, paired across models:

- ``plain``: no augmentation;
- ``standard``: the standard augmentation (small affine moves, intensity jitter);
- ``domain``: standard plus domain augmentation (``--domain-augment``: resolution, noise,
  contrast phase, field of view);
- ``hardened``: ``standard`` fine-tuned by ``advseg harden`` against its attacker (xi 2), the
  attacker starting from the shipped ``attacker_dv_xi2``;
- ``control``: ``standard`` fine-tuned for the same steps on clean slices
  (``--attacked-fraction 0``), so that the hardening's effect is told from the extra steps'.

Each stage is an ``advseg`` command run in this process; a stage whose output exists is not run
again (delete it to redo it). Writes ``OUT/ood.json`` and ``OUT/ood.md``. A trial run on the CPU:
``.venv/bin/python scripts/ood_experiment.py --out /tmp/ood --epochs 1 --steps-per-epoch 2
--harden-steps 2 --subjects 6 --samples 50``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harden_experiment import SETTINGS, stage

ARMS = ("plain", "standard", "domain", "hardened", "control")
COMPARISONS = [
    ("standard", "plain"),
    ("domain", "plain"),
    ("hardened", "plain"),
    ("domain", "standard"),
    ("hardened", "standard"),
    ("hardened", "control"),
]
"""(model, baseline): the paired differences the page shows."""


def real_case_counts(folders: dict[str, Path]) -> tuple[dict, list[str]]:
    """Per model, the slice counts of its segmentation of the whole real case."""
    from napari_advseg.data.samples import load_real_case
    from napari_advseg.evaluation.slice_bootstrap import slice_counts
    from napari_advseg.inference import segment_volume
    from napari_advseg.segmentation import load_segmentation_model

    counts, organs = {}, []
    volume = load_real_case()
    reference = volume.require_labels()
    for name, folder in folders.items():
        model = load_segmentation_model(folder)
        prediction = segment_volume(model, volume)
        counts[name] = [slice_counts(prediction, reference, model.spec.label_map)]
        organs = model.spec.label_map.names
    return counts, organs


def _cell(value: float | None, interval: list[float] | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if interval is None:
        return text
    low, high = interval
    return f"{text} [{low:+.3f}, {high:+.3f}]" if signed else f"{text} [{low:.3f}, {high:.3f}]"


def markdown(result: dict) -> str:
    """The page: Dice on the real case per arm, paired differences, phantom test Dice."""
    organs = result["organs"]
    head = "| | " + " | ".join(organs) + " |\n|---|" + "---|" * len(organs)
    lines = [
        "# Out of domain: phantom-trained U-Nets on the real case",
        "",
        "U-Nets trained on the phantom only, scored on the whole real case (46 slices, which "
        "none of them saw). Dice against the case's TotalSegmentator pseudo-labels "
        "(github.com/wasserth/TotalSegmentator, Apache-2.0), with 95 % intervals from "
        f"{result['samples']} draws of a bootstrap over axial slices, paired across models. "
        "Slices are not independent: the intervals say how much a figure depends on the "
        "slices it was measured on, not how it would vary over new patients. One training "
        "seed per arm.",
        "",
        "## Dice on the real case",
        "",
        head,
    ]
    for arm, figures in result["real_case"]["models"].items():
        cells = [_cell(figures["dice"][o], figures["dice_ci"][o]) for o in organs]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired differences on the real case", "", head]
    for key, figures in result["differences"].items():
        cells = [_cell(figures["dice"][o], figures["dice_ci"][o], signed=True) for o in organs]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "## Clean Dice on the phantom test split", "", head]
    for arm, dice in result["phantom_test"].items():
        lines.append(f"| {arm} | " + " | ".join(_cell(dice.get(o), None) for o in organs) + " |")
    lines += ["", "## How each arm was made", ""]
    lines += [f"- {arm}: `advseg {' '.join(argv)}`" for arm, argv in result["commands"].items()]
    lines += ["", f"Reproduce: `{result['reproduce']}`", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ood"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=250)
    parser.add_argument("--harden-steps", type=int, default=300)
    parser.add_argument("--subjects", type=int, default=150)
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap draws")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log: dict = {}
    phantom = f"--sample phantom --subjects {args.subjects}".split()
    schedule = f"--epochs {args.epochs} --steps-per-epoch {args.steps_per_epoch}".split()
    common = [*phantom, *schedule, "--seed", "0", "--device", args.device]
    harden = [
        *phantom,
        *f"--xi 2 --steps {args.harden_steps} --patch-size 96 --device {args.device}".split(),
        *SETTINGS,
    ]
    standard = str(out / "standard")
    commands = {
        "plain": ["train-seg", *common, "--no-augment", "--out", str(out / "plain")],
        "standard": ["train-seg", *common, "--out", standard],
        "domain": ["train-seg", *common, "--domain-augment", "--out", str(out / "domain")],
        "hardened": [
            *["harden", "--model", standard, "--init-attacker", "models/attacker_dv_xi2"],
            *harden,
            *["--out", str(out / "hardened")],
        ],
        "control": [
            *["harden", "--model", standard, "--attacked-fraction", "0"],
            *harden,
            *["--out", str(out / "control")],
        ],
    }
    folders = {arm: out / arm for arm in ARMS}
    for arm in ARMS:
        if (folders[arm] / "config.json").exists():
            print(f"== {arm}: {folders[arm]} exists, not trained again", flush=True)
            continue
        if not stage(arm, commands[arm], log, started, float("inf")):
            print(f"== {arm} failed; see the log above", file=sys.stderr)
            return 1
    phantom_test = {}
    for arm in ARMS:
        path = out / f"{arm}_phantom_test.json"
        if not path.exists():
            argv = ["eval-seg", "--model", str(folders[arm]), *phantom, "--split", "test"]
            stage(f"{arm} phantom test", [*argv, "--json", str(path)], log, started, float("inf"))
        phantom_test[arm] = json.loads(path.read_text())["dice"]
    from napari_advseg.evaluation.slice_bootstrap import slice_bootstrap

    counts, organs = real_case_counts(folders)
    real = slice_bootstrap(counts, organs, samples=args.samples, baseline="plain")
    differences = {}
    for model, baseline in COMPARISONS:
        paired = slice_bootstrap(
            {baseline: counts[baseline], model: counts[model]},
            organs,
            samples=args.samples,
            baseline=baseline,
        )
        differences[f"{model} - {baseline}"] = paired["differences"][model]
    result = {
        "organs": organs,
        "samples": args.samples,
        "real_case": real,
        "differences": differences,
        "phantom_test": phantom_test,
        "commands": commands,
        "stages": log,
        "reproduce": "python scripts/ood_experiment.py " + " ".join(sys.argv[1:]),
    }
    (out / "ood.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ood.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
