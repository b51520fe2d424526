"""Matching data label values to a model's channels, by name or a label-map file."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from napari_advseg.data.label_remap import (
    describe_mapping,
    match_labels,
    normalize_name,
    read_label_map_file,
    remap_array,
    remapped_file_volumes,
    unmapped_organs,
)
from napari_advseg.data.nifti import read_nifti
from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import DEFAULT_LABEL_MAP, label_map_from_names

PAPER = DEFAULT_LABEL_MAP  # 1 pancreas, 2 kidneys, 3 liver, 4 spleen

BTCV = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal vein and splenic vein",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}


def write_map(tmp_path, entries, name="map.json"):
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return path


def test_names_are_compared_without_case_spaces_or_separators():
    assert normalize_name("  Liver_Tumour ") == "liver tumour"
    assert normalize_name("portal-vein  and_splenic vein") == "portal vein and splenic vein"


def test_match_by_name_in_another_order_remaps_a_real_array():
    data = {1: "Liver", 2: "spleen", 3: "kidney", 4: "PANCREAS"}
    mapping = match_labels(data, PAPER)
    assert mapping == {0: 0, 1: 3, 2: 4, 3: 2, 4: 1}
    labels = np.array([[0, 1, 2], [3, 4, 1]], np.int16)
    out = remap_array(labels, mapping)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 3, 4], [2, 1, 3]])


def test_partial_data_needs_a_file_and_then_maps_by_name(tmp_path):
    data = {1: "liver", 2: "spleen"}
    with pytest.raises(InvalidInputError, match="'pancreas', 'kidneys' are not in the data"):
        match_labels(data, PAPER)
    file = write_map(tmp_path, {"liver": "liver"})  # spleen is still matched by name
    mapping = match_labels(data, PAPER, file)
    assert mapping == {0: 0, 1: 3, 2: 4}
    assert unmapped_organs(mapping, PAPER) == ["pancreas", "kidneys"]
    labels = np.zeros((8, 8, 4), np.uint8)
    labels[:4] = 1
    labels[4:, :2] = 2
    out = remap_array(labels, mapping)
    assert set(np.unique(out)) == {0, 3, 4}
    assert np.count_nonzero(out == 3) == np.count_nonzero(labels == 1)
    assert np.count_nonzero(out == 4) == np.count_nonzero(labels == 2)


def test_left_and_right_kidneys_merge_through_a_file(tmp_path):
    data = {1: "liver", 2: "left kidney", 3: "right kidney", 4: "spleen", 5: "pancreas"}
    with pytest.raises(InvalidInputError) as caught:
        match_labels(data, PAPER, source="ds/dataset.json")
    message = str(caught.value)
    assert "'left kidney', 'right kidney' of ds/dataset.json match no model organ" in message
    assert "'kidneys'" in message and "--label-map FILE" in message
    example = json.loads(re.search(r"e\.g\. (\{.*?\})", message).group(1))
    assert example == {"left kidney": "kidneys", "right kidney": "kidneys"}
    file = write_map(tmp_path, {"Left_Kidney": "kidneys", "3": "Kidneys"})
    mapping = match_labels(data, PAPER, file)
    assert mapping == {0: 0, 1: 3, 2: 2, 3: 2, 4: 4, 5: 1}
    out = remap_array(np.arange(6, dtype=np.uint8), mapping)
    np.testing.assert_array_equal(out, [0, 3, 2, 2, 4, 1])


def test_unmatched_name_is_refused_with_an_example():
    data = {1: "liver", 2: "liver tumour", 3: "spleen", 4: "kidneys", 5: "pancreas"}
    with pytest.raises(InvalidInputError) as caught:
        match_labels(data, PAPER)
    message = str(caught.value)
    assert "'liver tumour'" in message and "match no model organ" in message
    assert '{"liver tumour": "background"}' in message
    assert "\n" not in message


def test_mapping_to_background_drops_a_label(tmp_path):
    data = {1: "liver", 2: "liver tumour", 3: "spleen", 4: "kidneys", 5: "pancreas"}
    file = write_map(tmp_path, {"2": "background"})
    mapping = match_labels(data, PAPER, file)
    assert mapping[2] == 0 and mapping[1] == 3
    out = remap_array(np.array([0, 1, 2, 2, 3]), mapping)
    np.testing.assert_array_equal(out, [0, 3, 0, 0, 4])


def test_thirteen_classes_by_name_in_a_shuffled_order():
    order = np.random.default_rng(3).permutation(13)
    names = [BTCV[int(i) + 1] for i in order]
    model = label_map_from_names({str(c): n.upper() for c, n in enumerate(names, 1)})
    mapping = match_labels(BTCV, model)
    assert sorted(mapping) == list(range(14)) and sorted(mapping.values()) == list(range(14))
    for value, name in BTCV.items():
        assert model.names[mapping[value] - 1] == name.upper()
    labels = np.random.default_rng(0).integers(0, 14, (4, 8, 8))
    out = remap_array(labels, mapping)
    expected = np.vectorize(mapping.get)(labels)
    np.testing.assert_array_equal(out, expected)


def test_thirteen_classes_onto_the_paper_organs_through_a_file(tmp_path):
    entries = {name: "background" for name in BTCV.values()}
    entries.update({"2": "kidneys", "3": "kidneys"})
    del entries["right kidney"], entries["left kidney"]
    for organ in ("liver", "spleen", "pancreas"):
        del entries[organ]  # matched by name
    mapping = match_labels(BTCV, PAPER, write_map(tmp_path, entries))
    assert mapping == {
        0: 0,
        **{value: 0 for value in BTCV},
        1: 4,
        2: 2,
        3: 2,
        6: 3,
        11: 1,
    }
    lines = describe_mapping(mapping, BTCV, PAPER)
    assert "2 right kidney -> 2 kidneys" in lines and "7 stomach -> 0 background" in lines


def test_label_map_file_errors(tmp_path):
    data = {1: "liver", 2: "spleen"}
    cases = [
        (
            {"liver": "lung"},
            "'lung' (for 'liver') is not an organ of the model; its organs are "
            "1 pancreas, 2 kidneys, 3 liver, 4 spleen",
        ),
        ({"heart": "liver"}, "key 'heart' matches no label of the data (1 liver, 2 spleen)"),
        ({"7": "liver"}, "key '7' matches no label of the data"),
        ({"1": "liver", "liver": "liver"}, "keys '1' and 'liver' both name data label 1"),
        ({"0": "liver"}, "label 0 is background"),
        ({"liver": 3}, "must map a data label to a model organ name"),
        ({}, "non-empty JSON object"),
        ([["liver", "liver"]], "must hold a JSON object (a label-map file)"),
        ('{"liver": "liver", "liver": "spleen"}', "key 'liver' is given twice"),
        ('{"liver": "liver", " liver": "spleen"}', "a key is given twice"),
        ("{liver: liver}", "not valid JSON"),
    ]
    for entries, expected in cases:
        file = write_map(tmp_path, entries)
        with pytest.raises(InvalidInputError) as caught:
            match_labels(data, PAPER, file)
        assert expected in str(caught.value), (entries, str(caught.value))
        assert str(file) in str(caught.value)
    with pytest.raises(InvalidInputError, match="no such file; a label-map file is needed"):
        read_label_map_file(tmp_path / "missing.json")


def test_a_file_does_not_hide_an_unmatched_label(tmp_path):
    data = {1: "liver", 2: "liver tumour"}
    file = write_map(tmp_path, {"liver": "liver"})
    with pytest.raises(InvalidInputError, match=r"'liver tumour'.*add them to .*map\.json"):
        match_labels(data, PAPER, file)


def test_labels_without_names_are_the_model_channels_unless_a_file_says(tmp_path):
    assert match_labels(None, PAPER) == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    file = write_map(tmp_path, {"6": "liver", "2": "kidneys", "3": "kidneys"})
    mapping = match_labels(None, PAPER, file)
    assert mapping == {0: 0, 6: 3, 2: 2, 3: 2}
    np.testing.assert_array_equal(remap_array(np.array([6, 3, 0]), mapping), [3, 2, 0])
    with pytest.raises(InvalidInputError, match=r"labels: label values \[1, 5\] are not among"):
        remap_array(np.array([1, 5, 6, 1]), mapping)
    with pytest.raises(InvalidInputError, match="has no label names; key the file by label value"):
        match_labels(None, PAPER, write_map(tmp_path, {"liver": "liver"}))


def test_remap_array_refuses_bad_values():
    mapping = {0: 0, 1: 3, 2: 4}
    with pytest.raises(InvalidInputError, match=r"seg\.nii: label values \[-1, 300\]"):
        remap_array(np.array([0, -1, 300, 2]), mapping, "seg.nii")
    with pytest.raises(InvalidInputError, match="fractional"):
        remap_array(np.array([0.0, 1.5]), mapping)
    with pytest.raises(InvalidInputError, match="finite integers"):
        remap_array(np.array([0.0, np.nan]), mapping)
    np.testing.assert_array_equal(remap_array(np.array([2.0, 1.0]), mapping), [4, 3])
    assert remap_array(np.zeros((0, 3), np.int32), mapping).shape == (0, 3)


def test_remapped_file_volumes(tmp_path):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    image = np.zeros((8, 8, 4), np.int16)
    labels = np.zeros((8, 8, 4), np.uint8)
    labels[:3] = 6
    labels[5:, 4:] = 9
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "seg.nii.gz")
    file = write_map(tmp_path, {"6": "liver", "9": "spleen"})
    volumes = remapped_file_volumes(
        [tmp_path / "ct.nii.gz"], [tmp_path / "seg.nii.gz"], PAPER, file
    )
    assert volumes.names == ["ct.nii.gz"]
    volume = volumes[0]
    raw, _ = read_nifti(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(volume.labels, np.select([raw == 6, raw == 9], [3, 4], 0))
    assert volume.label_map == PAPER
    # without a file the values must already be the model's channels
    plain = remapped_file_volumes([tmp_path / "ct.nii.gz"], [tmp_path / "seg.nii.gz"], PAPER)
    with pytest.raises(InvalidInputError, match="unknown label values"):
        plain[0]
    # a value the file does not list is named, with the file it is in
    partial = write_map(tmp_path, {"6": "liver"}, "partial.json")
    volumes = remapped_file_volumes(
        [tmp_path / "ct.nii.gz"], [tmp_path / "seg.nii.gz"], PAPER, partial
    )
    with pytest.raises(InvalidInputError, match=r"seg\.nii\.gz: label values \[9\]"):
        volumes[0]
    with pytest.raises(InvalidInputError, match="one --labels file per --image"):
        remapped_file_volumes([tmp_path / "ct.nii.gz"], [], PAPER, file)
