"""The spec editor both dock widgets share: the fields round-trip a spec, a wrong field is one
line, a spec file fills the fields, a checkpoint's own spec is shown but not given."""

import dataclasses

import pytest

from napari_advseg._napari.spec_editor import SpecEditor, parse_labels
from napari_advseg.data.normalization import Normalization
from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import label_map_from_names
from napari_advseg.model_spec import ModelSpec, load_spec_file, save_spec_file
from napari_advseg.segmentation import default_model_path, save_unet

ORGANS = [
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal vein",
    "pancreas",
    "right adrenal",
    "left adrenal",
]
"""BTCV's 13 organs: more than the paper's four, some in the paper's colours, some not."""

NORMALIZATIONS = {
    "zscore": Normalization((-1000.0, 1000.0)),
    "window": Normalization((-175.0, 250.0), "window", (-1.0, 1.0)),
    "dataset": Normalization((-958.0, 327.0), "dataset", mean=82.9, std=136.97),
}


@pytest.fixture
def editor(qtbot):
    widget = SpecEditor()
    qtbot.addWidget(widget)
    return widget


def btcv_spec(kind: str) -> ModelSpec:
    return ModelSpec(
        label_map=label_map_from_names({str(i): n for i, n in enumerate(ORGANS, start=1)}),
        pixel_spacing=(0.7421875, 1.5),
        normalization=NORMALIZATIONS[kind],
        input_multiple=32,
        min_size=64,
        orientation="ras",
    )


@pytest.mark.parametrize("kind", sorted(NORMALIZATIONS))
def test_the_fields_round_trip_a_spec(editor, kind):
    spec = btcv_spec(kind)
    editor.set_spec(spec)
    assert editor.spec() == spec
    assert editor.labels.text().startswith("1: spleen, 2: right kidney,")
    assert editor.labels.text().endswith("13: left adrenal")
    assert editor.spacing_rows.text() == "0.7421875" and editor.orientation.currentText() == "ras"
    assert editor.kind.currentText() == kind
    shown = {  # only the numbers of the kind are offered
        "output": not editor.output_row.isHidden(),
        "stats": not editor.stats_row.isHidden(),
    }
    assert shown == {"output": kind == "window", "stats": kind == "dataset"}
    assert editor.clip_label.text() == ("HU window" if kind == "window" else "HU clip")


def test_an_edit_changes_the_spec_and_ticks_use(editor):
    editor.set_spec(btcv_spec("zscore"))
    assert not editor.use_box.isChecked() and editor.given() is None  # shown, not given
    editor.labels.setText("liver, spleen")  # names alone are channels 1..C
    editor.spacing_cols.setText("0.8")
    editor.kind.setCurrentText("window")
    editor.clip_low.setText("-160")
    editor.clip_high.setText("240")
    editor.out_low.setText("0")
    editor.out_high.setText("1")
    editor.orientation.setCurrentText("file")
    assert editor.use_box.isChecked()
    given = editor.given()
    assert given.label_map.names == ["liver", "spleen"]
    assert given.pixel_spacing == (0.7421875, 0.8)
    assert given.normalization == Normalization((-160.0, 240.0), "window", (0.0, 1.0))
    assert given.orientation == "file"
    editor.kind.setCurrentText("zscore")
    editor.clip_low.setText("")
    editor.clip_high.setText("")
    assert editor.spec().normalization == Normalization(None)  # both empty: no clip


@pytest.mark.parametrize(
    "field, text, said",
    [
        ("spacing_rows", "abc", "pixel spacing (rows) must be a number, got 'abc'"),
        ("spacing_cols", "0", "pixel spacing (mm) must be > 0"),
        ("labels", "1: liver, 3: spleen", "channels must be 1..2"),
        ("labels", "1: liver, spleen", "'spleen' has no channel"),
        ("labels", "1: liver, 1: spleen", "channel 1 is given twice"),
        ("labels", " , ", "give the organ of each output channel"),
        ("clip_high", "-2000", "low < high"),
        ("clip_high", "", "HU clip (high) must be a number"),
        ("std", "", "needs the dataset's mean and std"),
    ],
)
def test_a_wrong_field_is_one_line_naming_it(editor, field, text, said):
    editor.set_spec(btcv_spec("dataset"))
    getattr(editor, field).setText(text)
    with pytest.raises(InvalidInputError) as raised:
        editor.spec()
    message = str(raised.value)
    assert message.startswith("Model spec fields: ") and said in message, message
    assert "\n" not in message


