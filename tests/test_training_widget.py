"""The training dock widget: a worker that trains, stops within a step, and keeps a checkpoint."""

import json

import numpy as np
from qtpy.QtCore import QTimer

from napari_advseg._napari.training_widget import KINDS, TrainingWidget
from napari_advseg.training.events import TrainingFinished

from .conftest import blob_volume


def open_widget(make_napari_viewer, tmp_path, slices=4):
    viewer = make_napari_viewer()
    volume = blob_volume(shape=(slices, 48, 48))
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    viewer.add_labels(volume.labels, name="ct labels", scale=volume.spacing)
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
    assert isinstance(widget, TrainingWidget)
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("ct labels")
    widget.device.setCurrentText("cpu")
    widget.out.setText(str(tmp_path / "run"))
    return viewer, widget


def test_train_and_stop_keeps_the_loop_turning(make_napari_viewer, qtbot, tmp_path):
    _, widget = open_widget(make_napari_viewer, tmp_path)
    widget.kind.setCurrentText(KINDS[0])
    widget.steps.setValue(10_000)
    widget.batch.setValue(2)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    widget.start()
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: len(widget.history.get("cross_entropy", [])) >= 3, timeout=20000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    timer.stop()
    assert len(ticks) > 5  # the main thread kept turning while training ran
    assert isinstance(widget.last_event, TrainingFinished) and widget.last_event.stopped
    assert widget.last_event.step < 10_000
    assert (tmp_path / "run" / "last" / "weights.safetensors").is_file()
    assert widget.start_button.isEnabled()
    assert widget.axes.get_lines()  # the loss plot was drawn


def test_unet_from_layers_validates_on_held_out_slices(make_napari_viewer, qtbot, tmp_path):
    _, widget = open_widget(make_napari_viewer, tmp_path, slices=10)
    widget.kind.setCurrentText(KINDS[0])
    widget.steps.setValue(100)  # two epochs of 50 steps, each ending with a validation
    widget.batch.setValue(2)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120000)
    assert isinstance(widget.last_event, TrainingFinished) and not widget.last_event.stopped
    assert "validation slices 4-5" in widget.split_note
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert training["val_subjects"] == ["ct [validation slices 4-5]"]  # the best checkpoint
    assert training["best_validation_mean_dice"] is not None
    assert training["train_subjects"] == ["ct [train slices 0-3]", "ct [train slices 6-9]"]


def test_attacker_settings_reach_the_trainer(make_napari_viewer, qtbot, tmp_path, trained_seg_dir):
    _, widget = open_widget(make_napari_viewer, tmp_path)
    widget.kind.setCurrentText(KINDS[1])
    widget.lambda_d.setValue(0.5)
    widget.lambda_v.setValue(0.02)
    widget.latent_d.setValue(3)
    widget.latent_v.setValue(5)
    widget.seg_path.setText(str(trained_seg_dir))
    trainer = widget.make_trainer()
    assert (trainer.config.lambda_d, trainer.config.lambda_v) == (0.5, 0.02)
    assert (trainer.attacker_config.latent_dim_d, trainer.attacker_config.latent_dim_v) == (3, 5)
    assert trainer.seg_model.name == trained_seg_dir.name != "unet_default"


def test_bad_inputs_become_notifications(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = open_widget(make_napari_viewer, tmp_path)
    messages = []
    monkeypatch.setattr("napari_advseg._napari.training_widget.show_error", messages.append)
    widget.labels_box.setCurrentText("")
    widget.kind.setCurrentText(KINDS[0])
    widget.start()  # a U-Net needs labels
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="photo")
    widget.image_box.setCurrentText("photo")
    widget.start()
    assert len(messages) == 2 and "no label volume" in messages[0]
    assert "not a 3D grey-level" in messages[1]
    assert widget.worker is None
