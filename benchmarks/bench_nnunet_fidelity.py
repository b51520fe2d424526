"""How closely `advseg eval-seg` on an nnU-Net folder reproduces nnU-Net's own inference.

A tiny nnU-Net v2 2d fold is trained on the test suite's synthetic dataset (tests/nnunet_results.py,
seconds on a CPU). Its cases are then resampled to other in-plane spacings, as a user's scans
would differ from the plans' spacing. Each is segmented twice:

- by ``advseg eval-seg --model FOLDER`` (bilinear resampling to the plans' spacing, antialiased
  when shrinking; probabilities back bilinearly);
- by nnU-Net's recipe written out here: CTNormalization, third-order spline resampling of the
  image (``skimage.transform.resize(order=3, mode="edge", anti_aliasing=False)``, done here with
  SciPy's equivalent ``zoom(order=3, mode="nearest", grid_mode=True)``), the whole slice padded
  to the stride with 0, logits resampled back with order 1, argmax.

It prints the Dice per organ of each and their difference. Run from the repository root:
``.venv/bin/python benchmarks/bench_nnunet_fidelity.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_advseg.cli import main
from tests import nnunet_results as nr

SCAN_OVER_PLANS = (1.0, 0.8, 1.25, 1.6)
"""In-plane pixels per plans pixel: 1 is the plans' spacing; 1.25 a finer scan, 0.8 a coarser."""
STRIDE = 4


def zoom_slices(volume: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resample each slice of (Z, Y, X) to ``shape`` (skimage.resize's pixel-centre mapping)."""
    factors = (shape[0] / volume.shape[1], shape[1] / volume.shape[2])
    return np.stack(
        [
            ndimage.zoom(plane, factors, order=order, mode="nearest", grid_mode=True)
            for plane in volume
        ]
    )


@torch.inference_mode()
def nnunet_predict(
    network: torch.nn.Module, image: np.ndarray, fingerprint: dict, factor: float
) -> np.ndarray:
    normalized = nr.ct_normalize(image, fingerprint)
    target = (round(image.shape[1] / factor), round(image.shape[2] / factor))
    small = zoom_slices(normalized, target, order=3)
    pad_h, pad_w = -small.shape[1] % STRIDE, -small.shape[2] % STRIDE
    padded = np.pad(
        small, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    )
    network.eval()
    output = network(torch.from_numpy(padded.astype(np.float32))[:, None])
    logits = (output[0] if isinstance(output, list | tuple) else output).numpy()  # full resolution
    logits = logits[:, :, pad_h // 2 : pad_h // 2 + target[0], pad_w // 2 : pad_w // 2 + target[1]]
    back = np.stack(
        [zoom_slices(logits[:, c], image.shape[1:], order=1) for c in range(logits.shape[1])],
        axis=1,
    )
    return back.argmax(1).astype(np.uint8)


def write_case(folder: Path, index: int, image: np.ndarray, labels: np.ndarray, factor: float):
    sz, sy, sx = nr.SPACING_ZYX
    affine = np.diag([-sx / factor, -sy / factor, sz, 1.0])
    for sub, array, dtype, suffix in (
        ("imagesTr", image, "int16", "_0000"),
        ("labelsTr", labels, "uint8", ""),
    ):
        data = np.ascontiguousarray(array.transpose(2, 1, 0)).astype(dtype)
        nib.save(nib.Nifti1Image(data, affine), folder / sub / f"case_{index:03d}{suffix}.nii.gz")


def main_benchmark() -> None:
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    arrays = [nr.case_arrays(seed) for seed in range(4)]
    images = [np.round(image).astype(np.float32) for image, _ in arrays]  # stored as int16
    labels = [label for _, label in arrays]
    fingerprint = nr.ct_fingerprint(images, labels)
    network, dice, steps = nr.train_fold(images, labels, fingerprint)
    folder = nr.write_results_folder(
        root / "results",
        nr.plans_json(fingerprint),
        nr.dataset_json(len(images)),
        nr.nnunet_checkpoint(network, steps, dice),
    )
    print(f"tiny nnU-Net fold trained in {steps} steps; plans spacing {nr.SPACING_ZYX[1:]} mm")
    print("| scan pixel / plans pixel | organ | nnU-Net recipe | advseg eval-seg | difference |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for factor in SCAN_OVER_PLANS:
        data = root / f"scan_{factor:g}"
        (data / "imagesTr").mkdir(parents=True)
        (data / "labelsTr").mkdir()
        (data / "dataset.json").write_text(json.dumps(nr.dataset_json(len(images))))
        reference = []
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            zoom = {"zoom": (1, factor, factor), "grid_mode": True, "mode": "nearest"}
            scan = ndimage.zoom(image, order=1, **zoom)
            truth = ndimage.zoom(label, order=0, **zoom)
            scan = np.round(scan).astype(np.float32)
            write_case(data, index, scan, truth, factor)
            prediction = nnunet_predict(network, scan, fingerprint, factor)
            reference.append(nr.dice_per_organ(prediction, truth))
        out = root / f"dice_{factor:g}.json"
        argv = ["eval-seg", "--model", str(folder), "--dataset", str(data), "--split", "all"]
        with contextlib.redirect_stdout(io.StringIO()):  # its own table is not needed here
            assert main([*argv, "--json", str(out)]) == 0
        ours = json.loads(out.read_text())["dice"]
        for organ in nr.ORGANS:
            theirs = float(np.mean([c[organ] for c in reference if c[organ] is not None]))
            worst = max(worst, abs(ours[organ] - theirs))
            print(
                f"| {1 / factor:.2f} | {organ} | {theirs:.4f} | {ours[organ]:.4f} | "
                f"{ours[organ] - theirs:+.4f} |"
            )
    print(f"largest difference: {worst:.4f}")


if __name__ == "__main__":
    main_benchmark()
