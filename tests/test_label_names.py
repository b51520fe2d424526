"""Label maps from a model spec's ``labels`` entry: any order, any count, the paper's colours."""

import pytest

from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import DEFAULT_LABEL_MAP, label_map_from_names


def test_channels_in_any_order_keep_the_papers_colours():
    label_map = label_map_from_names({"3": "kidneys", "1": "liver", "4": "pancreas", "2": "spleen"})
    assert label_map.names == ["liver", "spleen", "kidneys", "pancreas"]
    paper = {label.name: label.color for label in DEFAULT_LABEL_MAP}
    assert all(label.color == paper[label.name] for label in label_map)


@pytest.mark.parametrize("count", [13, 117])
def test_many_classes_get_distinct_colours(count):
    label_map = label_map_from_names({str(i): f"organ_{i}" for i in range(1, count + 1)})
    assert label_map.num_classes == count + 1
    colors = [label.color for label in label_map]
    assert len(set(colors)) == count
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_the_shipped_maps_names_give_the_shipped_map():
    names = {label.id: label.name for label in DEFAULT_LABEL_MAP}
    assert label_map_from_names(names) == DEFAULT_LABEL_MAP


@pytest.mark.parametrize(
    ("names", "match"),
    [
        ({}, "must map output channels"),
        ({"0": "background", "1": "liver"}, "channels must be 1..2"),
        ({"1": "liver", "3": "spleen"}, "channels must be 1..2"),
        ({"one": "liver"}, "not a whole number"),
        ({"1": ""}, "needs an organ name"),
        ({"1": "liver", "2": "liver"}, "unique"),
    ],
)
def test_bad_label_entries_are_one_clear_error(names, match):
    with pytest.raises(InvalidInputError, match=match):
        label_map_from_names(names)
