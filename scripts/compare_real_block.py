"""Paired comparison of shipped U-Nets on the real case's held-out slices 20-31 (issue 12).

Run: ``.venv/bin/python scripts/compare_real_block.py [MODEL ...]`` (default: unet_default,
unet_general, unet_general_real; the first is the baseline). Prints each model's Dice with a
95 % slice-bootstrap interval and each other model's paired difference from the baseline, and
writes ``docs/real_block_comparison.json``. The reference is TotalSegmentator's pseudo-labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_advseg.data.samples import real_case_part
from napari_advseg.evaluation.slice_bootstrap import slice_bootstrap, slice_counts
from napari_advseg.inference import segment_volume
from napari_advseg.segmentation import load_segmentation_model

OUT = Path("docs/real_block_comparison.json")


def interval(values: list[float] | None, sign: str = "") -> str:
    if values is None:
        return "-"
    return f"[{values[0]:{sign}.3f}, {values[1]:{sign}.3f}]"


def main() -> int:
    names = sys.argv[1:] or ["unet_default", "unet_general", "unet_general_real"]
    blocks = real_case_part("test")
    counts = {}
    for name in names:
        model = load_segmentation_model(Path("models") / name)
        counts[name] = [
            slice_counts(segment_volume(model, block), block.require_labels(), model.spec.label_map)
            for block in blocks
        ]
    organs = model.spec.label_map.names
    result = slice_bootstrap(counts, organs, samples=2000, baseline=names[0])
    for name in names:
        dice, ci = result["models"][name]["dice"], result["models"][name]["dice_ci"]
        print(name + ": " + ", ".join(f"{o} {dice[o]:.3f} {interval(ci[o])}" for o in organs))
    for name, difference in result["differences"].items():
        dice, ci = difference["dice"], difference["dice_ci"]
        print(
            f"{name} - {names[0]}: "
            + ", ".join(f"{o} {dice[o]:+.3f} {interval(ci[o], '+')}" for o in organs)
        )
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
