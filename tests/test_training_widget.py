"""The training dock widget: a worker that trains, stops within a step, and keeps a checkpoint;
a themed loss plot drawn off the GUI thread; finished checkpoints offered to the explorer."""

import dataclasses
import json
import threading

import nibabel as nib
import numpy as np
import pytest
from matplotlib.colors import to_hex
from napari.utils.theme import get_theme

from napari_advseg._napari.loss_figure import ATTACKER_LAYOUT, UNET_LAYOUT
from napari_advseg._napari.loss_plot import _hex, theme_colors
from napari_advseg._napari.model_registry import REGISTRY
from napari_advseg._napari.training_run import AttackRequest, SegRequest, build_trainer
from napari_advseg._napari.training_widget import KINDS, TrainingWidget
from napari_advseg._resources import models_dir
from napari_advseg.data.dataset_folder import read_dataset_folder, split_cases
from napari_advseg.labels import DEFAULT_LABEL_MAP
from napari_advseg.model_spec import save_spec_file
from napari_advseg.training.attack_trainer import AttackTrainer
from napari_advseg.training.events import TrainingFinished
from napari_advseg.training.seg_trainer import SegTrainer

from .conftest import blob_volume

ATTACK_TERMS = {
    "adversarial": 0.05,
    "xi": 3.2,
    "displacement": 0.01,
    "intensity": 2e-5,
    "kl": 0.3,
    "total": 3.5,
    "masked_xent": 0.2,
    "critic": -0.05,
    "wasserstein": 0.05,
}
"""The nine terms an attacker reports per step (the diversity term only when it is on)."""


@pytest.fixture
def open_widget(make_napari_viewer, qtbot, tmp_path):
    """Open a viewer with a CT and its labels and the docked widget; a run still going at the
    end of the test is stopped and awaited before the viewer closes."""
    widgets = []

    def open_(slices=4, volume=None):
        viewer = make_napari_viewer()
        volume = volume or blob_volume(shape=(slices, 48, 48))
        viewer.add_image(volume.image, name="ct", scale=volume.spacing)
        viewer.add_labels(volume.labels, name="ct labels", scale=volume.spacing)
        _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
        assert isinstance(widget, TrainingWidget)
        widget.image_box.setCurrentText("ct")
        widget.labels_box.setCurrentText("ct labels")
        widget.device.setCurrentText("cpu")
        widget.out.setText(str(tmp_path / "run"))
        widgets.append(widget)
        return viewer, widget

    yield open_
    for widget in widgets:
        widget.stop()
        qtbot.waitUntil(lambda w=widget: w.worker is None, timeout=600000)


@pytest.fixture
def notes(monkeypatch):
    """The widget's notifications, by kind, instead of napari's pop-ups."""
    seen = {"error": [], "warning": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(f"napari_advseg._napari.training_widget.show_{kind}", seen[kind].append)
    return seen


def test_trainer_runs_in_a_worker_and_events_reach_the_gui_thread(
    open_widget, qtbot, tmp_path, monkeypatch
):
    _, widget = open_widget()
    widget.kind.setCurrentText(KINDS[0])
    widget.steps.setValue(10_000)
    widget.batch.setValue(2)
    threads = {"trainer": set(), "events": set()}
    run = SegTrainer.run

    def recording_run(self):
        threads["trainer"].add(threading.get_ident())  # recorded inside the worker
        yield from run(self)

    on_event = widget.on_event

    def recording_on_event(event):
        threads["events"].add(threading.get_ident())
        on_event(event)

    monkeypatch.setattr(SegTrainer, "run", recording_run)
    monkeypatch.setattr(widget, "on_event", recording_on_event)  # connected by start()
    widget.start()
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: len(widget.plot.history("cross_entropy")) >= 3, timeout=60000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    main = threading.get_ident()
    assert threads["trainer"] and main not in threads["trainer"]  # trained off the GUI thread
    assert threads["events"] == {main}  # every event came to the GUI thread through a signal
    assert isinstance(widget.last_event, TrainingFinished) and widget.last_event.stopped
    assert widget.last_event.step < 10_000
    assert (tmp_path / "run" / "last" / "weights.safetensors").is_file()
    assert widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: widget.plot.idle, timeout=30000)
    assert widget.plot.figure.panel_terms() == [("loss", ["cross_entropy"])]  # no Dice weight


