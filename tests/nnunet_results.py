"""A small nnU-Net v2 world for the tests: a raw dataset, plans, a trained 2d fold, inference.

Everything nnU-Net would do is written out here, independently of napari-advseg's code: the CT
fingerprint (foreground intensity statistics), ``CTNormalization``, the image arrays as SimpleITK
reads them (the file's voxel order reversed), training of a ``dynamic-network-architectures``
``PlainConvUNet`` with deep supervision, a checkpoint in nnU-Net's layout (NumPy scalars in
``logging`` and ``_best_ema``), and single-fold inference without mirroring or sliding window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

ORGANS = {"liver": 1, "spleen": 2, "left kidney": 3}
ORGAN_HU = {1: 120.0, 2: 260.0, 3: 400.0}
SPACING_ZYX = (4.0, 1.2, 1.5)
"""Slice thickness, row and column spacing (mm): rows and columns differ, to catch a swap."""
CASE_SHAPE = (8, 48, 64)
"""(slices, rows, columns) of each case, as SimpleITK's array: multiples of the stride, 4."""
TRAINER_FOLDER = "nnUNetTrainer__nnUNetPlans__2d"
DATASET_NAME = "Dataset042_TinyAbdomen"
FAST_ATTACK = ["--steps", "2", "--batch-size", "2", "--crop-size", "32", "--critic-steps", "1"]
FAST_ATTACK += ["--latent-d", "2", "--latent-v", "2", "--device", "cpu"]
"""train-attack options for a two-step attacker on the tiny cases (names and files, not quality)."""


def case_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels, (Z, Y, X) as SimpleITK's GetArrayFromImage returns them."""
    rng = np.random.default_rng(seed)
    depth, rows, cols = CASE_SHAPE
    z, y, x = np.indices(CASE_SHAPE, dtype=np.float32)
    image = np.full(CASE_SHAPE, -1000.0, np.float32)
    labels = np.zeros(CASE_SHAPE, np.uint8)
    body = ((y - rows / 2) / (rows * 0.46)) ** 2 + ((x - cols / 2) / (cols * 0.46)) ** 2 < 1
    image[body] = -80.0
    shift = rng.uniform(-3, 3, size=(3, 2))
    centres = {1: (0.45, 0.3, 0.16), 2: (0.45, 0.72, 0.12), 3: (0.68, 0.55, 0.1)}
    for label, (cy, cx, radius) in centres.items():
        dy, dx = shift[label - 1]
        grow = 1.0 - 0.25 * np.abs(z - depth / 2) / depth  # organs shrink away from the middle
        disc = ((y - cy * rows - dy) / rows) ** 2 + ((x - cx * cols - dx) / cols) ** 2 < (
            radius * grow
        ) ** 2
        image[disc] = ORGAN_HU[label]
        labels[disc] = label
    image += rng.normal(0, 20, CASE_SHAPE).astype(np.float32)
    return image, labels


def save_as_sitk_array(path: Path, array: np.ndarray, dtype: str) -> Path:
    """Write a (Z, Y, X) array so that SimpleITK would read it back as that array (LPS affine)."""
    sz, sy, sx = SPACING_ZYX
    affine = np.diag([-sx, -sy, sz, 1.0])  # an LPS-stored file, as DICOM converters write them
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(dtype), affine)
    nib.save(image, path)
    return path


def read_as_sitk_array(path: Path) -> np.ndarray:
    """nnU-Net's NibabelIO / SimpleITKIO array: the stored voxel order, reversed."""
    return np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)


