"""Hostile and mistaken input through ``advseg`` (issue 8): one line, exit 2, nothing lost.

Each test names the defect of issue 8 it covers. A refusal must come before any work: no model
loaded, no data read, nothing written.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import weakref
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.cli import main
from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError, ResourceError
from napari_advseg.segmentation import save_unet

from .conftest import blob_volume, save_array, save_pair

TINY_SEG = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--patch-size", "16"]
TINY_NET = ["--base-channels", "2", "--depth", "3", "--device", "cpu"]


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_unet):
    network, spec = tiny_unet
    return save_unet(tmp_path / "tiny_model", network, spec, {"command": "test"})


@pytest.fixture
def pair(tmp_path):
    return save_pair(tmp_path, blob_volume(), "case")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads a segmentation model or an attacker."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the request was checked")

    monkeypatch.setattr("napari_advseg.segmentation.load_segmentation_model", refuse)
    monkeypatch.setattr("napari_advseg.training.attacker_io.load_attacker", refuse)


def one_line_error(capsys, code: int, status: int = 2) -> str:
    """Assert a single ``advseg: error:`` line (progress bars aside) and return it."""
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "advseg" in line]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- defect 1: work is overwritten silently ---------------------------------------------------


@pytest.mark.parametrize("command", ["train-seg", "train-attack"])
def test_defect1_training_into_a_checkpoint_without_resume_is_refused(
    command, tmp_path, tiny_checkpoint, pair, capsys, no_model_loading
):
    out = tmp_path / "existing"
    network_folder = save_unet(out, *_tiny(), {"command": "earlier work"})
    (network_folder / "MODEL_CARD.md").write_text("# my model\n")
    before = snapshot(out)
    data = ["--image", str(pair[0]), "--labels", str(pair[1])]
    extra = TINY_SEG + TINY_NET if command == "train-seg" else ["--steps", "1"]
    line = one_line_error(capsys, main([command, "--out", str(out), *data, *extra]))
    assert "--resume" in line and "--overwrite" in line and str(out) in line
    assert snapshot(out) == before


def test_defect1_overwrite_replaces_the_checkpoint_and_keeps_other_files(tmp_path, pair, capsys):
    out = tmp_path / "existing"
    save_unet(out, *_tiny(), {"command": "earlier work"})
    (out / "MODEL_CARD.md").write_text("# my model\n")
    old_weights = (out / "weights.safetensors").read_bytes()
    data = ["--image", str(pair[0]), "--labels", str(pair[1])]
    code = main(["train-seg", "--out", str(out), *data, *TINY_SEG, *TINY_NET, "--overwrite"])
    assert code == 0, capsys.readouterr().err
    assert (out / "MODEL_CARD.md").read_text() == "# my model\n"
    assert (out / "weights.safetensors").read_bytes() != old_weights


def _tiny():
    import torch

    from napari_advseg.nets.unet import UNet, UNetConfig
    from napari_advseg.training.seg_trainer import make_spec

    torch.manual_seed(0)
    config = UNetConfig(base_channels=2, depth=3)
    return UNet(config).eval(), make_spec(config)


# --- defect 3: outputs fail after the work is done --------------------------------------------


def _output_commands(tmp_path: Path, pair: tuple[Path, Path], model: Path) -> dict[str, list]:
    """Each command with the output option under test last, as ``{name: [argv-without-it]}``."""
    data = ["--image", str(pair[0]), "--labels", str(pair[1])]
    return {
        "sample-data --out": ["sample-data", "--subjects", "3", "--out"],
        "train-seg --out": ["train-seg", *data, *TINY_SEG, *TINY_NET, "--out"],
        "eval-seg --json": ["eval-seg", "--model", str(model), *data, "--json"],
        "train-attack --out": ["train-attack", "--model", str(model), *data, "--out"],
        "sweep --out": ["sweep", "--model", str(model), "--attackers", str(model), *data, "--out"],
        "sweep --json": [
            "sweep",
            "--model",
            str(model),
            "--attackers",
            str(model),
            *data,
            "--out",
            str(tmp_path / "sweep_out"),
            "--json",
        ],
        "generate --out": ["generate", "--model", str(model), "--image", str(pair[0]), "--out"],
    }


OUTPUTS = [
    "sample-data --out",
    "train-seg --out",
    "eval-seg --json",
    "train-attack --out",
    "sweep --out",
    "sweep --json",
    "generate --out",
]


@pytest.mark.parametrize(
    ("option", "where"),
    [
        (option, where)
        for option in OUTPUTS
        for where in ("a file", "a folder", "under a file", "read-only")
        # a folder is what --out wants, and a file what --json wants
        if (where != "a folder" or option.endswith("--json"))
        and (where != "a file" or not option.endswith("--json"))
    ],
)
def test_defect3_every_output_is_checked_before_any_work(
    option, where, tmp_path, pair, tiny_checkpoint, capsys, monkeypatch, no_model_loading
):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    target = {
        "a file": blocker,
        "a folder": tmp_path / "a_folder",
        "under a file": blocker / "inside",
        "read-only": tmp_path / "new_output",
    }[where]
    (tmp_path / "a_folder").mkdir()
    if where == "read-only":
        # tests run as root, which ignores permission bits: fail the write probe as a read-only
        # file system does
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr("napari_advseg.validation.tempfile.NamedTemporaryFile", read_only)
    monkeypatch.setattr(
        "napari_advseg.cli._training_data",
        lambda args: pytest.fail("training data was loaded before --out was checked"),
    )
    before = snapshot(tmp_path)
    argv = _output_commands(tmp_path, pair, tiny_checkpoint)[option] + [str(target)]
    line = one_line_error(capsys, main(argv))
    if where == "read-only":
        assert "Read-only file system" in line
    else:
        assert str(target) in line
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "new_output").exists()


# --- defect 4: NaN passes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train-attack", "--out", "o", "--xi", "nan"], "--xi"),
        (["train-attack", "--out", "o", "--xi", "inf"], "--xi"),
        (["train-attack", "--out", "o", "--xi", "-1"], "--xi"),
        (["train-attack", "--out", "o", "--gradient-penalty", "-1"], "--gradient-penalty"),
        (["train-attack", "--out", "o", "--lr", "nan"], "--lr"),
        (["train-attack", "--out", "o", "--crop-size", "100000"], "--crop-size"),
        (["train-attack", "--out", "o", "--lambda-d", "-0.1"], "--lambda-d"),
        (["train-attack", "--out", "o", "--steps", "0"], "--steps"),
        (["train-attack", "--out", "o", "--latent-d", "0"], "--latent-d"),
        (["train-attack", "--out", "o", "--seed", "-1"], "--seed"),
        (["generate", "--image", "x.nii", "--out", "o", "--temperature", "nan"], "--temperature"),
        (["generate", "--image", "x.nii", "--out", "o", "--temperature", "-1"], "--temperature"),
        (["generate", "--image", "x.nii", "--out", "o", "--samples", "100000"], "--samples"),
        (["generate", "--image", "x.nii", "--out", "o", "--samples", "0"], "--samples"),
        (["sample-data", "--out", "o", "--subjects", "0"], "--subjects"),
        (["eval-seg", "--sample", "phantom", "--subjects", "100000"], "--subjects"),
        (["train-seg", "--out", "o", "--sample", "real", "--spacing", "0"], "--spacing"),
        (["train-seg", "--out", "o", "--sample", "real", "--spacing", "-3"], "--spacing"),
        (["train-seg", "--out", "o", "--sample", "real", "--lr", "-0.001"], "--lr"),
        (["train-seg", "--out", "o", "--sample", "real", "--lr", "nan"], "--lr"),
        (["train-seg", "--out", "o", "--sample", "real", "--patch-size", "0"], "--patch-size"),
        (["train-seg", "--out", "o", "--sample", "real", "--batch-size", "0"], "--batch-size"),
        (["train-seg", "--out", "o", "--sample", "real", "--epochs", "2.5"], "--epochs"),
        (["train-seg", "--out", "o", "--sample", "real", "--dice-weight", "inf"], "--dice-weight"),
        (["sweep", "--xi", "1", "nan"], "--xi"),
    ],
)
def test_defect4_bad_numbers_are_refused_in_one_line(
    argv, option, tmp_path, capsys, monkeypatch, no_model_loading
):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, main(argv))
    assert f"argument {option}" in line
    assert list(tmp_path.iterdir()) == []


def test_defect4_generate_refuses_samples_that_would_fill_the_disk(
    tmp_path, pair, capsys, monkeypatch, no_model_loading
):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "napari_advseg.validation.shutil.disk_usage",
        lambda path: usage._replace(free=1_000_000),
    )
    out = tmp_path / "out"
    line = one_line_error(
        capsys, main(["generate", "--image", str(pair[0]), "--out", str(out), "--samples", "100"])
    )
    assert "disk" in line and "--samples 100" in line
    assert not out.exists()


def test_defect4_and_8_volume_spacing_is_checked_with_the_package_error():
    image = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(InvalidInputError, match="spacing"):
        Volume(image, spacing=("a", 1, 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="spacing"):
        Volume(image, spacing=None)  # type: ignore[arg-type]


# --- defect 2: memory grows without bound -----------------------------------------------------


def test_defect2_eval_seg_holds_one_subject_at_a_time(tmp_path, tiny_checkpoint, monkeypatch):
    from napari_advseg.data.samples import PhantomCohort

    made: list[weakref.ref] = []
    alive_during_segmentation: list[int] = []

    def subject(self, index):
        volume = blob_volume(seed=index, name=f"subject{index}")
        made.append(weakref.ref(volume))
        return volume

    def segment(model, volume, batch_size=16):
        alive_during_segmentation.append(sum(ref() is not None for ref in made))
        return volume.labels.copy()

    monkeypatch.setattr(PhantomCohort, "subject", subject)
    monkeypatch.setattr("napari_advseg.inference.segment_volume", segment)
    argv = ["eval-seg", "--model", str(tiny_checkpoint), "--sample", "phantom", "--split", "all"]
    assert main([*argv, "--subjects", "12"]) == 0
    assert len(made) == 12
    assert max(alive_during_segmentation) <= 2  # the current subject (and the last, if not freed)


def test_defect2_evaluate_attack_reads_each_volume_once_holding_one(tiny_unet):
    from napari_advseg.data.lazy import LazyVolumes
    from napari_advseg.evaluation.attack_eval import evaluate_attack
    from napari_advseg.evaluation.attacks import RandomAttack
    from napari_advseg.segmentation import SegmentationModel

    made: list[weakref.ref] = []
    alive: list[int] = []

    def load(index):
        volume = blob_volume(seed=index, name=f"s{index}")
        made.append(weakref.ref(volume))
        alive.append(sum(ref() is not None for ref in made))
        return volume

    volumes = LazyVolumes([(f"s{i}", lambda i=i: load(i)) for i in range(5)])
    model = SegmentationModel(*tiny_unet, "tiny")
    report = evaluate_attack(model, RandomAttack(0.05, "dv", seed=0), volumes)
    assert [s.subject for s in report.subjects] == volumes.names
    assert len(made) == 5 and max(alive) <= 2
    assert report.reference == "ground truth"


def test_defect2_lazy_volumes_keep_at_most_their_byte_budget():
    from napari_advseg.data.lazy import LazyVolumes, volume_bytes

    calls: list[int] = []

    def load(index):
        calls.append(index)
        return blob_volume(seed=index, name=f"s{index}")

    size = volume_bytes(blob_volume())
    volumes = LazyVolumes([(f"s{i}", lambda i=i: load(i)) for i in range(4)], 2 * size)
    assert volumes.names == ["s0", "s1", "s2", "s3"] and calls == []  # names cost nothing
    list(volumes)
    list(volumes)
    assert calls == [0, 1, 2, 3, 0, 1, 2, 3]  # a cache of two cannot hold a cycle of four
    volumes[3], volumes[2]
    assert len(calls) == 8  # the last two made are kept
    volumes[0]
    assert calls[8:] == [0]
    assert volumes[2:].names == ["s2", "s3"]
    with pytest.raises(IndexError):
        volumes[4]


def _header_only(path: Path, shape=(1024, 1024, 1024), dtype=np.int32) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    block = header.binaryblock + b"\0\0\0\0"
    path.write_bytes(gzip.compress(block) if path.name.endswith(".gz") else block)
    return path


@pytest.mark.parametrize("name", ["claims_4gib.nii.gz", "claims_4gib.nii"])
def test_defect2_a_header_that_claims_more_than_its_file_is_refused_before_reading(
    name, tmp_path, capsys, monkeypatch, no_model_loading
):
    path = _header_only(tmp_path / name)
    assert path.stat().st_size < 400  # 82 bytes compressed
    monkeypatch.setattr(
        "nibabel.arrayproxy.ArrayProxy.__array__",
        lambda *a, **k: pytest.fail("the data was read"),
    )
    line = one_line_error(capsys, main(["eval-seg", "--image", str(path), "--labels", str(path)]))
    assert "claims" in line and "4.3 GB" in line and name in line


def test_defect2_reading_more_than_free_memory_is_refused(tmp_path, monkeypatch):
    from napari_advseg.data.nifti import read_nifti

    path = save_array(tmp_path / "ct.nii.gz", np.zeros((20, 20, 20), np.int16))
    monkeypatch.setattr("napari_advseg.validation.available_memory", lambda: 1000)
    with pytest.raises(ResourceError, match=r"Reading ct\.nii\.gz needs about"):
        read_nifti(path)


def test_defect2_absurd_pixel_spacing_is_refused_before_resampling(
    tmp_path, tiny_checkpoint, capsys
):
    image = np.full((64, 64, 2), -1000, np.int16)
    image[20:40, 20:40] = 40
    labels = (image > 0).astype(np.uint8)
    affine = np.diag([3000.0, 3000.0, 3.0, 1.0])
    image_path = save_array(tmp_path / "huge_pixels.nii.gz", image, affine)
    labels_path = save_array(tmp_path / "huge_pixels_labels.nii.gz", labels, affine)
    data = ["--image", str(image_path), "--labels", str(labels_path)]
    line = one_line_error(capsys, main(["eval-seg", "--model", str(tiny_checkpoint), *data]))
    assert "huge_pixels.nii.gz" in line and "4096 a side" in line


def test_defect2_inference_and_attack_refuse_what_does_not_fit_before_allocating(
    tiny_unet, monkeypatch
):
    from napari_advseg.attack import attack_volume
    from napari_advseg.evaluation.attacks import RandomAttack
    from napari_advseg.inference import predict_probabilities, segment_volume, to_model_grid
    from napari_advseg.segmentation import SegmentationModel

    model = SegmentationModel(*tiny_unet, "tiny")
    volume = blob_volume()
    grid = to_model_grid(volume, model.spec)
    monkeypatch.setattr("napari_advseg.validation.available_memory", lambda: 10_000)
    monkeypatch.setattr(
        "napari_advseg.data.normalization.Normalization.apply",
        lambda *a, **k: pytest.fail("allocated before checking"),
    )
    with pytest.raises(ResourceError, match="resampling to the model's grid"):
        to_model_grid(volume, model.spec)
    with pytest.raises(ResourceError, match="Segmenting"):
        predict_probabilities(model, grid)
    with pytest.raises(ResourceError, match="segmenting the volume"):
        segment_volume(model, volume)
    with pytest.raises(ResourceError, match="attacking the volume"):
        attack_volume(model, RandomAttack(0.05, "dv"), volume)


# --- defect 8: minor --------------------------------------------------------------------------


def test_defect8_a_labels_error_names_the_labels_file(tmp_path, capsys, no_model_loading):
    image = save_array(tmp_path / "scan_ct.nii.gz", np.zeros((8, 8, 4), np.int16))
    wrong = np.zeros((8, 8, 4), np.uint8)
    wrong[0, 0, 0] = 7
    labels = save_array(tmp_path / "scan_seg.nii.gz", wrong)
    from napari_advseg.data.nifti import load_volume

    with pytest.raises(InvalidInputError) as info:
        load_volume(image, labels)
    assert str(info.value).startswith(f"{labels}:")
    assert "scan_ct" not in str(info.value)


def test_defect8_a_ct_given_as_labels_gives_a_short_line(tmp_path, pair, monkeypatch):
    ct = np.random.default_rng(0).integers(-1000, 1500, (48, 40, 4)).astype(np.int16)
    labels = save_array(tmp_path / "ct_as_labels.nii.gz", ct, nib.load(pair[0]).affine)
    from napari_advseg.data.nifti import load_volume

    with pytest.raises(InvalidInputError) as info:
        load_volume(pair[0], labels)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "ct_as_labels" in message and "in all" in message


def test_defect8_a_folder_given_as_an_image_is_named_as_such(tmp_path, capsys, no_model_loading):
    folder = tmp_path / "dicom_series"
    folder.mkdir()
    line = one_line_error(capsys, main(["eval-seg", "--image", str(folder), "--labels", "x.nii"]))
    assert "is a folder" in line and "no such file" not in line and "dcm2niix" in line


def test_defect8_ctrl_c_while_loading_data_is_one_line(
    tmp_path, pair, tiny_checkpoint, capsys, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_advseg.data.nifti.read_nifti", interrupted)
    argv = ["--model", str(tiny_checkpoint), "--image", str(pair[0]), "--labels", str(pair[1])]
    code = main(["eval-seg", *argv])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert [line for line in err.splitlines() if "advseg" in line] == [
        "advseg: interrupted; nothing more was written."
    ]
