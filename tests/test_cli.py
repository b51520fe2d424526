import json

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.cli import main
from napari_advseg.segmentation import save_unet

from .conftest import blob_volume, save_pair


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_unet):
    network, spec = tiny_unet
    return save_unet(tmp_path / "tiny_model", network, spec, {"command": "test"})


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("sample-data", "train-seg", "eval-seg"):
        assert command in out


def test_sample_data_real(tmp_path, capsys):
    assert main(["sample-data", "--sample", "real", "--out", str(tmp_path)]) == 0
    image = nib.load(tmp_path / "abdomen_ct_ts_ct.nii.gz")
    labels = nib.load(tmp_path / "abdomen_ct_ts_labels.nii.gz")
    assert image.shape == labels.shape == (122, 101, 46)
    assert set(np.unique(np.asarray(labels.dataobj))) == {0, 1, 2, 3, 4}
    assert "TotalSegmentator" in (tmp_path / "ATTRIBUTION.txt").read_text()
    assert "pseudo-labels" in capsys.readouterr().out


def test_sample_data_phantom(tmp_path):
    assert main(["sample-data", "--out", str(tmp_path), "--subjects", "3"]) == 0
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert [len(splits[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    assert len(list(tmp_path.glob("*_ct.nii.gz"))) == 3


def test_eval_seg_json(tmp_path, tiny_checkpoint, capsys):
    image, labels = save_pair(tmp_path, blob_volume())
    out = tmp_path / "result.json"
    code = main(
        [
            "eval-seg",
            "--model",
            str(tiny_checkpoint),
            "--image",
            str(image),
            "--labels",
            str(labels),
            "--json",
            str(out),
            "--bootstrap",
            "200",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["dice"]) == {"pancreas", "kidneys", "liver", "spleen"}
    assert set(result["dice_ci"]) == set(result["dice"]) and result["bootstrap"]["samples"] == 200
    for organ, interval in result["dice_ci"].items():
        if interval is not None:
            assert 0.0 <= interval[0] <= interval[1] <= 1.0, organ
    assert all(0.0 <= v <= 1.0 for v in result["dice"].values())
    assert result["subjects"][0]["subject"] == "case_ct.nii.gz"
    assert "liver" in capsys.readouterr().out


def test_train_seg_on_user_files(tmp_path, capsys):
    pairs = [save_pair(tmp_path, blob_volume(seed=i), f"s{i}") for i in range(3)]
    out = tmp_path / "model"
    code = main(
        [
            "train-seg",
            "--out",
            str(out),
            "--images",
            *[str(p[0]) for p in pairs],
            "--labels",
            *[str(p[1]) for p in pairs],
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--patch-size",
            "24",
            "--base-channels",
            "4",
            "--depth",
            "3",
            "--device",
            "cpu",
            "--domain-augment",
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["settings"]["domain_augment"] is True
    assert config["training"]["command"].startswith("advseg train-seg --out ")
    assert len(config["training"]["data"]["held_out_test"]) == 1
    assert "finished at step 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["eval-seg", "--image", "missing.nii.gz", "--labels", "missing2.nii.gz"],
        ["eval-seg", "--model", "no_such_model"],
        ["eval-seg", "--sample", "real", "--image", "x.nii.gz"],
        ["train-seg", "--out", "x", "--sample", "real", "--device", "tpu"],
        ["train-seg", "--out", "x", "--sample", "real", "--no-augment", "--domain-augment"],
    ],
)
def test_errors_are_messages_not_tracebacks(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("advseg: error: ") and "Traceback" not in err
