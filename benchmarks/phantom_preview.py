"""Time the phantom generator and save a preview grid of subjects with their labels.

Usage::

    python benchmarks/phantom_preview.py [--n 20] [--out docs/phantom_subjects.png]

Prints the seconds per subject (one core, default config) and writes a PNG of 4 subjects x
3 axial slices (inferior, mid, superior) in a CT window of -160..240 HU with the labels
overlaid: pancreas blue, kidneys green, liver orange, spleen red.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_advseg.data.phantom import PhantomConfig, generate_phantom
from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import DEFAULT_LABEL_MAP
from napari_advseg.validation import arg_float, arg_int, check_output_file

# RGB 0-1 from the one label map: pancreas blue, kidneys green, liver orange, spleen red
COLORS = {k: rgba[:3] for k, rgba in DEFAULT_LABEL_MAP.colors_rgba().items() if k}
WINDOW = (-160.0, 240.0)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB of a windowed slice with the labels blended in."""
    lo, hi = WINDOW
    gray = np.clip((image.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for label, color in COLORS.items():
        mask = labels == label
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(color)
    return rgb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=arg_int(1, 1000), default=20, help="subjects to time (default 20)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/phantom_subjects.png"))
    parser.add_argument("--seeds", type=arg_int(0), nargs=4, default=[0, 1, 2, 3])
    parser.add_argument(
        "--alpha", type=arg_float(0.0, 1.0), default=0.35, help="label overlay opacity"
    )
    args = parser.parse_args(argv)
    try:
        check_output_file(args.out, "--out", suffixes=(".png",))  # before the work, not after
    except InvalidInputError as error:
        parser.error(str(error))

    config = PhantomConfig()
    generate_phantom(10_000, config)  # warm-up (imports, caches)
    start = time.perf_counter()
    for seed in range(args.n):
        generate_phantom(seed, config)
    per = (time.perf_counter() - start) / max(args.n, 1)
    print(f"{per:.3f} s per subject ({args.n} subjects, shape {config.shape})")

    nz = config.shape[0]
    picks = {"inferior": nz // 6, "mid": nz // 2, "superior": (5 * nz) // 6}
    fig, axes = plt.subplots(4, 3, figsize=(9, 12.4), dpi=110)
    for row, seed in enumerate(args.seeds):
        image, labels = generate_phantom(seed, config)
        for col, (name, z) in enumerate(picks.items()):
            ax = axes[row, col]
            ax.imshow(overlay(image[z], labels[z], args.alpha), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"seed {seed}, {name} (z={z})", fontsize=9)
    fig.suptitle(
        "Phantom subjects (window -160..240 HU; patient's right on the image's left)\n"
        "pancreas blue, kidneys green, liver orange, spleen red",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
