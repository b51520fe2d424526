"""Model spec files: one schema for hand-written specs and checkpoint configs."""

import json

import pytest

from napari_advseg.data.normalization import Normalization
from napari_advseg.errors import InvalidInputError
from napari_advseg.model_spec import ModelSpec, load_spec_file, save_spec_file
from napari_advseg.segmentation import load_segmentation_model, load_unet, save_unet

MONAI_STYLE = {
    "labels": {"1": "liver", "2": "spleen", "3": "kidneys", "4": "pancreas"},
    "pixel_spacing_mm": [1.5, 1.5],
    "normalization": {"kind": "window", "window_hu": [-175, 250], "output_range": [0, 1]},
    "input_multiple": 16,
    "orientation": "radiological",
}


def write(tmp_path, data, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_the_issue_example_reads_as_written(tmp_path):
    spec = load_spec_file(write(tmp_path, MONAI_STYLE))
    assert spec.label_map.names == ["liver", "spleen", "kidneys", "pancreas"]
    assert spec.pixel_spacing == (1.5, 1.5)
    assert spec.normalization == Normalization((-175.0, 250.0), "window", (0.0, 1.0))
    assert spec.input_multiple == 16 and spec.min_size == 32
    assert spec.orientation == "radiological"
    # the paper's colours follow the organ, not the channel
    shipped = ModelSpec()
    assert spec.label_map.by_name("liver").color == shipped.label_map.by_name("liver").color


@pytest.mark.parametrize(
    "normalization",
    [
        {"kind": "zscore", "clip_hu": [-1000, 1000]},
        {"kind": "zscore"},
        {"kind": "window", "window_hu": [-175, 250], "output_range": [-1, 1]},
        {"kind": "dataset", "clip_hu": [-958, 327], "mean": 82.9, "std": 136.0},
    ],
)
@pytest.mark.parametrize("orientation", ["radiological", "ras", "file"])
def test_a_spec_round_trips_through_its_file(tmp_path, normalization, orientation):
    data = {**MONAI_STYLE, "normalization": normalization, "orientation": orientation}
    spec = load_spec_file(write(tmp_path, data))
    again = load_spec_file(save_spec_file(tmp_path / "again.json", spec))
    assert again == spec
    assert spec.differences(again) == []


def test_many_classes_in_any_order(tmp_path):
    names = {str(channel): f"organ {channel}" for channel in range(117, 0, -1)}
    spec = load_spec_file(write(tmp_path, {**MONAI_STYLE, "labels": names}))
    assert spec.label_map.num_classes == 118
    assert spec.label_map.names[0] == "organ 1" and spec.label_map.names[-1] == "organ 117"
    assert len({label.color for label in spec.label_map}) > 100  # a palette, not one colour


BAD = {
    "not an object": ([1, 2], "JSON object"),
    "typo in a key": ({**MONAI_STYLE, "input_multipl": 16}, "unknown key 'input_multipl'"),
    "labels missing": ({k: v for k, v in MONAI_STYLE.items() if k != "labels"}, "'labels'"),
    "channel gap": ({**MONAI_STYLE, "labels": {"1": "liver", "3": "spleen"}}, "1..2"),
    "window without window": (
        {**MONAI_STYLE, "normalization": {"kind": "window"}},
        "window",
    ),
    "dataset without std": (
        {**MONAI_STYLE, "normalization": {"kind": "dataset", "mean": 0}},
        "mean and std",
    ),
    "unknown kind": ({**MONAI_STYLE, "normalization": {"kind": "minmax"}}, "minmax"),
    "spacing negative": ({**MONAI_STYLE, "pixel_spacing_mm": [-1, 1]}, "pixel spacing"),
    "multiple fractional": ({**MONAI_STYLE, "input_multiple": 2.5}, "whole number"),
    "orientation unknown": ({**MONAI_STYLE, "orientation": "LPS"}, "orientation"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_spec_is_one_line_naming_the_file(tmp_path, case):
    data, pattern = BAD[case]
    path = write(tmp_path, data)
    with pytest.raises(InvalidInputError, match=pattern) as raised:
        load_spec_file(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("labels: liver")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        load_spec_file(path)


def test_checkpoints_write_version_2_and_read_version_1(tmp_path, tiny_unet):
    network, spec = tiny_unet
    folder = save_unet(tmp_path / "unet", network, spec)
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 2 and config["spec"] == spec.to_dict()
    assert load_unet(folder)[0].spec == spec
    # the same facts at the top level, as version 1 wrote them
    legacy = {k: v for k, v in config.items() if k != "spec"}
    legacy.update(
        format_version=1,
        label_map=spec.label_map.to_dict(),
        pixel_spacing_mm=list(spec.pixel_spacing),
        normalization=spec.normalization.to_dict(),
        input_multiple=spec.input_multiple,
        min_size=spec.min_size,
    )
    (folder / "config.json").write_text(json.dumps(legacy))
    assert load_unet(folder)[0].spec == spec


def test_a_spec_that_contradicts_a_checkpoint_is_refused(tmp_path, tiny_unet):
    network, spec = tiny_unet
    folder = save_unet(tmp_path / "unet", network, spec)
    assert load_segmentation_model(folder, spec).spec == spec
    other = write(tmp_path, {**spec.to_dict(), "pixel_spacing_mm": [1.5, 1.5]})
    with pytest.raises(InvalidInputError, match=r"pixel spacing 1\.5x1\.5 mm vs 3x3 mm"):
        load_segmentation_model(folder, other)
