"""Train and store the small f_seg that the tests attack: tests/data/tiny_unet.

The tests must not train a network and then assert on how well it learned: the outcome differs
between CPUs (Intel and AMD kernels round differently). So this U-Net is trained once, here, and
stored as test data; the tests load it. Re-run only when the checkpoint format or the phantom
changes: ``.venv/bin/python scripts/make_test_model.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from napari_advseg.data.phantom import PhantomConfig
from napari_advseg.data.samples import PhantomCohort
from napari_advseg.nets.unet import UNetConfig
from napari_advseg.segmentation import load_unet
from napari_advseg.training.seg_trainer import SegTrainer, SegTrainingConfig, evaluate_dice

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "tiny_unet"

# The conftest's ``cohort`` fixture: six tiny phantom subjects (12 slices of 64x64 at 6 mm).
COHORT = {"subjects": 6, "seed": 3, "shape": (12, 64, 64), "spacing": (6.0, 6.0, 6.0)}


def main() -> int:
    torch.set_num_threads(2)
    cohort = PhantomCohort(
        COHORT["subjects"],
        seed=COHORT["seed"],
        config=PhantomConfig(shape=COHORT["shape"], spacing=COHORT["spacing"]),
    )
    config = SegTrainingConfig(
        epochs=1, steps_per_epoch=300, batch_size=8, patch_size=48, learning_rate=3e-3, device="cpu"
    )
    work = OUT.with_name("tiny_unet.work")
    shutil.rmtree(work, ignore_errors=True)
    trainer = SegTrainer(
        work,
        [cohort.subject(i) for i in range(4)],
        [],
        UNetConfig(base_channels=8, depth=3),
        config=config,
        provenance={"command": "python scripts/make_test_model.py", "data": COHORT},
    )
    for _ in trainer.run():
        pass
    shutil.rmtree(work / "last")  # optimizer state: not needed by the tests
    shutil.rmtree(OUT, ignore_errors=True)
    work.rename(OUT)
    model, _ = load_unet(OUT)
    dice = evaluate_dice(model, [cohort.subject(i) for i in (4, 5)])
    print(f"wrote {OUT}; Dice on held-out subjects 4 and 5: {dice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
