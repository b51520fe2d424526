"""The explorer dock widget, opened through the manifest, under Xvfb."""

import numpy as np
import pytest

from napari_advseg._napari.explorer_widget import ExplorerWidget, viewer_grid
from napari_advseg._napari.layer_data import GRID_KEY


@pytest.fixture
def explorer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-advseg", "real_ct")
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    assert isinstance(widget, ExplorerWidget)
    widget.image_box.setCurrentText("abdomen_ct_ts")
    widget.labels_box.setCurrentText("abdomen_ct_ts labels")
    viewer.dims.set_current_step(0, 25)
    return viewer, widget


def test_sliders_update_aligned_layers(explorer, qtbot):
    viewer, widget = explorer
    widget.start()
    assert len(widget.sliders) == 16
    qtbot.waitUntil(lambda: widget.layers["S0"].data[25].any(), timeout=5000)
    source = viewer.layers["abdomen_ct_ts"]
    for key, layer in widget.layers.items():
        if key != "D":  # the vectors layer holds arrows, not a volume
            assert layer.data.shape == source.data.shape
        np.testing.assert_allclose(layer.scale, source.scale)
        np.testing.assert_allclose(layer.translate, source.translate)
    before = {k: np.array(layer.data[25]) for k, layer in widget.layers.items()}
    widget.sliders[10].setValue(300)  # z_V[2] to +3 prior standard deviations
    qtbot.waitUntil(
        lambda: not np.array_equal(widget.layers["V"].data[25], before["V"]), timeout=5000
    )
    assert not np.array_equal(widget.layers["I_DV"].data[25], before["I_DV"])
    assert "p = " in widget.metrics.text()
    thumbnail = np.array(widget.layers["V"].thumbnail)
    widget.sliders[10].setValue(-300)  # thumbnails follow once the drag pauses
    qtbot.waitUntil(
        lambda: not np.array_equal(widget.layers["V"].thumbnail, thumbnail), timeout=5000
    )
    assert widget.layers["S_DV"].metadata[GRID_KEY] is source.metadata[GRID_KEY]
    source.contrast_limits = (-200.0, 300.0)  # linked: I_DV follows I0, and back
    assert tuple(widget.layers["I_DV"].contrast_limits) == (-200.0, 300.0)
    widget.layers["I_DV"].contrast_limits = (-150.0, 250.0)
    assert tuple(source.contrast_limits) == (-150.0, 250.0)
    widget.start()  # starting again does not link twice
    source.contrast_limits = (-100.0, 200.0)
    assert tuple(widget.layers["I_DV"].contrast_limits) == (-100.0, 200.0)


def test_d_and_v_toggles_zero_the_other_field(explorer, qtbot):
    _, widget = explorer
    widget.start()
    widget.use_v.setChecked(False)
    result = widget.update_slice()
    assert float(np.abs(result.intensity_hu).max()) == 0.0
    assert float(np.abs(widget.layers["V"].data[25]).max()) == 0.0
    widget.use_v.setChecked(True)
    widget.use_d.setChecked(False)
    result = widget.update_slice()
    assert float(np.abs(result.displacement_mm).max()) == 0.0


def test_bad_inputs_give_notifications(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    messages = []
    monkeypatch.setattr("napari_advseg._napari.explorer_widget.show_error", messages.append)
    widget.start()  # no image at all
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="photo")
    widget.refresh_choices()
    widget.image_box.setCurrentText("photo")
    widget.start()
    viewer.add_image(np.zeros((4, 32, 32), np.float32), name="ct")
    viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="other")
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("other")
    widget.start()
    assert len(messages) == 3
    assert "Open a CT" in messages[0] and "not a 3D grey-level" in messages[1]
    assert "do not match" in messages[2]
    assert widget.session is None


def test_main_job_set_up(make_napari_viewer, qtbot):
    from napari_advseg._napari.app import set_up

    viewer = make_napari_viewer()
    widget = set_up(viewer)
    assert widget.session is not None
    assert widget.layers["S_DV"].data[25].any() and widget.layers["S0"].data[25].any()
    names = [layer.name for layer in viewer.layers]
    assert {
        "abdomen_ct_ts",
        "abdomen_ct_ts labels",
        "abdomen_ct_ts I_DV",
        "abdomen_ct_ts S_DV",
    } <= set(names)


def test_vectors_volume_grid_and_export(explorer, qtbot, tmp_path):
    import nibabel as nib

    from napari_advseg._resources import sample_data_dir

    viewer, widget = explorer
    widget.start()
    widget.update_slice()
    vectors = widget.layers["D"].data
    assert vectors.ndim == 3 and vectors.shape[1:] == (2, 3) and len(vectors) > 20
    assert set(vectors[:, 0, 0]) == {25.0}
    widget.attack_volume()
    filled = [int(widget.layers["S_DV"].data[z].any()) for z in range(widget.session.num_slices)]
    assert sum(filled) > 30  # organs on most slices, all computed
    assert viewer.dims.current_step[0] == 25
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
    paths = widget.export()
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
    widget.export_slice.setChecked(True)
    slab = nib.load(widget.export()[0])  # I_DV of slice 25 alone
    assert sorted(slab.shape) == sorted([1, *source.shape[:2]])
    assert "slice25" in slab.get_filename()
    world = slab.affine @ np.array([0, 0, 0, 1.0])
    voxel = np.linalg.solve(source.affine, world)  # where it sits in the source's voxel grid
    np.testing.assert_allclose(voxel[:2], 0, atol=1e-6)
    assert voxel[2] == pytest.approx(round(voxel[2])) and 0 <= voxel[2] < source.shape[2]


def test_user_models_unload_and_corrupt_checkpoints(explorer, qtbot, tmp_path, monkeypatch):
    import shutil

    from napari_advseg._resources import models_dir

    _, widget = explorer
    messages = []
    monkeypatch.setattr("napari_advseg._napari.explorer_widget.show_error", messages.append)
    broken = tmp_path / "broken_unet"
    shutil.copytree(models_dir() / "unet_default", broken)
    (broken / "weights.safetensors").write_bytes(b"not weights")
    widget.seg_path.setText(str(broken))
    widget.start()
    assert widget.session is None and "corrupt weights" in messages[-1]
    widget.seg_path.setText(str(models_dir() / "unet_default"))
    widget.attacker_path.setText(str(tmp_path / "no_such_attacker"))
    widget.start()
    assert widget.session is None and "no such checkpoint" in messages[-1]
    widget.attacker_path.setText(str(models_dir() / "attacker_v_xi2"))
    widget.start()
    assert widget.session is not None and widget.session.loaded.mode == "v"
    widget.unload()
    assert widget.session is None and not widget.sample_button.isEnabled()
    assert widget.update_slice() is None  # nothing loaded: nothing happens, no exception
