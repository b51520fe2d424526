"""The explorer dock widget, opened through the manifest, under Xvfb.

Everything the widget computes runs in workers; the tests wait for the widget's own state
(``qtbot.waitUntil``), never for a fixed time.
"""

import threading

import numpy as np
import pytest

from napari_advseg._napari import explorer_widget
from napari_advseg._napari.explorer_widget import ExplorerWidget, viewer_grid
from napari_advseg._napari.layer_data import GRID_KEY
from napari_advseg._napari.model_registry import REGISTRY
from napari_advseg._resources import default_attacker_name

from .shipped import shipped_attacker

SLICE = 25
WAIT_MS = 60_000


def idle(widget: ExplorerWidget) -> bool:
    """No job, no slice or latent computation running or waiting."""
    return widget.is_idle()


def wait_idle(qtbot, widget: ExplorerWidget) -> None:
    qtbot.waitUntil(lambda: idle(widget), timeout=WAIT_MS)


def start(qtbot, widget: ExplorerWidget) -> None:
    assert widget.start() is not None
    qtbot.waitUntil(lambda: widget.session is not None and idle(widget), timeout=WAIT_MS)


@pytest.fixture
def explorer(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(REGISTRY, "attackers", [])
    monkeypatch.setattr(REGISTRY, "segmentation", [])
    viewer = make_napari_viewer()
    viewer.open_sample("napari-advseg", "real_ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    assert isinstance(widget, ExplorerWidget)
    widget.image_box.setCurrentText("abdomen_ct_ts")
    widget.labels_box.setCurrentText("abdomen_ct_ts labels")
    viewer.dims.set_current_step(0, SLICE)
    yield viewer, widget
    widget.cancel()
    wait_idle(qtbot, widget)


@pytest.fixture
def errors(monkeypatch):
    messages = []
    monkeypatch.setattr(explorer_widget, "show_error", messages.append)
    return messages


def assert_layers_hold(widget: ExplorerWidget, index: int) -> None:
    """The layers' slice ``index`` is what the session computes for the state's latents.

    The metrics table shows the slice on screen.
    """
    state = widget.state
    result = widget.session.attack_slice(
        index, np.array(state.z_d), np.array(state.z_v), state.use_d, state.use_v
    )
    layers = widget.layers
    np.testing.assert_array_equal(layers["I_DV"].data[index], result.attacked_hu)
    np.testing.assert_array_equal(layers["V"].data[index], result.intensity_hu)
    np.testing.assert_array_equal(layers["S0"].data[index], result.s0)
    np.testing.assert_array_equal(layers["S_DV"].data[index], result.s_dv)
    magnitude = np.sqrt((result.displacement_mm**2).sum(axis=0))
    np.testing.assert_allclose(layers["|D|"].data[index], magnitude, rtol=1e-6, atol=1e-6)
    if index == widget.state.current_slice:
        assert widget.last_result.index == index
        assert widget.last_result.metrics == result.metrics


def test_start_runs_in_a_worker_and_the_first_view_shows_the_attack(explorer, qtbot):
    viewer, widget = explorer
    worker = widget.start()
    assert worker is not None and widget.state.job == "loading models"
    assert widget.start() is None  # a second click while loading starts nothing
    assert not widget.volume_button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.session is not None and idle(widget), timeout=WAIT_MS)
    assert len(widget.sliders) == 16 and widget.sliders[0].isEnabled()
    assert widget.layers["S0"].data[SLICE].any() and widget.layers["S_DV"].data[SLICE].any()
    assert_layers_hold(widget, SLICE)
    visible = {key: layer.visible for key, layer in widget.layers.items()}
    assert visible == {
        "I_DV": True,
        "V": False,
        "|D|": False,
        "S0": True,
        "S_DV": True,
        "D": False,
        "changed": False,
    }
    source = viewer.layers["abdomen_ct_ts"]
    for key, layer in widget.layers.items():
        if key != "D":  # the vectors layer holds arrows, not a volume
            assert layer.data.shape == source.data.shape
        np.testing.assert_allclose(layer.scale, source.scale)
        np.testing.assert_allclose(layer.translate, source.translate)
    assert widget.layers["S_DV"].metadata[GRID_KEY] is source.metadata[GRID_KEY]


def test_a_slider_change_gives_the_sessions_slice(explorer, qtbot):
    viewer, widget = explorer
    start(qtbot, widget)
    before = np.array(widget.layers["V"].data[SLICE])
    widget.sliders[10].setValue(300)  # z_V[2] to +3 prior standard deviations
    assert widget.state.z_v[2] == 3.0
    wait_idle(qtbot, widget)
    assert not np.array_equal(widget.layers["V"].data[SLICE], before)
    assert_layers_hold(widget, SLICE)
    assert "p = " in widget.metrics.text()
    for value in (-300, -150, 0, 150):  # a drag: only the last values count
        widget.sliders[3].setValue(value)
    wait_idle(qtbot, widget)
    assert widget.state.z_d[3] == 1.5
    assert_layers_hold(widget, SLICE)
    thumbnail = np.array(widget.layers["I_DV"].thumbnail)
    widget.sliders[10].setValue(-300)  # thumbnails follow once the drag pauses
    qtbot.waitUntil(
        lambda: not np.array_equal(widget.layers["I_DV"].thumbnail, thumbnail), timeout=WAIT_MS
    )
    viewer.dims.set_current_step(0, 30)  # scrolling attacks the new slice with the same latents
    wait_idle(qtbot, widget)
    assert_layers_hold(widget, 30)
    source = viewer.layers["abdomen_ct_ts"]
    source.contrast_limits = (-200.0, 300.0)  # linked: I_DV follows I0, and back
    assert tuple(widget.layers["I_DV"].contrast_limits) == (-200.0, 300.0)
    widget.layers["I_DV"].contrast_limits = (-150.0, 250.0)
    assert tuple(source.contrast_limits) == (-150.0, 250.0)
    start(qtbot, widget)  # starting again does not link twice
    source.contrast_limits = (-100.0, 200.0)
    assert tuple(widget.layers["I_DV"].contrast_limits) == (-100.0, 200.0)


def test_d_and_v_toggles_zero_the_other_field(explorer, qtbot):
    _, widget = explorer
    start(qtbot, widget)
    widget.use_v.setChecked(False)
    wait_idle(qtbot, widget)
    assert float(np.abs(widget.layers["V"].data[SLICE]).max()) == 0.0
    assert_layers_hold(widget, SLICE)
    widget.use_v.setChecked(True)
    widget.use_d.setChecked(False)
    wait_idle(qtbot, widget)
    assert float(np.abs(widget.layers["|D|"].data[SLICE]).max()) == 0.0
    assert_layers_hold(widget, SLICE)


def test_sample_and_posterior_mean_set_the_sliders(explorer, qtbot):
    _, widget = explorer
    start(qtbot, widget)
    mean = (widget.state.z_d, widget.state.z_v)
    widget.temperature.setValue(2.0)
    widget.sample()
    wait_idle(qtbot, widget)
    assert (widget.state.z_d, widget.state.z_v) != mean
    assert widget.sliders[0].value() == round(widget.state.z_d[0] * 100)
    assert_layers_hold(widget, SLICE)
    widget.reset()
    wait_idle(qtbot, widget)
    assert (widget.state.z_d, widget.state.z_v) == mean


def test_bad_inputs_give_notifications(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    assert widget.start() is None  # no image at all
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="photo")
    widget.refresh_choices()
    widget.image_box.setCurrentText("photo")
    assert widget.start() is None
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="ct")
    viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="other")
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("other")
    assert widget.start() is None
    assert len(errors) == 3
    assert "Open a CT" in errors[0] and "not a 3D grey-level" in errors[1]
    assert "do not match" in errors[2]
    assert widget.session is None
    widget.labels_box.setCurrentText("")
    assert widget.start() is not None  # a flat 32x32 image: the session refuses it
    wait_idle(qtbot, widget)
    assert len(errors) == 4 and errors[3].startswith("Loading models failed: ")
    assert "\n" not in errors[3] and widget.session is None and not widget.state.loaded