def test_the_plot_is_drawn_off_the_gui_thread(open_widget, qtbot, tmp_path, monkeypatch):
    _, widget = open_widget()
    plot = widget.plot
    qtbot.waitUntil(lambda: plot.idle)
    threads = []
    render = plot.figure.render

    def recording_render(snapshot):
        threads.append(threading.get_ident())
        return render(snapshot)

    monkeypatch.setattr(plot.figure, "render", recording_render)
    plot.reset(ATTACKER_LAYOUT, {"masked_xent": 2.0})
    for _ in range(500):
        plot.append(ATTACK_TERMS)
    assert threads == []  # recording 500 steps drew nothing: drawing waits for the event loop
    qtbot.waitUntil(
        lambda: plot.idle and plot.shown is not None and len(plot.shown.series["xi"]) == 500,
        timeout=30000,
    )
    assert threads and threading.get_ident() not in threads  # drawn in the background
    assert len(plot.history("xi")) == 500


PLOT_WAIT_MS = 30_000
"""How long a test waits for the throttled background draw (a loaded CI machine is slow)."""


def test_plot_panels_hold_the_expected_terms(open_widget, qtbot, tmp_path):
    _, widget = open_widget()
    plot = widget.plot
    plot.reset(ATTACKER_LAYOUT, {"masked_xent": 2.0})
    for _ in range(3):
        plot.append(ATTACK_TERMS)
    qtbot.waitUntil(
        lambda: plot.idle and plot.shown is not None and bool(plot.shown.series),
        timeout=PLOT_WAIT_MS,
    )
    assert plot.figure.panel_terms() == [
        ("attack", ["masked_xent", "xi target", "xi"]),
        ("critic", ["wasserstein", "critic", "adversarial"]),
        ("penalties", ["displacement", "intensity", "kl"]),
        ("generator", ["total"]),
    ]
    axes = plot.figure.figure.axes
    assert axes[2].get_yscale() == "symlog"  # decades apart: 1e-2 and 2e-5 both readable
    assert axes[0].get_ylim()[1] > 3.2  # the xi term is not under a legend: legends sit above
    renderer = plot.figure.canvas.get_renderer()
    for ax in axes:  # each legend lies above its panel, off the data
        legend_box = ax.get_legend().get_window_extent(renderer)
        assert legend_box.y0 >= ax.get_window_extent(renderer).y1 - 1
    plot.append({**ATTACK_TERMS, "diversity": -0.2})
    qtbot.waitUntil(lambda: plot.idle and len(plot.shown.series["xi"]) == 4, timeout=PLOT_WAIT_MS)
    assert ("diversity", ["diversity"]) in plot.figure.panel_terms()
    plot.reset(UNET_LAYOUT)
    plot.append({"cross_entropy": 1.2, "dice": 0.4, "total": 1.6})
    qtbot.waitUntil(lambda: plot.idle and "total" in plot.shown.series, timeout=PLOT_WAIT_MS)
    assert plot.figure.panel_terms() == [("loss", ["cross_entropy", "dice"])]


def test_the_plot_follows_the_viewer_theme(open_widget, qtbot, tmp_path):
    viewer, widget = open_widget()
    plot = widget.plot

    def shows(theme_name):
        colors = theme_colors(theme_name)
        if not (plot.idle and plot.shown and plot.shown.colors == colors):
            return False
        corner = plot.label.pixmap().toImage().pixelColor(0, 0).name()
        figure = plot.figure.figure
        return (corner, to_hex(figure.get_facecolor()), to_hex(figure.axes[0].get_facecolor())) == (
            colors.background,
            colors.background,
            colors.canvas,
        )

    plot.append({"cross_entropy": 1.0, "dice": 0.5})
    viewer.theme = "dark"
    qtbot.waitUntil(lambda: shows("dark"), timeout=30000)
    assert plot.shown.colors.dark
    viewer.theme = "light"
    qtbot.waitUntil(lambda: shows("light"), timeout=30000)
    assert not plot.shown.colors.dark
    assert theme_colors("light").background == _hex(get_theme("light").background)
    text = plot.figure.figure.axes[0].yaxis.label.get_color()
    assert to_hex(text) == _hex(get_theme("light").text)