def write_raw_dataset(root: Path, seeds: list[int]) -> Path:
    """An nnU-Net raw dataset folder (imagesTr/case_XXX_0000.nii.gz, labelsTr, dataset.json)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for index, seed in enumerate(seeds):
        image, labels = case_arrays(seed)
        save_as_sitk_array(root / "imagesTr" / f"case_{index:03d}_0000.nii.gz", image, "int16")
        save_as_sitk_array(root / "labelsTr" / f"case_{index:03d}.nii.gz", labels, "uint8")
    (root / "dataset.json").write_text(json.dumps(dataset_json(len(seeds))))
    return root


def dataset_json(cases: int) -> dict[str, Any]:
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **ORGANS},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": "TinyAbdomen",
        "licence": "synthetic test data",
    }


def ct_fingerprint(images: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    """nnU-Net's foreground intensity properties of channel 0 (all foreground voxels)."""
    voxels = np.concatenate([img[lab > 0] for img, lab in zip(images, labels, strict=True)])
    voxels = voxels.astype(np.float64)
    return {
        "max": float(voxels.max()),
        "mean": float(voxels.mean()),
        "median": float(np.median(voxels)),
        "min": float(voxels.min()),
        "percentile_00_5": float(np.percentile(voxels, 0.5)),
        "percentile_99_5": float(np.percentile(voxels, 99.5)),
        "std": float(voxels.std()),
    }


