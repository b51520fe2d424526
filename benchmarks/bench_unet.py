"""U-Net benchmarks: our training step against a plain PyTorch loop, and inference latency.

Run: ``.venv/bin/python benchmarks/bench_unet.py`` (CPU threads: ``--threads``, default 2).
Prints the figures and the ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from napari_advseg.data.samples import PhantomCohort
from napari_advseg.data.volume import Volume
from napari_advseg.inference import predict_probabilities, to_model_grid
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import SegmentationModel, load_segmentation_model
from napari_advseg.training.events import StepCompleted
from napari_advseg.training.seg_trainer import SegTrainer, SegTrainingConfig, make_spec


def bench_training(steps: int, batch: int, patch: int, out: str) -> None:
    architecture = UNetConfig()
    cohort = PhantomCohort(6)
    volumes = [cohort.subject(i) for i in range(6)]
    config = SegTrainingConfig(
        epochs=1, steps_per_epoch=steps + 3, batch_size=batch, patch_size=patch, device="cpu"
    )
    trainer = SegTrainer(out, volumes, [], architecture, config=config, overwrite=True)
    stamps = []
    for event in trainer.run():
        if isinstance(event, StepCompleted):
            stamps.append(time.perf_counter())
    ours = statistics.median(np.diff(stamps[2:]))  # wall time between steps: sampling included

    torch.manual_seed(0)
    network = UNet(architecture)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    images = torch.randn(batch, 1, patch, patch)
    labels = torch.randint(0, 5, (batch, patch, patch))
    times = []
    for _ in range(steps + 2):
        tick = time.perf_counter()
        loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    plain = statistics.median(times[2:])
    params = sum(p.numel() for p in network.parameters())
    print(f"training step, batch {batch} x {patch}x{patch}, U-Net {params:,} params")
    print(f"  advseg SegTrainer (sampling + augmentation + step): {ours * 1000:7.1f} ms")
    print(f"  plain PyTorch loop (fixed batch, same model):        {plain * 1000:7.1f} ms")
    print(f"  ratio advseg / plain: {ours / plain:.2f}  ({batch / ours:.0f} patches/s)")


def bench_inference(model: SegmentationModel, repeats: int) -> None:
    print(f"inference per slice ({model.name}; normalise, pad, forward, softmax, crop):")
    for size in (128, 256, 512):
        rng = np.random.default_rng(0)
        volume = Volume(
            rng.normal(0, 100, (1, size, size)).astype(np.float32), (3.0, *model.spec.pixel_spacing)
        )
        for _ in range(2):
            predict_probabilities(model, to_model_grid(volume, model.spec))
        times = []
        for _ in range(repeats):
            tick = time.perf_counter()
            predict_probabilities(model, to_model_grid(volume, model.spec))
            times.append(time.perf_counter() - tick)
        times.sort()
        print(
            f"  {size}x{size}: median {statistics.median(times) * 1000:7.1f} ms, "
            f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:7.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="/tmp/advseg_bench_unet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads")
    try:
        model = load_segmentation_model()
    except Exception as error:  # no shipped model yet: same architecture, random weights
        print(f"(shipped U-Net not loadable: {error}; using random weights)")
        architecture = UNetConfig()
        model = SegmentationModel(UNet(architecture), make_spec(architecture), "random").freeze()
    bench_inference(model, args.repeats)
    bench_training(args.steps, args.batch, args.patch, args.out)


if __name__ == "__main__":
    main()