def test_loading_a_spec_file_fills_the_fields(editor, tmp_path):
    spec = btcv_spec("window")
    path = save_spec_file(tmp_path / "btcv.json", spec)
    assert editor.load_file(path) == spec
    assert editor.use_box.isChecked() and editor.file.text() == str(path)
    assert editor.kind.currentText() == "window" and editor.out_low.text() == "-1"
    assert editor.input_multiple.value() == 32 and editor.min_size.value() == 64
    assert editor.given() == spec
    assert "btcv.json" in editor.note.text()

    other = save_spec_file(tmp_path / "other.json", dataclasses.replace(spec, input_multiple=8))
    editor.file.line.setText(str(other))  # typed, not confirmed: Train / Start loads it
    assert editor.given().input_multiple == 8 and editor.input_multiple.value() == 8

    broken = tmp_path / "broken.json"
    broken.write_text('{"labels": {"1": "liver"}, "pixel_spacing_mm": [1, 1]}')
    with pytest.raises(InvalidInputError, match="'normalization' is missing"):
        editor.load_file(broken)
    assert editor.input_multiple.value() == 8  # the fields are left as they were
    editor.file.line.setText(str(broken))
    editor.file.line.editingFinished.emit()  # typed and confirmed: the note says why not
    assert "broken.json" in editor.note.text() and "normalization" in editor.note.text()


def test_a_checkpoints_own_spec_is_shown_not_given(editor, tmp_path, tiny_unet):
    network, spec = tiny_unet
    fine = dataclasses.replace(spec, pixel_spacing=(1.5, 1.5))
    folder = save_unet(tmp_path / "fine", network, fine)
    editor.show_model(str(folder))
    assert editor.spec() == fine and editor.given() is None  # shown, not given
    assert editor.file.text() == "" and "checkpoint fine" in editor.note.text()
    editor.spacing_rows.setText("3")
    assert editor.given().pixel_spacing == (3.0, 1.5)  # an edit is given (and refused later)
    editor.show_model("")  # another model: what the user gave stays, the note says why
    assert editor.given().pixel_spacing == (3.0, 1.5)
    assert "The shipped U-Net carries its own spec" in editor.note.text()
    editor.use_box.setChecked(False)  # unticked: the model's own spec is shown
    assert editor.spec() == load_spec_file_of(default_model_path()) and editor.given() is None
    assert "shipped U-Net" in editor.note.text()

    btcv = btcv_spec("zscore")
    editor.load_file(save_spec_file(tmp_path / "s.json", btcv))
    editor.show_model(str(folder))  # a path typed on the way to a file is no loss
    script = tmp_path / "model.pt"
    script.write_bytes(b"")
    editor.show_model(str(script))
    assert editor.given() == btcv and editor.file.text().endswith("s.json")
    editor.use_box.setChecked(False)  # a file has no spec of its own: the fields stay
    assert editor.given() is None and editor.file.text() == "" and editor.spec() == btcv
    editor.show_model(str(script))
    assert "needs its spec" in editor.note.text()


def load_spec_file_of(folder):
    """The spec a checkpoint folder's config holds (the backend's reading of it)."""
    import json

    return ModelSpec.from_config(json.loads((folder / "config.json").read_text()))


def test_parse_labels_reads_both_forms():
    assert parse_labels("1: liver,\n2: spleen") == {"1": "liver", "2": "spleen"}
    assert parse_labels("liver, spleen") == {"1": "liver", "2": "spleen"}


def test_spec_files_and_fields_agree(editor, tmp_path):
    """What the editor shows of a spec file is what the backend reads from it."""
    spec = btcv_spec("dataset")
    path = save_spec_file(tmp_path / "spec.json", spec)
    editor.load_file(path)
    assert editor.spec() == load_spec_file(path)