def test_main_job_set_up(make_napari_viewer, qtbot):
    from napari_advseg._napari.app import set_up

    viewer = make_napari_viewer()
    widget = set_up(viewer)
    qtbot.waitUntil(lambda: widget.session is not None and idle(widget), timeout=WAIT_MS)
    index = widget.state.current_slice
    assert widget.layers["S_DV"].data[index].any() and widget.layers["S0"].data[index].any()
    assert not widget.layers["V"].visible and not widget.layers["|D|"].visible
    assert widget.layers["I_DV"].visible
    names = [layer.name for layer in viewer.layers]
    assert {
        "abdomen_ct_ts",
        "abdomen_ct_ts labels",
        "abdomen_ct_ts I_DV",
        "abdomen_ct_ts S_DV",
    } <= set(names)


def test_all_slices_side_by_side_and_export(explorer, qtbot, tmp_path, errors):
    import nibabel as nib

    from napari_advseg._resources import sample_data_dir

    viewer, widget = explorer
    start(qtbot, widget)
    widget.layers["D"].visible = True
    vectors = widget.layers["D"].data
    assert vectors.ndim == 3 and vectors.shape[1:] == (2, 3) and len(vectors) > 20
    assert set(vectors[:, 0, 0]) == {float(SLICE)}
    worker = widget.attack_volume()
    assert worker is not None and widget.state.job == "attacking all slices"
    assert widget.attack_volume() is None and widget.export() is None  # one job at a time
    assert widget.start() is None and not widget.sliders[0].isEnabled()
    wait_idle(qtbot, widget)
    filled = [int(widget.layers["S_DV"].data[z].any()) for z in range(widget.session.num_slices)]
    assert sum(filled) > 30  # organs on most slices, all computed
    assert viewer.dims.current_step[0] == SLICE
    for index in (0, 12, 45):
        assert_layers_hold(widget, index)
    widget.grid_button.setChecked(True)
    grid = viewer_grid(viewer)
    assert grid.enabled and grid.stride == 2
    assert [layer.name for layer in viewer.layers][-4:] == [
        "abdomen_ct_ts",
        "abdomen_ct_ts S0",
        "abdomen_ct_ts I_DV",
        "abdomen_ct_ts S_DV",
    ]
    widget.grid_button.setChecked(False)
    assert not grid.enabled
    widget.export_dir.setText(str(tmp_path))
    assert widget.export() is not None
    wait_idle(qtbot, widget)
    paths = widget.exported
    assert [p.name.split("_", 3)[-1] for p in paths] == [
        f"{key}.nii.gz" for key in ("IDV", "V_HU", "Dx_mm", "Dy_mm", "absD_mm", "S0", "SDV")
    ]
    source = nib.load(sample_data_dir() / "abdomen_ct_ts" / "ct.nii.gz")
    for path in paths:
        written = nib.load(path)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine)
    d_x = np.asarray(nib.load(paths[2]).dataobj)
    assert np.abs(d_x).max() > 0  # D was recorded for the attacked slices
    stamp = paths[0].stat().st_mtime_ns
    assert widget.export() is None  # never overwrites: refused, naming the files
    assert "already holds" in errors[-1] and paths[0].name in errors[-1]
    assert paths[0].stat().st_mtime_ns == stamp
    widget.export_slice.setChecked(True)
    assert widget.export() is not None
    wait_idle(qtbot, widget)
    slab = nib.load(widget.exported[0])  # I_DV of slice 25 alone
    assert sorted(slab.shape) == sorted([1, *source.shape[:2]])
    assert "slice25" in slab.get_filename()
    world = slab.affine @ np.array([0, 0, 0, 1.0])
    voxel = np.linalg.solve(source.affine, world)  # where it sits in the source's voxel grid
    np.testing.assert_allclose(voxel[:2], 0, atol=1e-6)
    assert voxel[2] == pytest.approx(round(voxel[2])) and 0 <= voxel[2] < source.shape[2]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    widget.export_dir.setText(str(blocker))
    assert widget.export() is None and "is a file" in errors[-1]