def test_unet_from_layers_validates_on_held_out_slices(open_widget, qtbot, tmp_path):
    _, widget = open_widget(slices=10)
    widget.kind.setCurrentText(KINDS[0])
    widget.steps.setValue(50)  # one epoch, ending with a validation on the held-out slab
    widget.batch.setValue(2)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)  # a bound, not a timing
    assert isinstance(widget.last_event, TrainingFinished) and not widget.last_event.stopped
    assert "validation slices 4-5" in widget.split_note
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert training["val_subjects"] == ["ct [validation slices 4-5]"]  # the best checkpoint
    assert training["best_validation_mean_dice"] is not None
    assert training["train_subjects"] == ["ct [train slices 0-3]", "ct [train slices 6-9]"]
    assert tmp_path / "run" in REGISTRY.segmentation  # the explorer can offer it at once
    offered = [widget.seg_path.itemText(i) for i in range(widget.seg_path.count())]
    assert str(tmp_path / "run") in offered  # and so does "Model to attack"


def test_a_trained_attacker_joins_the_registry(
    open_widget, qtbot, tmp_path, trained_seg_dir, cohort, notes
):
    _, widget = open_widget(volume=cohort.subject(0))
    widget.kind.setCurrentText(KINDS[1])
    widget.steps.setValue(2)
    widget.batch.setValue(1)
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    changes = []

    def record(event):
        changes.append(event)

    REGISTRY.events.changed.connect(record)
    try:
        widget.start()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)
    finally:
        REGISTRY.events.changed.disconnect(record)
    assert not notes["error"], notes["error"]
    assert isinstance(widget.last_event, TrainingFinished) and not widget.last_event.stopped
    assert tmp_path / "run" in REGISTRY.attackers
    assert [(e.kind, e.folder) for e in changes] == [("attacker", tmp_path / "run")]
    assert "attacking unet" in widget.split_note
    qtbot.waitUntil(lambda: widget.plot.idle, timeout=30000)
    names = [name for name, _ in widget.plot.figure.panel_terms()]
    assert names == ["attack", "critic", "penalties", "generator"]  # no term left unplaced


def test_attacker_settings_reach_the_trainer(open_widget, qtbot, tmp_path, trained_seg_dir):
    _, widget = open_widget()
    widget.kind.setCurrentText(KINDS[1])
    widget.lambda_d.setValue(0.5)
    widget.lambda_v.setValue(0.02)
    widget.latent_d.setValue(3)
    widget.latent_v.setValue(5)
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    trainer = widget.make_trainer()
    assert isinstance(trainer, AttackTrainer)
    assert (trainer.config.lambda_d, trainer.config.lambda_v) == (0.5, 0.02)
    assert (trainer.attacker_config.latent_dim_d, trainer.attacker_config.latent_dim_v) == (3, 5)
    assert trainer.seg_model.name == trained_seg_dir.name != "unet_default"


def test_a_checkpoint_in_the_way_is_refused_as_a_notification(
    open_widget, qtbot, tmp_path, trained_seg_dir, notes
):
    _, widget = open_widget()
    widget.out.setText(str(trained_seg_dir))  # holds a checkpoint
    weights = (trained_seg_dir / "weights.safetensors").read_bytes()
    widget.kind.setCurrentText(KINDS[0])
    widget.steps.setValue(2)
    widget.batch.setValue(1)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert len(notes["error"]) == 1
    message = notes["error"][0]
    assert "already holds a checkpoint" in message and str(trained_seg_dir) in message
    assert "Resume" in message and "Overwrite" in message and "--" not in message
    assert widget.last_event is None and widget.trainer is None  # nothing started
    assert (trained_seg_dir / "weights.safetensors").read_bytes() == weights
    assert widget.start_button.isEnabled()
    widget.resume.setChecked(True)
    widget.overwrite.setChecked(True)  # the two are exclusive
    assert not widget.resume.isChecked()
    request = widget.request()
    assert request.overwrite and not request.resume
    widget.resume.setChecked(True)
    request = widget.request()
    assert request.resume and not request.overwrite


