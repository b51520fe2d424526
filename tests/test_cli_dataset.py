"""--dataset DIR and --label-map FILE through the command line, end to end."""

import json

import numpy as np
import pytest

from napari_advseg.cli import main
from napari_advseg.data.dataset_folder import read_dataset_folder, split_cases
from napari_advseg.data.nifti import write_nifti

from .test_cli_attack import FAST

# the dataset's own ids: other values and another order than the model's 1..4
DATASET_LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidneys": 5, "pancreas": 7}
MODEL_TO_DATASET = {1: 7, 2: 5, 3: 1, 4: 2}  # pancreas, kidneys, liver, spleen -> dataset ids


@pytest.fixture(scope="module")
def dataset(cohort, tmp_path_factory):
    """Five phantom subjects as an nnU-Net v2 raw dataset, and the same as plain pairs."""
    root = tmp_path_factory.mktemp("ds") / "Dataset501_Phantom"
    plain = root.parent / "plain"
    for folder in (root / "imagesTr", root / "labelsTr", plain):
        folder.mkdir(parents=True)
    for index in range(5):
        volume = cohort.subject(index)
        theirs = np.zeros_like(volume.labels)
        for channel, value in MODEL_TO_DATASET.items():
            theirs[volume.labels == channel] = value
        name = f"case_{index:03d}"
        write_nifti(root / "imagesTr" / f"{name}_0000.nii.gz", volume.image, volume.grid, "int16")
        write_nifti(root / "labelsTr" / f"{name}.nii.gz", theirs, volume.grid, "uint8")
        write_nifti(plain / f"{name}_ct.nii.gz", volume.image, volume.grid, "int16")
        write_nifti(plain / f"{name}_labels.nii.gz", volume.labels, volume.grid, "uint8")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": DATASET_LABELS,
        "numTraining": 5,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root, plain


def dice_of(path):
    return json.loads(path.read_text())["dice"]


def test_eval_seg_on_a_dataset_matches_labels_by_name(trained_seg_dir, dataset, tmp_path):
    root, plain = dataset
    out = tmp_path / "ds.json"
    argv = ["eval-seg", "--model", str(trained_seg_dir), "--dataset", str(root)]
    assert main([*argv, "--split", "all", "--json", str(out)]) == 0
    reference = tmp_path / "plain.json"
    images = sorted(str(p) for p in plain.glob("*_ct.nii.gz"))
    labels = sorted(str(p) for p in plain.glob("*_labels.nii.gz"))
    assert (
        main(
            [
                "eval-seg",
                "--model",
                str(trained_seg_dir),
                "--images",
                *images,
                "--labels",
                *labels,
                "--json",
                str(reference),
            ]
        )
        == 0
    )
    assert dice_of(out) == dice_of(reference)
    assert dice_of(out)["liver"] > 0.5  # the values were remapped, not read as other organs


def test_a_split_is_by_subject_and_seeded(trained_seg_dir, dataset, tmp_path):
    root, _ = dataset
    argv = ["eval-seg", "--model", str(trained_seg_dir), "--dataset", str(root)]
    subjects = []
    for seed in (0, 0, 1):
        out = tmp_path / f"{seed}.json"
        assert (
            main(
                [*argv, "--fractions", "2", "1", "2", "--split-seed", str(seed), "--json", str(out)]
            )
            == 0
        )
        subjects.append([row["subject"] for row in json.loads(out.read_text())["subjects"]])
    assert subjects[0] == subjects[1] and len(subjects[0]) == 2
    assert subjects[0] != subjects[2] or len(set(subjects[2])) == 2


def test_a_label_name_that_matches_nothing_is_an_error(trained_seg_dir, dataset, tmp_path, capsys):
    root, _ = dataset
    meta = json.loads((root / "dataset.json").read_text())
    odd = tmp_path / "odd"
    odd.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (odd / sub).symlink_to(root / sub)
    labels = {k if k != "spleen" else "splen": v for k, v in meta["labels"].items()}
    (odd / "dataset.json").write_text(json.dumps({**meta, "labels": labels}))
    argv = ["eval-seg", "--model", str(trained_seg_dir), "--dataset", str(odd), "--split", "all"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "splen" in err[0] and "--label-map" in err[0], err
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"splen": "spleen"}))
    assert main([*argv, "--label-map", str(label_map)]) == 0


def test_train_attack_trains_on_the_dataset(trained_seg_dir, dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "att"
    argv = ["train-attack", "--model", str(trained_seg_dir), "--dataset", str(root)]
    assert main([*argv, "--out", str(out), *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    folder = read_dataset_folder(root)
    train = [case.name for case in split_cases(folder.training, seed=0)["train"]]
    assert config["training"]["data"] == train and len(train) == 2  # the training subjects


def test_one_data_source_at_a_time(dataset, capsys):
    root, _ = dataset
    argv = ["eval-seg", "--dataset", str(root), "--sample", "phantom"]
    assert main(argv) == 2
    assert "exactly one" in capsys.readouterr().err


def test_sweep_trains_on_the_dataset_and_evaluates_its_test_split(
    trained_seg_dir, dataset, tmp_path
):
    root, _ = dataset
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", str(trained_seg_dir), "--dataset", str(root), "--xi", "2", "3"]
    extras = ["--seeds", "1", "--compare-eq5", "soft", "--with-real-train"]
    assert main([*argv, "--out", str(out), *extras, *FAST]) == 0
    folder = read_dataset_folder(root)
    split = split_cases(folder.training, seed=0)
    extra = json.loads((out / "rows.json").read_text())
    # xi is chosen on the validation subjects; the test subjects are evaluated once, after
    assert extra["validation_subjects"] == [case.name for case in split["val"]]
    assert extra["test_subjects"] == [case.name for case in split["test"]]
    assert [row["xi"] for row in extra["validation_rows"] if row["mode"] == "dv"] == [2.0, 3.0]
    assert extra["headline"]["chosen_by"] == "validation split"
    chosen = extra["headline"]["xi"]
    assert {(row["mode"], row["xi"]) for row in extra["rows"] if row.get("split") == "test"} == {
        ("dv", chosen),
        ("d", chosen),
        ("v", chosen),
        ("dv-eq5", chosen),
    }
    trained = json.loads((out / "attackers" / "dv_xi2_seed0" / "config.json").read_text())
    real = ["abdomen_ct_ts[0:18]", "abdomen_ct_ts[34:46]"]  # never the held-out block 20-31
    assert trained["training"]["data"] == [case.name for case in split["train"]] + real
    assert trained["attack"]["eq5"] == "hard"
    compared = out / "attackers" / f"dv_xi{chosen:g}_seed0_eq5soft" / "config.json"
    assert json.loads(compared.read_text())["attack"]["eq5"] == "soft"
    assert f"I_DV (xi = {chosen:g}, eq. 5 soft)" in [row["label"] for row in extra["rows"]]
    assert (out / "attackers" / f"v_xi{chosen:g}_seed0" / "config.json").is_file()
