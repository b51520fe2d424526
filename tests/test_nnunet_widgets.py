"""nnU-Net v2 results folders in the dock widgets, under Xvfb.

The explorer explores a trained nnU-Net fold (``nnunet_trained``, tests/conftest.py) with a tiny
attacker trained for it through the command line; the spec editors show the spec its plans give;
a ``fold_N`` folder chooses that fold; an unsupported folder is one line, in the spec editor and
as a notification. Nothing here depends on how well either network segments or attacks.
"""

import json
import shutil

import numpy as np
import pytest
from qtpy.QtGui import QTextDocument

from napari_advseg._napari import explorer_widget
from napari_advseg._napari.explorer_widget import ExplorerWidget
from napari_advseg._napari.model_registry import REGISTRY
from napari_advseg._napari.training_run import AttackRequest
from napari_advseg._napari.training_widget import KINDS, TrainingWidget
from napari_advseg.cli import main
from napari_advseg.data.nifti import load_volume
from napari_advseg.errors import AdvsegError
from napari_advseg.segmentation import load_segmentation_model

from .nnunet_results import FAST_ATTACK, ORGANS, SPACING_ZYX, untrained_results_folder

WAIT_MS = 120_000
DERIVED = "Derived from the nnU-Net plans: "
REGIONS = "region-based training (regions_class_order) is not supported"


@pytest.fixture(autouse=True)
def no_registered_models(monkeypatch):
    """Models trained by other tests of the session are not offered here."""
    monkeypatch.setattr(REGISTRY, "attackers", [])
    monkeypatch.setattr(REGISTRY, "segmentation", [])


@pytest.fixture
def errors(monkeypatch):
    messages = []
    monkeypatch.setattr(explorer_widget, "show_error", messages.append)
    return messages


@pytest.fixture
def open_explorer(make_napari_viewer, qtbot):
    """A viewer with the explorer docked; jobs still running at the end are stopped."""
    opened = []

    def open_():
        viewer = make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
        assert isinstance(widget, ExplorerWidget)
        opened.append(widget)
        return viewer, widget

    yield open_
    for widget in opened:
        widget.cancel()
        qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)


def plain_text(html: str) -> str:
    """What a rich-text label shows, as text."""
    document = QTextDocument()
    document.setHtml(html)
    return document.toPlainText()


def assert_shows_derived_spec(editor, fold: str = "0") -> None:
    """The editor shows the plans' spec of ``fold``, not given to the backend."""
    spec = editor.spec()
    assert spec.pixel_spacing == SPACING_ZYX[1:] == (1.2, 1.5)
    assert spec.orientation == "file" and spec.normalization.kind == "dataset"
    assert spec.label_map.names == list(ORGANS)
    assert editor.labels.text() == "1: liver, 2: spleen, 3: left kidney"
    note = editor.note.text()
    assert note.startswith(DERIVED), note
    assert f"fold {fold} (checkpoint_final.pth)" in note
    assert not editor.use_box.isChecked() and editor.given() is None


def region_based(folder):
    """Make ``folder``'s dataset.json region-based, as nnU-Net writes such a dataset."""
    path = folder / "dataset.json"
    dataset = json.loads(path.read_text())
    dataset["labels"] = {"background": 0, "liver": [1, 2, 3], "spleen": [2, 3], "left kidney": 3}
    dataset["regions_class_order"] = [1, 2, 3]
    path.write_text(json.dumps(dataset, indent=2))
    return folder


def test_the_explorer_explores_a_trained_nnunet_folder(
    nnunet_trained, open_explorer, qtbot, tmp_path, errors, monkeypatch
):
    warnings = []
    monkeypatch.setattr(explorer_widget, "show_warning", warnings.append)
    folder, raw, _ = nnunet_trained
    attacker = tmp_path / "attacker"
    argv = ["train-attack", "--model", str(folder), "--dataset", str(raw), "--out", str(attacker)]
    assert main([*argv, *FAST_ATTACK]) == 0

    organs = load_segmentation_model(folder).spec.label_map
    volume = load_volume(
        raw / "imagesTr" / "case_001_0000.nii.gz",
        raw / "labelsTr" / "case_001.nii.gz",
        label_map=organs,
        name="case_001",
    )
    viewer, widget = open_explorer()
    viewer.add_image(volume.image, name="case_001", scale=volume.spacing)
    viewer.add_labels(volume.labels, name="case_001 labels", scale=volume.spacing)
    widget.image_box.setCurrentText("case_001")
    widget.labels_box.setCurrentText("case_001 labels")
    widget.seg_path.setText(str(folder))
    widget.attacker_path.setText(str(attacker))
    assert widget.state.seg_model_path() == folder  # the field's path, unchanged
    assert_shows_derived_spec(widget.spec_editor)

    assert widget.start() is not None
    qtbot.waitUntil(lambda: widget.session is not None and widget.is_idle(), timeout=WAIT_MS)
    assert errors == []
    # layers made from arrays carry no file grid: the 'file' orientation is taken as LPS, and
    # the user is told (a layer opened from the file is fed in its own order, tested below)
    assert len(warnings) == 1 and "was not opened from a file" in warnings[0]
    session = widget.session
    assert session.seg_model.spec.label_map.names == ["liver", "spleen", "left kidney"]
    assert session.seg_model.config["fold"] == "0"
    assert widget.state.loaded and widget.status.text() == "Exploring case_001 with a DV attacker."
    for key in ("S0", "S_DV"):
        layer = widget.layers[key]
        assert layer.name == f"case_001 {key}"
        assert layer.data.shape == volume.image.shape
        np.testing.assert_allclose(layer.scale, viewer.layers["case_001"].scale)
        assert set(np.unique(layer.data)) <= {0, *ORGANS.values()}

    result = widget.last_result
    assert result is not None and result.index == widget.state.current_slice
    assert list(result.metrics.dice_s0) == list(ORGANS)
    assert list(result.metrics.dice_dv_warped) == list(ORGANS)
    shown = plain_text(widget.metrics.text())
    assert f"Slice {result.index}, reference: ground truth" in shown
    rows = [line for line in shown.splitlines() if line.strip()]
    header = rows.index("organ")
    assert rows[header : header + 4] == ["organ", "S0", "S_DV", "drop"]
    named = [row for row in rows if row in ORGANS]
    assert named == ["liver", "spleen", "left kidney"]  # one row per organ, in channel order
    for organ in ("pancreas", "kidneys"):  # the shipped U-Net's organs are nowhere
        assert organ not in shown
    assert_shows_derived_spec(widget.spec_editor)  # still shown, still not given


