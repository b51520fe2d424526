"""Shared fixtures: small synthetic volumes and NIfTI files made on the fly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_advseg.data.volume import Volume
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.training.seg_trainer import make_spec

torch.set_num_threads(2)
# napari's main-thread checks for plugins: viewer access from a worker thread is caught.
os.environ["NAPARI_ENSURE_PLUGIN_MAIN_THREAD"] = "True"

TEST_DATA = Path(__file__).parent / "data"


def blob_volume(shape=(4, 40, 48), spacing=(3.0, 3.0, 3.0), seed=0, name="blobs") -> Volume:
    """A small CT-like volume with one disc per organ label on every slice."""
    rng = np.random.default_rng(seed)
    _, y, x = np.indices(shape)
    image = np.full(shape, -1000.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    body = ((y - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + (
        (x - shape[2] / 2) / (shape[2] * 0.45)
    ) ** 2 < 1
    image[body] = -100.0
    centres = [(0.5, 0.5), (0.7, 0.3), (0.4, 0.3), (0.65, 0.72)]
    for label, (cy, cx) in enumerate(centres, start=1):
        disc = (y - cy * shape[1]) ** 2 + (x - cx * shape[2]) ** 2 < (0.12 * shape[1]) ** 2
        image[disc] = 40.0 * label
        labels[disc] = label
    image += rng.normal(0, 5, shape).astype(np.float32)
    return Volume(image=image, spacing=spacing, labels=labels, name=name)


def save_pair(folder: Path, volume: Volume, stem: str = "case") -> tuple[Path, Path]:
    """Write a volume as an LPS-ordered NIfTI image/label pair; return the two paths."""
    from napari_advseg.data.nifti import write_nifti

    image = write_nifti(folder / f"{stem}_ct.nii.gz", volume.image, volume.grid, "int16")
    labels = write_nifti(folder / f"{stem}_labels.nii.gz", volume.labels, volume.grid, "uint8")
    return image, labels


def save_array(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a raw array as NIfTI (file order) with an affine (default 3 mm RAS)."""
    nib.save(
        nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine), path
    )
    return path


@pytest.fixture
def volume() -> Volume:
    return blob_volume()


@pytest.fixture
def tiny_unet():
    """A tiny random U-Net and its spec (depth 3, 4 base channels)."""
    torch.manual_seed(0)
    config = UNetConfig(base_channels=4, depth=3)
    return UNet(config).eval(), make_spec(config)


@pytest.fixture(scope="session")
def cohort():
    """Six tiny phantom subjects (12 slices of 64x64 at 6 mm)."""
    from napari_advseg.data.phantom import PhantomConfig
    from napari_advseg.data.samples import PhantomCohort

    return PhantomCohort(
        6, seed=3, config=PhantomConfig(shape=(12, 64, 64), spacing=(6.0, 6.0, 6.0))
    )


@pytest.fixture(scope="session")
def trained_seg_dir(tmp_path_factory):
    """A copy of the stored small U-Net trained on four tiny phantom subjects (``cohort``).

    Stored, not trained here: a test must not depend on how well training goes on this CPU.
    ``scripts/make_test_model.py`` made it (300 steps; Dice liver 0.84, kidneys 0.57 on the two
    held-out subjects).
    """
    out = tmp_path_factory.mktemp("seg") / "unet"
    shutil.copytree(TEST_DATA / "tiny_unet", out)
    return out


@pytest.fixture
def seg_model(trained_seg_dir):
    from napari_advseg.segmentation import load_unet

    return load_unet(trained_seg_dir)[0]


@pytest.fixture(scope="session")
def nnunet_trained(tmp_path_factory):
    """A trained nnU-Net v2 2d fold on a 4-case raw dataset (see tests/nnunet_results.py).

    Returns the trainer folder, the raw dataset folder and the test's own nnU-Net-style Dice per
    organ (mean over the cases), which exceeds 0.5 on at least two organs.
    """
    from . import nnunet_results as nr

    root = tmp_path_factory.mktemp("nnunet")
    raw = nr.write_raw_dataset(root / "raw" / nr.DATASET_NAME, [0, 1, 2, 3])
    cases = sorted((raw / "imagesTr").glob("*.nii.gz"))
    images = [nr.read_as_sitk_array(path).astype(np.float32) for path in cases]
    labels = [nr.read_as_sitk_array(raw / "labelsTr" / p.name.replace("_0000", "")) for p in cases]
    fingerprint = nr.ct_fingerprint(images, labels)
    network, dice, steps = nr.train_fold(images, labels, fingerprint)
    checkpoint = nr.nnunet_checkpoint(network, steps, dice)
    plans = nr.plans_json(fingerprint)
    folder = nr.write_results_folder(root / "results", plans, nr.dataset_json(4), checkpoint)
    return folder, raw, dice
