"""Users' own networks, fed the way their specs say, in TorchScript and torch.export form.

Five user models are built here around the stored tiny U-Net (``tests/data/tiny_unet``: 3 mm,
per-subject z-score after a [-1000, 1000] HU clip, channels pancreas, kidneys, liver, spleen),
each wrapped so that it must be fed otherwise: a MONAI-style 1.5 mm HU-window model, an
nnU-Net-style dataset-normalised one, one that needs multiples of 32, one that takes RAS slices
and a 13-class BTCV one. Each is exported as TorchScript and as a dynamic-shape ``.pt2``.

``advseg eval-seg`` must give the Dice of a plain reference pipeline written here with nibabel
and torch alone (independent of napari_advseg's inference code), and ``train-attack``,
``generate`` and the explorer must run on each with the model's organ names. Dice is compared
pipeline against pipeline, never against numbers from training.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nibabel import orientations
from torch import nn
from torch.export import Dim

from napari_advseg.cli import main
from napari_advseg.data.label_remap import remapped_file_volumes
from napari_advseg.errors import CheckpointError
from napari_advseg.explorer import ExplorerSession
from napari_advseg.segmentation import load_segmentation_model, load_unet
from napari_advseg.training.attacker_io import load_attacker

from .conftest import TEST_DATA

# --- the user models -----------------------------------------------------------------------------

UNET_ORGANS = ("pancreas", "kidneys", "liver", "spleen")
"""Channels 1..4 of the stored U-Net (also the phantom's label values 1..4)."""
HU_MEAN, HU_STD = -600.0, 480.0
"""Fixed z-score constants the wrappers feed the U-Net with: about the per-subject statistics of
the phantom after the U-Net's [-1000, 1000] HU clip (measured once: -540 to -617 and 475 to
487 HU), with which the U-Net still segments the phantom's liver and kidneys."""
WINDOW_LOW, WINDOW_HIGH = -175.0, 250.0
NNUNET_CLIP = (-958.0, 327.0)
NNUNET_MEAN, NNUNET_STD = -570.0, 460.0
"""nnU-Net's dataset-wide statistics (after its clip) for the nnunet model, fixed like nnU-Net's."""
ABSENT_LOGIT = -30.0
"""Logit of the btcv13 channels the U-Net knows nothing about: never chosen."""
BTCV13 = (
    "spleen",
    "kidneys",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal vein and splenic vein",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
    "duodenum",
)


def _channels(organs: tuple[str, ...]) -> list[int]:
    """For each model channel (background first), the U-Net channel it copies (5: absent)."""
    return [0] + [1 + UNET_ORGANS.index(o) if o in UNET_ORGANS else 5 for o in organs]


class MonaiStyle(nn.Module):
    """1.5 mm, HU window [-175, 250] -> [0, 1], outputs background, liver, spleen, kidneys,
    pancreas: back to HU, fixed z-score, 2x average pooling to 3 mm, the U-Net, 2x upsampling."""

    organs = ("liver", "spleen", "kidneys", "pancreas")

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("order", torch.tensor(_channels(self.organs)))
        self.low, self.width = WINDOW_LOW, WINDOW_HIGH - WINDOW_LOW
        self.mean, self.std = HU_MEAN, HU_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x * self.width + self.low
        coarse = F.avg_pool2d((hu - self.mean) / self.std, 2)
        logits = self.unet(coarse)
        size = (x.shape[-2], x.shape[-1])
        fine = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return fine.index_select(1, self.order)


class NnunetStyle(nn.Module):
    """3 mm, dataset z-score after a [-958, 327] HU clip, its own channel order."""

    organs = ("liver", "spleen", "pancreas", "kidneys")

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("order", torch.tensor(_channels(self.organs)))
        self.data_mean, self.data_std = NNUNET_MEAN, NNUNET_STD
        self.mean, self.std = HU_MEAN, HU_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x * self.data_std + self.data_mean
        return self.unet((hu - self.mean) / self.std).index_select(1, self.order)


class Stride32(nn.Module):
    """The U-Net as it is, but refusing sides that are not multiples of 32 (no padding inside)."""

    organs = UNET_ORGANS

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 != 0 or x.shape[-1] % 32 != 0:
            raise ValueError("input height and width must be multiples of 32")
        return self.unet(x)


class RasSlices(nn.Module):
    """Takes ``data[:, :, k]`` of the RAS volume: the radiological slice transposed, then both
    axes flipped; the U-Net sees the radiological slice, and its logits go back."""

    organs = UNET_ORGANS

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        radiological = x.flip([2, 3]).transpose(2, 3)
        return self.unet(radiological).transpose(2, 3).flip([2, 3])


class Btcv13(nn.Module):
    """Background + 13 BTCV organs; those the U-Net knows get its logits, the rest a constant."""

    organs = BTCV13

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("order", torch.tensor(_channels(self.organs)))
        self.absent = ABSENT_LOGIT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.unet(x)
        absent = torch.full_like(logits[:, :1], self.absent)
        return torch.cat([logits, absent], dim=1).index_select(1, self.order)


def _labels(organs: tuple[str, ...]) -> dict[str, str]:
    return {str(channel): organ for channel, organ in enumerate(organs, start=1)}


ZSCORE = {"kind": "zscore", "clip_hu": [-1000, 1000]}


@dataclass(frozen=True)
class UserModel:
    """A wrapper class, its spec file's content, and the export's H and W step."""

    wrapper: type[nn.Module]
    spec: dict[str, Any]
    multiple: int

    @property
    def organs(self) -> tuple[str, ...]:
        return self.wrapper.organs  # type: ignore[return-value]


MODELS = {
    "monai": UserModel(
        MonaiStyle,
        {
            "labels": _labels(MonaiStyle.organs),
            "pixel_spacing_mm": [1.5, 1.5],
            "normalization": {
                "kind": "window",
                "window_hu": [WINDOW_LOW, WINDOW_HIGH],
                "output_range": [0, 1],
            },
            "input_multiple": 16,
        },
        16,
    ),
    "nnunet": UserModel(
        NnunetStyle,
        {
            "labels": _labels(NnunetStyle.organs),
            "pixel_spacing_mm": [3.0, 3.0],
            "normalization": {
                "kind": "dataset",
                "clip_hu": list(NNUNET_CLIP),
                "mean": NNUNET_MEAN,
                "std": NNUNET_STD,
            },
            "input_multiple": 8,
        },
        8,
    ),
    "stride32": UserModel(
        Stride32,
        {
            "labels": _labels(UNET_ORGANS),
            "pixel_spacing_mm": [3.0, 3.0],
            "normalization": ZSCORE,
            "input_multiple": 32,
        },
        32,
    ),
    "ras": UserModel(
        RasSlices,
        {
            "labels": _labels(UNET_ORGANS),
            "pixel_spacing_mm": [3.0, 3.0],
            "normalization": ZSCORE,
            "input_multiple": 8,
            "orientation": "ras",
        },
        8,
    ),
    "btcv13": UserModel(
        Btcv13,
        {
            "labels": _labels(BTCV13),
            "pixel_spacing_mm": [3.0, 3.0],
            "normalization": ZSCORE,
            "input_multiple": 8,
        },
        8,
    ),
}
FORMATS = ("torchscript", "pt2")
END_TO_END_FORMAT = {
    "monai": "torchscript",
    "nnunet": "torchscript",
    "stride32": "pt2",
    "ras": "torchscript",
    "btcv13": "pt2",
}
"""Each model's format for the attack's end-to-end run (both formats get some)."""
FAST = ["--steps", "2", "--batch-size", "2", "--crop-size", "64", "--critic-steps", "1"]
FAST += ["--latent-d", "2", "--latent-v", "2", "--device", "cpu"]
"""A few attacker training steps (as in test_cli_attack.py)."""
MAX_STEPS = 64
"""Largest height and width, in steps of the model's multiple, an export accepts."""
MAX_BATCH = 256
"""Largest batch an export accepts (the pipelines feed batches of slices)."""


def _script(wrapper: type[nn.Module], traced_unet: nn.Module, path: Path) -> Path:
    """Save a TorchScript file of ``wrapper`` around the traced U-Net."""
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(wrapper(traced_unet).eval()).save(str(path))
    return path


def _trace(unet: nn.Module) -> nn.Module:
    """The U-Net as TorchScript: traced, since the compiler cannot read its ``zip(strict=)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(unet, torch.zeros(1, 1, 32, 32))


def _export(module: nn.Module, multiple: int, path: Path, dynamic: bool = True) -> Path:
    """Save a ``torch.export`` program with H and W any multiple of ``multiple`` (or fixed)."""
    x = torch.zeros(2, 1, 4 * multiple, 6 * multiple)
    shapes = None
    if dynamic:
        steps = {"min": 2, "max": MAX_STEPS}
        shapes = {
            "x": {
                0: Dim("batch", min=1, max=MAX_BATCH),
                2: multiple * Dim("rows", **steps),
                3: multiple * Dim("cols", **steps),
            }
        }
    torch.export.save(torch.export.export(module.eval(), (x,), dynamic_shapes=shapes), path)
    return path


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    network = load_unet(TEST_DATA / "tiny_unet")[0].network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


@pytest.fixture(scope="module")
def exported(unet, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, Path]]:
    """(model, format) -> (model file, spec file), each model in both formats."""
    folder = tmp_path_factory.mktemp("user_models")
    traced = _trace(unet)
    files = {}
    for name, user in MODELS.items():
        spec = folder / f"{name}.json"
        spec.write_text(json.dumps(user.spec))
        files[name, "torchscript"] = (_script(user.wrapper, traced, folder / f"{name}.pt"), spec)
        module = user.wrapper(unet).eval()
        files[name, "pt2"] = (_export(module, user.multiple, folder / f"{name}.pt2"), spec)
    return files


# --- the data ------------------------------------------------------------------------------------

PHANTOM_LABELS = {"1": "pancreas", "2": "kidneys", "3": "liver", "4": "spleen"}
"""The phantom's label values by organ name: eval-seg gets it as --label-map, so each model's
channels are matched to the data by name."""
SUBJECTS = {3: "LPS", 4: "ALS", 5: "RPI"}
"""Phantom subject -> the voxel order its files are written in (ALS: in-plane axes swapped;
RPI: both in-plane axes and the slice order flipped; neither is RAS or LPS)."""
SLICES = slice(5, 11)
ROWS, COLS = slice(1, 63), slice(2, 62)
"""A crop of the 12 x 64 x 64 phantom at 6 mm: 6 slices of 62 x 60 pixels, sides that need
padding at every model's spacing (124 x 120 at 3 mm, 248 x 240 at 1.5 mm)."""


@dataclass(frozen=True)
class Subject:
    """One subject's files and its canonical arrays (z, y, x: LPS order transposed)."""

    image: Path
    labels: Path
    hu: np.ndarray
    organ: np.ndarray  # phantom label values


def _save(path: Path, zyx: np.ndarray, spacing_zyx: tuple[float, ...], codes: str, dtype) -> Path:
    """Write a canonical (z, y, x) array as NIfTI in the voxel order ``codes``."""
    sz, sy, sx = spacing_zyx
    lps = nib.Nifti1Image(zyx.transpose(2, 1, 0).astype(dtype), np.diag([-sx, -sy, sz, 1.0]))
    wanted = orientations.ornt_transform(
        orientations.axcodes2ornt("LPS"), orientations.axcodes2ornt(tuple(codes))
    )
    image = lps.as_reoriented(wanted)
    assert "".join(orientations.aff2axcodes(image.affine)) == codes
    nib.save(image, path)
    return path


@pytest.fixture(scope="module")
def subjects(cohort, tmp_path_factory) -> dict[int, Subject]:
    folder = tmp_path_factory.mktemp("user_data")
    found = {}
    for index, codes in SUBJECTS.items():
        volume = cohort.subject(index)
        hu = np.rint(volume.image[SLICES, ROWS, COLS]).astype(np.int16)
        organ = volume.labels[SLICES, ROWS, COLS].astype(np.uint8)
        image = _save(folder / f"s{index}_ct.nii.gz", hu, volume.spacing, codes, np.int16)
        labels = _save(folder / f"s{index}_labels.nii.gz", organ, volume.spacing, codes, np.uint8)
        found[index] = Subject(image, labels, hu.astype(np.float32), organ)
    return found


@pytest.fixture(scope="module")
def label_map_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("label_map") / "phantom_labels.json"
    path.write_text(json.dumps(PHANTOM_LABELS))
    return path


# --- the reference pipeline: nibabel and torch only -----------------------------------------------


def _reoriented(path: Path, codes: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A file's voxels in the order ``codes`` and their sizes (mm), via nibabel alone."""
    image = nib.load(path)
    if codes == "RAS":
        image = nib.as_closest_canonical(image)
    else:
        wanted = orientations.ornt_transform(
            orientations.io_orientation(image.affine), orientations.axcodes2ornt(tuple(codes))
        )
        image = image.as_reoriented(wanted)
    return np.asarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def _model_slices(path: Path, orientation: str) -> tuple[np.ndarray, tuple[float, float]]:
    """(Z, H, W) slices as the model takes them, and their (rows, columns) pixel size in mm.

    Radiological: rows anterior -> posterior, columns patient right -> left (``LPS`` voxels,
    ``data[:, :, k].T``). RAS: ``data[:, :, k]`` of ``nib.as_closest_canonical``.
    """
    if orientation == "ras":
        data, (si, sj, _) = _reoriented(path, "RAS")
        return data.transpose(2, 0, 1), (si, sj)
    data, (si, sj, _) = _reoriented(path, "LPS")
    return data.transpose(2, 1, 0), (sj, si)


def _normalise(hu: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    kind = normalization["kind"]
    if kind == "window":
        low, high = normalization["window_hu"]
        out_low, out_high = normalization["output_range"]
        return (np.clip(hu, low, high) - low) / (high - low) * (out_high - out_low) + out_low
    clipped = np.clip(hu, *normalization["clip_hu"])
    if kind == "dataset":
        return (clipped - normalization["mean"]) / normalization["std"]
    return (clipped - clipped.mean(dtype=np.float64)) / clipped.std(dtype=np.float64)


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == size:
        return maps
    shrink = size[0] < maps.shape[-2] or size[1] < maps.shape[-1]
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False, antialias=shrink)


@torch.no_grad()
def _reference_prediction(network: nn.Module, spec: dict[str, Any], path: Path) -> np.ndarray:
    """(Z, H, W) model channels in the model's own slice layout, by the plain pipeline."""
    hu, spacing = _model_slices(path, spec.get("orientation", "radiological"))
    normalised = _normalise(hu.astype(np.float64), spec["normalization"]).astype(np.float32)
    images = torch.from_numpy(normalised)[:, None]
    target = spec["pixel_spacing_mm"]
    size = tuple(round(n * s / t) for n, s, t in zip(hu.shape[1:], spacing, target, strict=True))
    resampled = _resize(images, size)
    multiple = spec["input_multiple"]
    pad_h, pad_w = -size[0] % multiple, -size[1] % multiple
    top, left = pad_h // 2, pad_w // 2
    padding = (left, pad_w - left, top, pad_h - top)
    padded = F.pad(resampled, padding, value=float(normalised.min()))
    probabilities = torch.softmax(network(padded), dim=1)
    cropped = probabilities[..., top : top + size[0], left : left + size[1]]
    return _resize(cropped, tuple(hu.shape[1:])).argmax(dim=1).numpy()


def _to_canonical(slices: np.ndarray, orientation: str) -> np.ndarray:
    """Model-layout (Z, H, W) slices in canonical (z, y, x): LPS voxels transposed."""
    if orientation == "ras":
        return np.ascontiguousarray(slices[:, ::-1, ::-1].transpose(0, 2, 1))
    return slices


def _dice(prediction: np.ndarray, organ: np.ndarray, organs: tuple[str, ...]) -> dict[str, Any]:
    """3D Dice per organ name: prediction channels by the model's names, labels by the data's."""
    values = {name: int(value) for value, name in PHANTOM_LABELS.items()}
    result: dict[str, float | None] = {}
    for channel, name in enumerate(organs, start=1):
        predicted = prediction == channel
        truth = organ == values[name] if name in values else np.zeros_like(predicted)
        total = int(predicted.sum()) + int(truth.sum())
        result[name] = None if total == 0 else 2.0 * int((predicted & truth).sum()) / total
    return result


@dataclass(frozen=True)
class Reference:
    """Per subject: the prediction in canonical (z, y, x) model channels, and its Dice."""

    prediction: dict[int, np.ndarray]
    dice: dict[int, dict[str, float | None]]


@pytest.fixture(scope="module")
def references(unet, subjects) -> dict[str, Reference]:
    """The reference pipeline's results for each model (its eager wrapper, once per model)."""
    found = {}
    for name, user in MODELS.items():
        network = user.wrapper(unet).eval()
        orientation = user.spec.get("orientation", "radiological")
        predictions, dice = {}, {}
        for index, subject in subjects.items():
            slices = _reference_prediction(network, user.spec, subject.image)
            organ = _model_slices(subject.labels, orientation)[0]
            dice[index] = _dice(slices, organ, user.organs)
            predictions[index] = _to_canonical(slices, orientation)
        found[name] = Reference(predictions, dice)
    return found


def test_reference_reads_the_files_as_written(subjects):
    """The reference's own reading of each file is the array that was written."""
    for subject in subjects.values():
        assert np.array_equal(_model_slices(subject.image, "radiological")[0], subject.hu)
        ras = _model_slices(subject.labels, "ras")[0]
        assert np.array_equal(_to_canonical(ras, "ras"), subject.organ)


# --- eval-seg against the reference ---------------------------------------------------------------


def _mean(rows: list[dict[str, float | None]], name: str) -> float | None:
    values = [row[name] for row in rows if row[name] is not None]
    return float(np.mean(values)) if values else None


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.01)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(MODELS))
def test_eval_seg_dice_equals_the_reference_pipeline(
    name, fmt, exported, subjects, references, label_map_file, tmp_path
):
    model_file, spec_file = exported[name, fmt]
    out = tmp_path / "dice.json"
    code = main(
        [
            "eval-seg",
            "--model",
            str(model_file),
            "--model-spec",
            str(spec_file),
            "--images",
            *(str(s.image) for s in subjects.values()),
            "--labels",
            *(str(s.labels) for s in subjects.values()),
            "--label-map",
            str(label_map_file),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    organs = MODELS[name].organs
    reference = references[name].dice
    assert [row["subject"] for row in result["subjects"]] == [
        s.image.name for s in subjects.values()
    ]
    for row, index in zip(result["subjects"], subjects, strict=True):
        assert list(row["dice"]) == list(organs)
        for organ in organs:
            assert _close(row["dice"][organ], reference[index][organ]), (index, organ, row)
    expected = {organ: _mean(list(reference.values()), organ) for organ in organs}
    for organ in organs:
        assert _close(result["dice"][organ], expected[organ]), (organ, result["dice"], expected)


def test_the_reference_pipeline_segments_the_phantom(references):
    """The comparisons above mean something: every model finds the liver in every subject."""
    for name, reference in references.items():
        for index, dice in reference.dice.items():
            assert dice["liver"] > 0.5, (name, index, dice)
            assert any(dice[organ] for organ in MODELS[name].organs if organ != "liver")


# --- attacks on the user models, end to end -------------------------------------------------------

ATTACKED = 4
"""The subject attacked: its files are in ALS order (neither RAS nor LPS)."""
OUTPUTS = ("IDV", "V", "Dx_mm", "Dy_mm", "S0", "SDV")


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.mean(a == b))


@pytest.mark.parametrize("name", list(MODELS))
def test_train_attack_generate_and_explore(
    name, exported, subjects, references, label_map_file, tmp_path
):
    fmt = END_TO_END_FORMAT[name]
    model_file, spec_file = exported[name, fmt]
    subject = subjects[ATTACKED]
    organs = list(MODELS[name].organs)
    model = ["--model", str(model_file), "--model-spec", str(spec_file)]
    attacker = tmp_path / "attacker"
    image = ["--image", str(subject.image)]
    assert main(["train-attack", *model, "--out", str(attacker), *image, *FAST]) == 0
    target = json.loads((attacker / "config.json").read_text())["target"]
    assert target["labels"] == organs
    assert target["spec"]["orientation"] == MODELS[name].spec.get("orientation", "radiological")

    out = tmp_path / "generated"
    assert main(["generate", *model, "--attacker", str(attacker), *image, "--out", str(out)]) == 0
    source = nib.load(subject.image)
    stem = subject.image.name.removesuffix(".nii.gz")
    for tag in OUTPUTS:
        written = nib.load(out / f"{stem}_{tag}.nii.gz")
        assert written.shape == source.shape, tag
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    reference = references[name].prediction[ATTACKED]
    assert (reference > 0).mean() > 0.05
    s0 = _reoriented(out / f"{stem}_S0.nii.gz", "LPS")[0].transpose(2, 1, 0)
    assert _agreement(s0, reference) > 0.99

    loaded = load_segmentation_model(model_file, spec_file)
    volume = remapped_file_volumes(
        [subject.image], [subject.labels], loaded.spec.label_map, label_map_file
    )[0]
    assert np.array_equal(volume.image, subject.hu)
    session = ExplorerSession(loaded, load_attacker(attacker), volume)
    index = session.num_slices // 2
    result = session.attack_slice(index, *session.posterior_mean(index))
    metrics = result.metrics
    assert metrics.reference == "ground truth"
    assert list(metrics.dice_s0) == list(metrics.dice_dv_warped) == organs
    assert metrics.dice_s0["liver"] is not None and metrics.dice_s0["liver"] > 0
    assert result.s0.shape == result.attacked_hu.shape == subject.hu.shape[1:]
    assert _agreement(result.s0, reference[index]) > 0.98


# --- what a model exported otherwise gets ---------------------------------------------------------


def test_a_static_shape_pt2_is_refused_at_load_in_one_line(unet, tmp_path):
    """A program exported for one input size fails the load-time probe, with one line."""
    path = _export(NnunetStyle(unet).eval(), 8, tmp_path / "static.pt2", dynamic=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(MODELS["nnunet"].spec))
    with pytest.raises(CheckpointError, match="dynamic_shapes") as raised:
        load_segmentation_model(path, spec)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_stride_32_model_described_with_16_is_caught_at_load(exported, fmt, tmp_path):
    model_file = exported["stride32", fmt][0]
    spec = tmp_path / "spec16.json"
    spec.write_text(json.dumps({**MODELS["stride32"].spec, "input_multiple": 16}))
    with pytest.raises(CheckpointError, match='"input_multiple": 32') as raised:
        load_segmentation_model(model_file, spec)
    assert "\n" not in str(raised.value)