def test_a_fold_folder_chooses_that_fold(open_explorer, tmp_path):
    folder = untrained_results_folder(tmp_path / "results")
    shutil.copytree(folder / "fold_0", folder / "fold_1")
    _, widget = open_explorer()
    editor = widget.spec_editor
    widget.seg_path.setText(str(folder))
    assert_shows_derived_spec(editor, fold="0")  # the trainer folder: its first trained fold
    widget.seg_path.setText(str(folder / "fold_1"))
    assert_shows_derived_spec(editor, fold="1")
    assert "fold 0" not in editor.note.text()
    assert widget.state.seg_model_path() == folder / "fold_1"
    assert load_segmentation_model(folder / "fold_1").config["fold"] == "1"
    assert load_segmentation_model(folder).config["fold"] == "0"


def test_an_unsupported_folder_is_one_line_in_the_editor_and_on_start(
    open_explorer, qtbot, tmp_path, errors
):
    from .conftest import blob_volume

    folder = region_based(untrained_results_folder(tmp_path / "results"))
    with pytest.raises(AdvsegError) as refused:
        load_segmentation_model(folder)
    line = str(refused.value)
    assert REGIONS in line and "\n" not in line

    viewer, widget = open_explorer()
    volume = blob_volume(shape=(3, 48, 64))
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    widget.image_box.setCurrentText("ct")
    widget.seg_path.setText(str(folder))
    editor = widget.spec_editor
    assert editor.note.text() == line  # the backend's line, word for word
    assert editor.given() is None
    widget.seg_path.setText(str(folder / "fold_0"))
    assert REGIONS in editor.note.text()

    assert widget.start() is not None
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    assert widget.session is None and not widget.state.loaded
    assert len(errors) == 1
    message = errors[0]
    assert message.startswith("Loading models failed: ") and REGIONS in message
    assert "\n" not in message and "Traceback" not in message
    assert widget.status.text() == message


def test_the_training_widget_shows_the_plans_spec(nnunet_trained, make_napari_viewer, tmp_path):
    folder, raw, _ = nnunet_trained
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
    assert isinstance(widget, TrainingWidget)
    widget.kind.setCurrentText(KINDS[1])
    widget.device.setCurrentText("cpu")
    widget.out.setText(str(tmp_path / "run"))
    editor = widget.spec_editor
    widget.seg_path.setCurrentText(str(folder))
    assert_shows_derived_spec(editor)
    widget.dataset.setText(str(raw))
    request = widget.request()  # what Train would hand the worker
    assert isinstance(request, AttackRequest)
    assert request.seg_path == folder and request.spec is None and request.dataset == raw
    widget.seg_path.setCurrentText(str(folder / "fold_0"))
    assert_shows_derived_spec(editor)
    assert widget.request().seg_path == folder / "fold_0"
    assert widget.worker is None  # nothing was trained


@pytest.mark.parametrize("stored", ["LPS", "RAS"])
def test_a_layer_opened_from_a_file_is_fed_as_nnunet_reads_the_file(
    stored, open_explorer, tmp_path
):
    """The image the explorer hands the backend (``LayerScan.volume``, as ``load_session`` does)
    reaches the network as nnU-Net's SimpleITK array of the file, whatever the file's order."""
    import nibabel as nib

    from napari_advseg.inference import to_model_grid

    from .nnunet_results import case_arrays, ct_normalize, read_as_sitk_array

    folder = untrained_results_folder(tmp_path / "results")
    spec = load_segmentation_model(folder).spec
    image, _ = case_arrays(5)
    sz, sy, sx = SPACING_ZYX
    signs = (-1.0, -1.0) if stored == "LPS" else (1.0, 1.0)
    affine = np.diag([signs[0] * sx, signs[1] * sy, sz, 1.0])
    path = tmp_path / f"{stored}_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0)), affine), path)
    np.testing.assert_array_equal(read_as_sitk_array(path), image)
    plans = json.loads((folder / "plans.json").read_text())
    expected = ct_normalize(image, plans["foreground_intensity_properties_per_channel"]["0"])

    viewer, widget = open_explorer()
    (layer,) = viewer.open(path, plugin="napari-advseg")
    scan = widget.choice.scan(layer.name, "")
    fed = to_model_grid(scan.volume(spec.label_map), spec).images[:, 0].numpy()
    assert fed.shape == expected.shape
    np.testing.assert_allclose(fed, expected, atol=1e-4)
