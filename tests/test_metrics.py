import numpy as np
import pytest

from napari_advseg.data.splits import hold_out_slab, split_subjects
from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.evaluation.metrics import dice_per_label, dice_per_slice, mean_dice, overall_mean
from napari_advseg.labels import DEFAULT_LABEL_MAP, LabelMap

NAMES = DEFAULT_LABEL_MAP.names


def test_dice_hand_made():
    reference = np.zeros((10, 10), np.uint8)
    reference[0:4, 0:5] = 3  # liver: 20 pixels
    reference[6:8, 6:8] = 1  # pancreas: 4 pixels
    prediction = np.zeros_like(reference)
    prediction[0:4, 0:5] = 3
    prediction[6:8, 6:7] = 1  # 2 of the 4 pancreas pixels
    prediction[9, 9] = 4  # spleen predicted, absent from reference
    dice = dice_per_label(prediction, reference, DEFAULT_LABEL_MAP)
    assert dice["liver"] == 1.0
    assert dice["pancreas"] == pytest.approx(2 * 2 / (2 + 4))
    assert dice["spleen"] == 0.0
    assert dice["kidneys"] is None  # absent from both: undefined


def test_mean_skips_undefined_without_nan():
    rows = [
        {"pancreas": None, "kidneys": 0.5, "liver": 1.0, "spleen": None},
        {"pancreas": 0.2, "kidneys": 1.0, "liver": None, "spleen": None},
    ]
    mean = mean_dice(rows, NAMES)
    assert mean == {"pancreas": 0.2, "kidneys": 0.75, "liver": 1.0, "spleen": None}
    assert overall_mean(mean) == pytest.approx((0.2 + 0.75 + 1.0) / 3)
    assert overall_mean({"a": None}) is None


def test_dice_per_slice_and_3d_differ():
    reference = np.zeros((2, 4, 4), np.uint8)
    reference[0, :2, :2] = 2
    reference[1, :, :] = 2
    prediction = reference.copy()
    prediction[0] = 0
    per_slice = dice_per_slice(prediction, reference, DEFAULT_LABEL_MAP)
    assert [row["kidneys"] for row in per_slice] == [0.0, 1.0]
    assert dice_per_label(prediction, reference, DEFAULT_LABEL_MAP)["kidneys"] == pytest.approx(
        32 / 36
    )


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_label(np.zeros((2, 2)), np.zeros((3, 3)), DEFAULT_LABEL_MAP)


def test_splits_are_by_subject_and_follow_the_paper():
    split = split_subjects(150)
    assert [len(split[k]) for k in ("train", "val", "test")] == [60, 15, 75]
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(150))
    assert split == split_subjects(150) and split != split_subjects(150, seed=1)
    with pytest.raises(InvalidInputError):
        split_subjects(2)


def test_one_scan_holds_out_a_middle_slab_of_labelled_slices():
    labels = np.zeros((30, 8, 8), np.uint8)
    labels[5:25, 2:6, 2:6] = 3  # 20 labelled slices
    image = np.arange(30, dtype=np.float32)[:, None, None] * np.ones((30, 8, 8), np.float32)
    volume = Volume(image, (3.0, 1.0, 1.0), labels, name="scan")
    train, val = hold_out_slab(volume)
    assert [v.num_slices for v in val] == [4]  # 20 % of the labelled slices
    assert val[0].image[:, 0, 0].tolist() == [13.0, 14.0, 15.0, 16.0]  # in the middle
    seen = sorted(float(z) for v in [*train, *val] for z in v.image[:, 0, 0])
    assert seen == list(range(30))  # every slice in exactly one part
    assert "validation slices 13-16" in val[0].name and all(
        v.spacing == volume.spacing for v in train
    )
    few = Volume(image, (3.0, 1.0, 1.0), np.where(np.arange(30)[:, None, None] < 3, labels, 0))
    few.labels[:3, 2:6, 2:6] = 1
    assert hold_out_slab(few) == ([few], [])


def test_label_map_round_trip_and_colors():
    assert LabelMap.from_dict(DEFAULT_LABEL_MAP.to_dict()) == DEFAULT_LABEL_MAP
    assert NAMES == ["pancreas", "kidneys", "liver", "spleen"]
    colors = DEFAULT_LABEL_MAP.colors_rgba()
    assert colors[0][3] == 0.0
    blue, green, orange, red = (colors[i] for i in range(1, 5))
    assert blue[2] > blue[0] and green[1] > green[0] and red[0] > red[1] and orange[0] > orange[2]
    with pytest.raises(InvalidInputError, match="ids must be 1, 2"):
        LabelMap.from_dict({"labels": [{"id": 2, "name": "x", "color": [0, 0, 0]}]})


def test_class_map_is_argmax_with_ties_to_the_lowest_class():
    import torch

    from napari_advseg.class_map import class_map

    scores = torch.randn(3, 5, 17, 19)
    scores[0, :, 0, 0] = 1.0  # a five-way tie
    scores[1, 2:4, 1, 1] = 9.0  # a tie between classes 2 and 3
    strided = torch.randn(2, 5, 24, 24)[..., 3:20, 2:21]
    for tensor in (scores, strided):
        assert torch.equal(class_map(tensor), tensor.argmax(dim=1))
    assert class_map(scores)[0, 0, 0] == 0 and class_map(scores)[1, 1, 1] == 2