def test_cancel_stops_all_slices(explorer, qtbot, monkeypatch):
    _, widget = explorer
    start(qtbot, widget)
    go_on = threading.Event()
    real = explorer_widget.attack_all_slices

    def held(*args):
        steps = real(*args)
        yield next(steps)
        go_on.wait(30)  # hold the second slice until the test has pressed Cancel
        yield from steps

    monkeypatch.setattr(explorer_widget, "attack_all_slices", held)
    widget.attack_volume()
    qtbot.waitUntil(lambda: widget.layers["S_DV"].data[0].any(), timeout=WAIT_MS)
    widget.cancel()
    go_on.set()
    wait_idle(qtbot, widget)
    assert widget.state.status.startswith("Cancelled attacking all slices")
    assert not widget.layers["S_DV"].data[40].any()  # never reached
    assert widget.volume_button.isEnabled()


def test_worker_errors_become_notifications(explorer, qtbot, monkeypatch, errors):
    _, widget = explorer
    start(qtbot, widget)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(widget.session, "attack_slice", broken)
    widget.sliders[0].setValue(100)
    wait_idle(qtbot, widget)
    assert errors[-1] == "The attack of the slice failed: RuntimeError: out of memory"
    widget.attack_volume()
    wait_idle(qtbot, widget)
    assert errors[-1] == "Attacking all slices failed: RuntimeError: out of memory"
    assert widget.volume_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_user_models_unload_and_corrupt_checkpoints(explorer, qtbot, tmp_path, errors):
    import shutil

    from napari_advseg._resources import models_dir

    _, widget = explorer
    broken = tmp_path / "broken_unet"
    shutil.copytree(models_dir() / "unet_default", broken)
    (broken / "weights.safetensors").write_bytes(b"not weights")
    widget.seg_path.setText(str(broken))
    widget.start()
    wait_idle(qtbot, widget)
    assert widget.session is None and "corrupt weights" in errors[-1]
    widget.seg_path.setText(str(models_dir() / "unet_default"))
    widget.attacker_path.setText(str(tmp_path / "no_such_attacker"))
    widget.start()
    wait_idle(qtbot, widget)
    assert widget.session is None and "no such checkpoint" in errors[-1]
    widget.attacker_path.setText(str(models_dir() / shipped_attacker("v")))
    start(qtbot, widget)
    assert widget.session is not None and widget.session.loaded.mode == "v"
    widget.unload()
    assert widget.session is None and not widget.sample_button.isEnabled()
    assert widget.update_slice() is None  # nothing loaded: nothing happens, no exception
    assert idle(widget)