ARCH_KWARGS = {
    "n_stages": 3,
    "features_per_stage": [8, 16, 32],
    "conv_op": "torch.nn.modules.conv.Conv2d",
    "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
    "strides": [[1, 1], [2, 2], [2, 2]],
    "n_conv_per_stage": [2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


def plans_json(fingerprint: dict[str, float]) -> dict[str, Any]:
    """Plans as nnU-Net >= 2.3 writes them (a 2d and a 3d_fullres configuration)."""
    two_d = {
        "data_identifier": "nnUNetPlans_2d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 12,
        "patch_size": [48, 64],
        "median_image_size_in_voxels": [48.0, 64.0],
        "spacing": [SPACING_ZYX[1], SPACING_ZYX[2]],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": ARCH_KWARGS,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": True,
    }
    three_d = {
        **two_d,
        "data_identifier": "nnUNetPlans_3d_fullres",
        "patch_size": [8, 48, 64],
        "spacing": list(SPACING_ZYX),
    }
    return {
        "dataset_name": DATASET_NAME,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(SPACING_ZYX),
        "original_median_shape_after_transp": list(CASE_SHAPE),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"2d": two_d, "3d_fullres": three_d},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": fingerprint},
    }


def build_network(deep_supervision: bool) -> nn.Module:
    """The plans' network, built the way nnU-Net's ``get_network_from_plans`` does."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    kwargs = dict(ARCH_KWARGS)
    kwargs["conv_op"] = nn.Conv2d
    kwargs["norm_op"] = nn.InstanceNorm2d
    kwargs["nonlin"] = nn.LeakyReLU
    network = PlainConvUNet(
        input_channels=1, num_classes=len(ORGANS) + 1, deep_supervision=deep_supervision, **kwargs
    )
    network.apply(PlainConvUNet.initialize)
    return network


def ct_normalize(image: np.ndarray, fingerprint: dict[str, float]) -> np.ndarray:
    """nnU-Net's CTNormalization."""
    clipped = np.clip(image, fingerprint["percentile_00_5"], fingerprint["percentile_99_5"])
    return ((clipped - fingerprint["mean"]) / max(fingerprint["std"], 1e-8)).astype(np.float32)


def dice_per_organ(prediction: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Dice of each organ over one case (None where neither holds it)."""
    scores: dict[str, float | None] = {}
    for name, value in ORGANS.items():
        pred, ref = prediction == value, labels == value
        total = int(pred.sum() + ref.sum())
        scores[name] = None if total == 0 else 2.0 * float((pred & ref).sum()) / total
    return scores


@torch.inference_mode()
def predict_case(network: nn.Module, normalized: np.ndarray) -> np.ndarray:
    """nnU-Net-style prediction of a (Z, Y, X) normalised case with a 2d network: one fold,
    no mirroring, the whole slice at once (its sides are multiples of the stride)."""
    network.eval()
    slices = torch.from_numpy(normalized)[:, None]
    logits = network(slices)
    logits = logits[0] if isinstance(logits, list | tuple) else logits
    return logits.argmax(1).numpy().astype(np.uint8)


def train_fold(
    images: list[np.ndarray], labels: list[np.ndarray], fingerprint: dict[str, float]
) -> tuple[nn.Module, dict[str, float], int]:
    """Train until the mean Dice exceeds 0.5 on at least two organs (checked every 20 steps).

    The data are easy, so this is reached in tens of steps on any CPU; the bound of 600 steps
    ends a test that would otherwise never finish, with a message saying so.
    """
    torch.manual_seed(0)
    network = build_network(deep_supervision=True)
    inputs = torch.from_numpy(np.concatenate([ct_normalize(i, fingerprint) for i in images]))
    targets = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, 601):
        network.train()
        batch = torch.randint(0, inputs.shape[0], (12,), generator=generator)
        outputs = network(inputs[batch][:, None])
        loss = nn.functional.cross_entropy(outputs[0], targets[batch])
        for level, output in enumerate(outputs[1:], start=1):  # deep supervision
            small = targets[batch][:, :: 2**level, :: 2**level]
            loss = loss + 0.5**level * nn.functional.cross_entropy(output, small)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            dice = reference_dice(network, images, labels, fingerprint)
            if sum(score > 0.5 for score in dice.values()) >= 2:
                return network, dice, step
    raise AssertionError(f"the tiny nnU-Net did not reach Dice 0.5 on two organs: {dice}")


def reference_dice(
    network: nn.Module,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    fingerprint: dict[str, float],
) -> dict[str, float]:
    """Mean Dice per organ over the cases (the test's own nnU-Net-style inference)."""
    per_case = [
        dice_per_organ(predict_case(network, ct_normalize(image, fingerprint)), label)
        for image, label in zip(images, labels, strict=True)
    ]
    return {
        name: float(np.mean([case[name] for case in per_case if case[name] is not None]))
        for name in ORGANS
    }


def nnunet_checkpoint(network: nn.Module, epoch: int, dice: dict[str, float]) -> dict[str, Any]:
    """A checkpoint dict in nnU-Net v2's layout, NumPy scalars where nnU-Net puts them."""
    ema = np.float64(np.mean(list(dice.values())))
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": torch.optim.SGD(network.parameters(), lr=0.01).state_dict(),
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float64(v) for v in (0.2, ema)],
            "ema_fg_dice": [np.float64(0.2), ema],
            "dice_per_class_or_region": [[np.float32(v) for v in dice.values()]],
            "train_losses": [np.float32(1.1), np.float32(0.4)],
            "val_losses": [np.float32(1.0), np.float32(0.5)],
            "lrs": [0.01, 0.0099],
            "epoch_start_timestamps": [1.0, 2.0],
            "epoch_end_timestamps": [1.5, 2.5],
        },
        "_best_ema": ema,
        "current_epoch": epoch,
        "init_args": {
            "plans": {"plans_name": "nnUNetPlans"},
            "configuration": "2d",
            "fold": 0,
            "dataset_json": {"labels": {"background": 0, **ORGANS}},
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }


def write_results_folder(
    results: Path,
    plans: dict[str, Any],
    dataset: dict[str, Any],
    checkpoint: dict[str, Any],
    fold: str = "0",
    name: str = "checkpoint_final.pth",
) -> Path:
    """``results/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__2d/fold_N/<name>``; the trainer
    folder is returned."""
    folder = results / DATASET_NAME / TRAINER_FOLDER
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "dataset_fingerprint.json").write_text("{}")
    torch.save(checkpoint, folder / f"fold_{fold}" / name)
    return folder


def untrained_results_folder(root: Path, fingerprint: dict[str, float] | None = None) -> Path:
    """A results folder with a randomly initialised fold 0 (for the loading tests)."""
    fingerprint = fingerprint or {
        "max": 500.0,
        "mean": 200.0,
        "median": 200.0,
        "min": -100.0,
        "percentile_00_5": 50.0,
        "percentile_99_5": 450.0,
        "std": 110.0,
    }
    torch.manual_seed(0)
    network = build_network(deep_supervision=True)
    checkpoint = nnunet_checkpoint(network, 1, {name: 0.1 for name in ORGANS})
    return write_results_folder(root, plans_json(fingerprint), dataset_json(4), checkpoint)