def test_a_non_finite_stop_is_shown_with_its_reason(open_widget, tmp_path, notes):
    _, widget = open_widget()
    reason = "losses became non-finite at step 12 (xi); kept the checkpoint of step 10"
    widget.on_event(TrainingFinished(12, True, None, None, {}, reason))
    assert reason in widget.status.text()
    assert len(notes["warning"]) == 1 and reason in notes["warning"][0]
    assert not notes["info"]


def test_bad_inputs_become_notifications(open_widget, qtbot, tmp_path, notes):
    viewer, widget = open_widget()
    widget.labels_box.setCurrentText("")
    widget.kind.setCurrentText(KINDS[0])
    widget.start()  # a U-Net needs labels
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="photo")
    widget.image_box.setCurrentText("photo")
    widget.start()
    messages = notes["error"]
    assert len(messages) == 2 and "no label volume" in messages[0]
    assert "not a 3D grey-level" in messages[1]
    assert widget.worker is None


DATASET_LABELS = {"background": 0, "liver": 1, "spleen": 2, "pancreas": 3, "kidney": 4}
"""A dataset numbering its organs otherwise than the model (1 pancreas, 2 kidneys, 3 liver,
4 spleen), and naming one in the singular."""


def nnunet_dataset(root, cases=("case_a", "case_b", "case_c", "case_d")):
    """A tiny nnU-Net v2 raw dataset: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    for seed, case in enumerate(cases):
        volume = blob_volume(shape=(3, 40, 40), seed=seed)
        image = np.transpose(volume.image, (2, 1, 0)).astype(np.int16)  # (x, y, z) in the file
        labels = np.transpose(volume.labels, (2, 1, 0)).astype(np.uint8)  # 1..4 as DATASET_LABELS
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "name": "tiny",
        "channel_names": {"0": "CT"},
        "labels": DATASET_LABELS,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def add_scan(viewer, widget, name, labels=True, seed=1):
    volume = blob_volume(shape=(3, 40, 40), seed=seed)
    viewer.add_image(volume.image, name=name, scale=volume.spacing)
    widget.image_box.setCurrentText(name)
    widget.labels_box.setCurrentText("")
    if labels:
        viewer.add_labels(volume.labels, name=f"{name} labels", scale=volume.spacing)
        widget.labels_box.setCurrentText(f"{name} labels")
    widget.add_scan()
    return volume


def test_an_attacker_from_several_layers(open_widget, trained_seg_dir, notes):
    viewer, widget = open_widget(slices=3)
    widget.kind.setCurrentText(KINDS[1])
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("ct labels")
    widget.add_scan()
    second = add_scan(viewer, widget, "ct2", labels=False)
    assert widget.listed_scans() == [("ct", "ct labels"), ("ct2", "")]
    request = widget.request()
    assert isinstance(request, AttackRequest) and request.dataset is None
    assert [scan.name for scan in request.scans] == ["ct", "ct2"]
    assert request.scans[0].labels is not None and request.scans[1].labels is None
    np.testing.assert_array_equal(request.scans[1].image.image, second.image)
    trainer = build_trainer(request).trainer
    assert [volume.name for volume in trainer.volumes] == ["ct", "ct2"]
    assert trainer.volumes[0].label_map == trainer.seg_model.spec.label_map

    shipped = models_dir() / "attacker_dv_xi2"
    widget.init_from.setText(str(shipped))  # train-attack --init: the attacker's architecture
    trainer = widget.make_trainer()
    assert trainer.init_weights is not None and "starting from attacker_dv_xi2" in widget.split_note
    widget.resume.setChecked(True)
    widget.start()  # a new run from an attacker, or Resume: not both
    assert len(notes["error"]) == 1 and "Start from attacker" in notes["error"][0]
    assert widget.worker is None

    viewer.layers.remove("ct2")  # a removed layer leaves the list
    assert widget.listed_scans() == [("ct", "ct labels")]
    viewer.layers.remove("ct labels")
    assert widget.listed_scans() == [("ct", "")]


def test_a_unet_on_three_layers_validates_on_a_whole_scan(open_widget, tmp_path):
    viewer, widget = open_widget(slices=3)
    widget.kind.setCurrentText(KINDS[0])
    for seed, name in enumerate(("a", "b", "c")):
        add_scan(viewer, widget, name, seed=seed)
    request = widget.request()
    assert isinstance(request, SegRequest) and len(request.scans) == 3
    ready = build_trainer(request)
    trainer = ready.trainer
    assert len(trainer.train_volumes) == 1 and len(trainer.val_volumes) == 1
    names = {v.name for v in trainer.train_volumes} | {v.name for v in trainer.val_volumes}
    assert names < {"a", "b", "c"}  # whole scans, one kept out for testing
    assert "1 test scans kept out" in ready.note
    add_scan(viewer, widget, "no labels", labels=False)
    with pytest.raises(Exception, match="no labels: no label volume"):
        widget.request()


def test_an_attacker_and_a_unet_from_a_dataset_folder(open_widget, tmp_path, trained_seg_dir):
    root = nnunet_dataset(tmp_path / "Dataset042_Tiny")
    _, widget = open_widget(slices=3)
    widget.kind.setCurrentText(KINDS[1])
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    widget.dataset.setText(str(root))
    request = widget.request()
    assert isinstance(request, AttackRequest)
    assert request.dataset == root and request.scans == ()  # read in the worker, not here
    split = {
        key: [case.name for case in cases]
        for key, cases in split_cases(read_dataset_folder(root).training).items()
    }
    assert [len(split[key]) for key in ("train", "val", "test")] == [2, 1, 1]
    ready = build_trainer(request)
    volumes = ready.trainer.volumes
    assert [v.name for v in volumes] == split["train"]  # the training split only
    assert "2 training cases of tiny" in ready.note
    source = blob_volume(shape=(3, 40, 40), seed="abcd".index(volumes[0].name[-1]))
    model = DEFAULT_LABEL_MAP
    for value, name in ((1, "liver"), (2, "spleen"), (3, "pancreas"), (4, "kidneys")):
        channel = model.by_name(name).id  # the dataset's value -> the model's channel
        assert np.count_nonzero(volumes[0].labels == channel) == np.count_nonzero(
            source.labels == value
        )

    widget.kind.setCurrentText(KINDS[0])
    request = widget.request()
    assert isinstance(request, SegRequest) and request.dataset == root and request.spec is None
    ready = build_trainer(request)
    trainer = ready.trainer
    assert trainer.spec.label_map.names == ["liver", "spleen", "pancreas", "kidney"]
    assert [v.name for v in trainer.train_volumes] == split["train"]
    assert [v.name for v in trainer.val_volumes] == split["val"]  # a whole case validates
    assert "1 cases kept out for testing" in ready.note

    widget.dataset.setText(str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="no such dataset folder"):
        widget.request()


def test_the_spec_reaches_the_request_and_a_contradiction_is_one_line(
    open_widget, qtbot, tmp_path, trained_seg_dir, notes
):
    _, widget = open_widget()
    widget.kind.setCurrentText(KINDS[1])
    editor = widget.spec_editor
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    shown = editor.spec()  # the checkpoint's own spec, shown and not given
    assert editor.given() is None and widget.request().spec is None
    widget.seg_path.setCurrentText(str(tmp_path / "model.pt"))
    finer = dataclasses.replace(shown, pixel_spacing=(1.5, 1.5))
    editor.file.setText(str(save_spec_file(tmp_path / "spec.json", finer)))
    request = widget.request()
    assert request.spec == finer and request.seg_path == tmp_path / "model.pt"

    widget.seg_path.setCurrentText(str(trained_seg_dir))
    assert editor.given() == finer  # what the user gave stays until Use this spec is unticked
    editor.use_box.setChecked(False)
    assert editor.spec() == shown and editor.given() is None
    editor.spacing_rows.setText("1.5")  # an edit that contradicts the checkpoint
    widget.steps.setValue(1)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert len(notes["error"]) == 1
    message = notes["error"][0]
    assert "carries its own model spec" in message and "pixel spacing" in message
    assert widget.status.text() == message and "\n" not in message
    assert widget.trainer is None