def test_models_trained_in_this_session_are_offered(explorer, tmp_path):
    _, widget = explorer
    attacker, unet = tmp_path / "my_attacker", tmp_path / "my_unet"
    REGISTRY.add(attacker, "attacker")
    index = widget.attacker_box.findData(str(attacker))
    assert index >= 0 and "my_attacker" in widget.attacker_box.itemText(index)
    REGISTRY.add(unet, "segmentation")
    assert widget.seg_box.findText(str(unet)) >= 0 and widget.seg_path.text() == ""
    widget.attacker_box.setCurrentIndex(index)
    assert widget.state.attacker_folder() == attacker
    REGISTRY.add(attacker, "attacker")  # the same folder again: listed once
    assert sum(widget.attacker_box.itemData(i) == str(attacker) for i in range(index + 1)) == 1


def test_controls_and_state_follow_each_other(explorer, tmp_path):
    _, widget = explorer
    state = widget.state
    assert state.image_layer == "abdomen_ct_ts" and state.labels_layer == "abdomen_ct_ts labels"
    assert state.current_slice == SLICE and state.attacker.endswith(default_attacker_name())
    widget.export_dir.setText(str(tmp_path))
    widget.use_d.setChecked(False)
    assert state.export_dir == str(tmp_path) and state.use_d is False
    state.export_dir = str(tmp_path / "other")
    state.use_d = True
    state.temperature = 0.5
    state.seg_model = "/somewhere/unet"
    assert widget.export_dir.text() == str(tmp_path / "other") and widget.use_d.isChecked()
    assert widget.temperature.value() == 0.5 and widget.seg_path.text() == "/somewhere/unet"


def test_an_attacker_of_a_model_fed_otherwise_is_refused_unless_forced(
    make_napari_viewer, qtbot, tmp_path, tiny_unet, errors, monkeypatch
):
    import dataclasses

    import torch

    from napari_advseg.nets.attacker import Attacker, AttackerConfig
    from napari_advseg.segmentation import SegmentationModel, save_unet
    from napari_advseg.training.attack_trainer import AttackTrainingConfig
    from napari_advseg.training.attacker_io import save_attacker

    from .conftest import blob_volume

    warnings = []
    monkeypatch.setattr(explorer_widget, "show_warning", warnings.append)
    monkeypatch.setattr(REGISTRY, "attackers", [])
    monkeypatch.setattr(REGISTRY, "segmentation", [])
    network, spec = tiny_unet
    torch.manual_seed(0)
    tiny = AttackerConfig(3, 2, base_channels=4, depth=3, output_stride=2)
    attacker = save_attacker(
        tmp_path / "att",
        Attacker(tiny),
        SegmentationModel(network, spec, "tiny", {"weights_sha256": "abc"}),
        AttackTrainingConfig(xi=1.5),
        {"step": 1},
    )
    fine = save_unet(
        tmp_path / "fine", network, dataclasses.replace(spec, pixel_spacing=(1.5, 1.5))
    )
    viewer = make_napari_viewer()
    volume = blob_volume(shape=(3, 40, 48))
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    widget.image_box.setCurrentText("ct")
    widget.seg_path.setText(str(fine))
    widget.attacker_path.setText(str(attacker))
    editor = widget.spec_editor
    assert editor.spec().pixel_spacing == (1.5, 1.5) and editor.given() is None  # its own spec

    assert widget.start() is not None
    wait_idle(qtbot, widget)
    message = errors[-1]
    assert widget.session is None and message.startswith("Loading models failed: Attacker att")
    assert "pixel spacing 3x3 mm vs 1.5x1.5 mm" in message and "tick Use anyway" in message
    assert widget.status.text() == message and "\n" not in message

    editor.spacing_rows.setText("3")  # an edit that contradicts the checkpoint
    widget.force_box.setChecked(True)
    widget.start()
    wait_idle(qtbot, widget)
    assert widget.session is None and "carries its own model spec" in errors[-1]
    assert widget.status.text() == errors[-1] and "\n" not in errors[-1]

    editor.use_box.setChecked(False)  # the checkpoint's spec again, forced
    start(qtbot, widget)
    assert widget.session is not None and widget.session.seg_model.spec.pixel_spacing == (1.5, 1.5)
    assert len(warnings) == 1 and "forced" in warnings[0]
    assert len(errors) == 2
    widget.unload()
