"""Reading nnU-Net v2 and Decathlon dataset folders, splitting their cases, remapping labels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.data.dataset_folder import (
    Case,
    dataset_volumes,
    read_dataset_folder,
    split_cases,
)
from napari_advseg.data.nifti import read_nifti
from napari_advseg.data.splits import split_subjects
from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import DEFAULT_LABEL_MAP

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (8, 8, 4)


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def label_array(seed: int, values: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, values + 1, SHAPE).astype(np.uint8)


def nnunet_folder(
    root: Path,
    cases=("case_b", "case_a", "case_c"),
    labels=None,
    test=(),
    labels_ts=False,
    **meta,
) -> Path:
    labels = labels or {"background": 0, "liver": 1, "spleen": 2}
    for i, case in enumerate(cases):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", np.full(SHAPE, i, np.int16))
        save(root / "labelsTr" / f"{case}.nii.gz", label_array(i, 2))
    for i, case in enumerate(test):
        save(root / "imagesTs" / f"{case}_0000.nii.gz", np.zeros(SHAPE, np.int16))
        if labels_ts:
            save(root / "labelsTs" / f"{case}.nii.gz", label_array(10 + i, 2))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        **meta,
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def msd_folder(root: Path, cases=("liver_1", "liver_0"), test=("liver_132",), prefix="") -> Path:
    for i, case in enumerate(cases):
        save(root / "imagesTr" / f"{case}{prefix}.nii.gz", np.full(SHAPE, i, np.int16))
        save(root / "labelsTr" / f"{case}.nii.gz", label_array(i, 2))
    for case in test:
        save(root / "imagesTs" / f"{case}{prefix}.nii.gz", np.zeros(SHAPE, np.int16))
    dataset = {
        "name": "Liver",
        "labels": {"0": "background", "1": "liver", "2": "liver tumour"},
        "modality": {"0": "CT"},
        "numTraining": len(cases),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases
        ],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return root


def test_reads_an_nnunet_v2_folder(tmp_path):
    root = nnunet_folder(tmp_path / "Dataset001_Abdomen", test=("case_z", "case_y"))
    (root / "imagesTr" / ".DS_Store").write_bytes(b"\0\1")
    (root / "imagesTr" / "._case_a_0000.nii.gz").write_bytes(b"\0\1")
    (root / "labelsTr" / "._case_a.nii.gz").write_bytes(b"\0\1")
    folder = read_dataset_folder(root)
    assert folder.name == "Dataset001_Abdomen" and folder.root == root
    assert folder.labels == {1: "liver", 2: "spleen"}
    assert [case.name for case in folder.training] == ["case_a", "case_b", "case_c"]
    first = folder.training[0]
    assert first.image == root / "imagesTr" / "case_a_0000.nii.gz"
    assert first.labels == root / "labelsTr" / "case_a.nii.gz"
    assert folder.test == (
        Case("case_y", root / "imagesTs" / "case_y_0000.nii.gz", None),
        Case("case_z", root / "imagesTs" / "case_z_0000.nii.gz", None),
    )


def test_reads_test_labels_where_labelsts_exists(tmp_path):
    root = nnunet_folder(tmp_path / "ds", test=("case_t",), labels_ts=True)
    (test_case,) = read_dataset_folder(root).test
    assert test_case.labels == root / "labelsTs" / "case_t.nii.gz"


def test_reads_a_decathlon_folder(tmp_path):
    root = msd_folder(tmp_path / "Task03_Liver")
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"\0\1")
    folder = read_dataset_folder(root)
    assert folder.name == "Liver"
    assert folder.labels == {1: "liver", 2: "liver tumour"}
    assert [(c.name, c.image.name, c.labels.name) for c in folder.training] == [
        ("liver_0", "liver_0.nii.gz", "liver_0.nii.gz"),
        ("liver_1", "liver_1.nii.gz", "liver_1.nii.gz"),
    ]
    assert folder.test == (Case("liver_132", root / "imagesTs" / "liver_132.nii.gz", None),)


def test_reads_a_decathlon_folder_converted_for_nnunet_v1(tmp_path):
    root = msd_folder(tmp_path / "Task003_Liver", prefix="_0000")
    folder = read_dataset_folder(root)
    assert [c.name for c in folder.training] == ["liver_0", "liver_1"]
    assert folder.training[0].image.name == "liver_0_0000.nii.gz"
    assert [c.name for c in folder.test] == ["liver_132"]


def _json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _set_json(root: Path, **changes) -> None:
    meta = _json(root)
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


REFUSALS = {
    "missing folder": (lambda r: r / "nowhere", "nowhere: no such dataset folder"),
    "missing imagesTr": (
        lambda r: [p.unlink() for p in (r / "imagesTr").iterdir()] and (r / "imagesTr").rmdir(),
        "imagesTr: no such folder",
    ),
    "missing labelsTr": (
        lambda r: [p.unlink() for p in (r / "labelsTr").iterdir()] and (r / "labelsTr").rmdir(),
        "labelsTr: no such folder",
    ),
    "missing dataset.json": (
        lambda r: (r / "dataset.json").unlink(),
        "dataset.json: no such file",
    ),
    "bad dataset.json": (
        lambda r: (r / "dataset.json").write_text("{labels: 1"),
        "dataset.json: not valid JSON",
    ),
    "not an object": (
        lambda r: (r / "dataset.json").write_text("[1, 2]"),
        "dataset.json: must hold a JSON object",
    ),
    "neither style": (
        lambda r: (r / "dataset.json").write_text('{"labels": {"liver": 1}}'),
        "neither an nnU-Net v2 dataset.json",
    ),
    "image without labels": (
        lambda r: (r / "labelsTr" / "case_b.nii.gz").unlink(),
        (
            "imagesTr/case_b_0000.nii.gz: an image without its label file (",
            "/ds/labelsTr/case_b.nii.gz is missing)",
        ),
    ),
    "labels without image": (
        lambda r: (r / "imagesTr" / "case_b_0000.nii.gz").unlink(),
        (
            "labelsTr/case_b.nii.gz: a label file without its image (",
            "/ds/imagesTr/case_b_0000.nii.gz is missing)",
        ),
    ),
    "second channel file": (
        lambda r: save(r / "imagesTr" / "case_a_0001.nii.gz", np.zeros(SHAPE, np.int16)),
        "case_a_0001.nii.gz: a second image channel (0001); one CT channel only",
    ),
    "image without channel suffix": (
        lambda r: (r / "imagesTr" / "case_a_0000.nii.gz").rename(r / "imagesTr" / "case_a.nii.gz"),
        "imagesTr/case_a.nii.gz: expected an image named <case>_0000.nii.gz",
    ),
    "two channel names": (
        lambda r: _set_json(r, channel_names={"0": "CT", "1": "PET"}),
        "channel_names lists 2 channels (CT, PET); one CT channel only",
    ),
    "not CT": (
        lambda r: _set_json(r, channel_names={"0": "MRI"}),
        "the image channel is 'MRI', not CT",
    ),
    "no cases": (
        lambda r: [p.unlink() for d in ("imagesTr", "labelsTr") for p in (r / d).iterdir()],
        "imagesTr: no case found",
    ),
    "duplicate label values": (
        lambda r: _set_json(r, labels={"background": 0, "liver": 1, "spleen": 1}),
        "label value 1 is given twice ('liver' and 'spleen')",
    ),
    "region labels": (
        lambda r: _set_json(r, labels={"background": 0, "liver": 1, "organs": [1, 2]}),
        "label 'organs' is a region ([1, 2]); region-based labels are not supported",
    ),
    "bad label value": (
        lambda r: _set_json(r, labels={"background": 0, "liver": "one"}),
        "label 'liver' has value 'one'",
    ),
    "not NIfTI": (
        lambda r: _set_json(r, file_ending=".mha"),
        "file_ending '.mha': only NIfTI (.nii, .nii.gz) is read",
    ),
    "no file ending": (
        lambda r: (r / "dataset.json").write_text(
            json.dumps({k: v for k, v in _json(r).items() if k != "file_ending"})
        ),
        'no "file_ending"',
    ),
    "numTraining differs": (
        lambda r: _set_json(r, numTraining=5),
        "numTraining is 5 but imagesTr holds 3 cases",
    ),
    "test image without labelsTs file": (
        lambda r: (
            save(r / "imagesTs" / "case_t_0000.nii.gz", np.zeros(SHAPE, np.int16)),
            (r / "labelsTs").mkdir(),
        ),
        "imagesTs/case_t_0000.nii.gz: an image without its label file",
    ),
}


@pytest.mark.parametrize("breakage", sorted(REFUSALS))
def test_refusals_name_the_path(tmp_path, breakage):
    root = nnunet_folder(tmp_path / "ds")
    change, expected = REFUSALS[breakage]
    target = change(root)
    if breakage == "missing folder":
        root = target
    with pytest.raises(InvalidInputError) as caught:
        read_dataset_folder(root)
    message = str(caught.value)
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in message, message
    assert str(tmp_path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"modality": {"0": "MRI"}}, "the image channel is 'MRI', not CT"),
        ({"modality": {"0": "FLAIR", "1": "T1w"}}, "modality lists 2 channels (FLAIR, T1w)"),
        ({"labels": {"0": "background", "one": "liver"}}, "label 'liver' has value 'one'"),
        ({"labels": {"0": "background", "1": "liver", "01": "spleen"}}, "value 1 is given twice"),
        (
            {"labels": {"0": "background", "1": "liver", "2": "Liver"}},
            "name 'Liver' is given twice",
        ),
    ],
)
def test_decathlon_refusals(tmp_path, change, expected):
    root = msd_folder(tmp_path / "Task03_Liver")
    _set_json(root, **change)
    with pytest.raises(InvalidInputError, match=r"dataset\.json: ") as caught:
        read_dataset_folder(root)
    assert expected in str(caught.value)


def test_duplicate_json_keys_are_refused(tmp_path):
    root = msd_folder(tmp_path / "Task03_Liver")
    text = (root / "dataset.json").read_text().replace('"1": "liver"', '"1": "liver", "1": "x"')
    (root / "dataset.json").write_text(text)
    with pytest.raises(InvalidInputError, match="key '1' is given twice"):
        read_dataset_folder(root)


def test_a_second_channel_in_a_converted_decathlon_folder(tmp_path):
    root = msd_folder(tmp_path / "Task003_Liver", prefix="_0000")
    save(root / "imagesTr" / "liver_0_0001.nii.gz", np.zeros(SHAPE, np.int16))
    with pytest.raises(InvalidInputError, match=r"liver_0_0001\.nii\.gz: a second image channel"):
        read_dataset_folder(root)


def cases(n: int) -> list[Case]:
    return [Case(f"case_{i:03d}", Path(f"{i}.nii.gz"), None) for i in range(n)]


def test_default_split_is_that_of_split_subjects():
    for n in range(3, 40):
        for seed in (0, 7):
            split = split_cases(cases(n), seed=seed)
            indices = {name: [int(c.name[5:]) for c in part] for name, part in split.items()}
            assert indices == split_subjects(n, seed)


@pytest.mark.parametrize(
    ("n", "fractions", "counts"),
    [
        (150, (60, 15, 75), (60, 15, 75)),
        (10, (0.8, 0.2, 0.0), (8, 2, 0)),
        (10, (70, 0, 30), (7, 0, 3)),
        (7, (1, 0, 0), (7, 0, 0)),
        (3, (1, 98, 1), (1, 1, 1)),
        (4, (98, 1, 1), (2, 1, 1)),
    ],
)
def test_split_proportions(n, fractions, counts):
    split = split_cases(cases(n), fractions, seed=3)
    assert tuple(len(split[name]) for name in ("train", "val", "test")) == counts
    names = [c.name for part in split.values() for c in part]
    assert sorted(names) == [c.name for c in cases(n)]  # disjoint and complete
    for part in split.values():
        assert [c.name for c in part] == sorted(c.name for c in part)


def test_split_is_seeded():
    first = split_cases(cases(30), seed=1)
    assert split_cases(cases(30), seed=1) == first
    assert split_cases(cases(30), seed=2) != first


def test_too_few_cases_all_train():
    assert split_cases(cases(2)) == {"train": cases(2), "val": [], "test": []}
    assert split_cases([]) == {"train": [], "val": [], "test": []}


@pytest.mark.parametrize("fractions", [(0, 1, 1), (1, -1, 1), (1, 1), ("a", 1, 1), (1, 1, np.nan)])
def test_bad_split_fractions(fractions):
    with pytest.raises(InvalidInputError, match="train"):
        split_cases(cases(5), fractions)


def test_dataset_volumes_remap_labels_to_the_model(tmp_path):
    labels = {"background": 0, "liver": 1, "spleen": 2, "Kidney": 3, "pancreas": 4}
    root = nnunet_folder(tmp_path / "ds", labels=labels)
    for i, case in enumerate(("case_a", "case_b", "case_c")):
        save(root / "labelsTr" / f"{case}.nii.gz", label_array(i, 4))
    folder = read_dataset_folder(root)
    volumes = dataset_volumes(folder, folder.training[1:], DEFAULT_LABEL_MAP)
    assert volumes.names == ["case_b", "case_c"]
    table = np.array([0, 3, 4, 2, 1])  # liver 3, spleen 4, kidneys 2, pancreas 1
    for case, volume in zip(folder.training[1:], volumes, strict=True):
        raw, _ = read_nifti(case.labels)
        assert volume.name == case.name and volume.label_map == DEFAULT_LABEL_MAP
        np.testing.assert_array_equal(volume.labels, table[raw])
        assert volume.image.shape == raw.shape


def test_dataset_volumes_of_partial_data_need_a_label_map_file(tmp_path):
    folder = read_dataset_folder(nnunet_folder(tmp_path / "ds"))
    with pytest.raises(
        InvalidInputError, match=r"'pancreas', 'kidneys' are not in .*dataset\.json"
    ):
        dataset_volumes(folder, folder.training, DEFAULT_LABEL_MAP)
    file = tmp_path / "map.json"
    file.write_text('{"1": "liver", "spleen": "spleen"}')
    volume = dataset_volumes(folder, folder.training, DEFAULT_LABEL_MAP, file)[0]
    raw, _ = read_nifti(folder.training[0].labels)
    np.testing.assert_array_equal(volume.labels, np.array([0, 3, 4])[raw])


def test_dataset_volumes_check_files(tmp_path):
    root = msd_folder(tmp_path / "Task03_Liver", cases=("a", "b", "c"))
    file = tmp_path / "map.json"
    file.write_text('{"liver": "liver", "liver tumour": "liver"}')
    (root / "imagesTr" / "c.nii.gz").write_bytes(b"not a nifti file")
    folder = read_dataset_folder(root)
    with pytest.raises(InvalidInputError, match=r"c\.nii\.gz: cannot be read as NIfTI"):
        dataset_volumes(folder, folder.training, DEFAULT_LABEL_MAP, file)
    volumes = dataset_volumes(folder, folder.training[:2], DEFAULT_LABEL_MAP, file)
    assert set(np.unique(volumes[0].labels)) <= {0, 3}
    save(root / "labelsTr" / "b.nii.gz", np.full(SHAPE, 7, np.uint8))
    with pytest.raises(InvalidInputError, match=r"labelsTr/b\.nii\.gz: label values \[7\]"):
        volumes[1]
    save(root / "labelsTr" / "b.nii.gz", label_array(0, 2), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InvalidInputError, match=r"b\.nii\.gz: its affine"):
        volumes[1]
