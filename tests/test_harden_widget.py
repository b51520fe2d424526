"""The training widget's *Harden a model* mode: a worker that hardens a copy of the model,
stops within a step and resumes, registers the hardened model and its attacker; shipped models
offered in the model fields."""

import hashlib
import json

import numpy as np
import pytest

from napari_advseg._napari import model_registry
from napari_advseg._napari.model_registry import REGISTRY, shipped_models
from napari_advseg._napari.training_run import HardenRequest
from napari_advseg._napari.training_widget import KINDS, TrainingWidget
from napari_advseg._resources import models_dir
from napari_advseg.training.events import TrainingFinished, TrainingStarted
from napari_advseg.training.harden_trainer import HardenTrainer

HARDEN = KINDS[2]


@pytest.fixture
def registry(monkeypatch):
    """An empty session registry, and the changes announced on it."""
    monkeypatch.setattr(REGISTRY, "attackers", [])
    monkeypatch.setattr(REGISTRY, "segmentation", [])
    changes = []

    def record(event):
        changes.append((event.kind, event.folder))

    REGISTRY.events.changed.connect(record)
    yield changes
    REGISTRY.events.changed.disconnect(record)


@pytest.fixture
def notes(monkeypatch):
    """The widget's notifications, by kind, instead of napari's pop-ups."""
    seen = {"error": [], "warning": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(f"napari_advseg._napari.training_widget.show_{kind}", seen[kind].append)
    return seen


@pytest.fixture
def harden_widget(make_napari_viewer, qtbot, tmp_path, cohort, trained_seg_dir):
    """A viewer with a labelled phantom subject and the widget in Harden mode with tiny
    settings; a run still going at the end is stopped and awaited before the viewer closes."""
    viewer = make_napari_viewer()
    volume = cohort.subject(0)
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    viewer.add_labels(volume.labels, name="ct labels", scale=volume.spacing)
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
    assert isinstance(widget, TrainingWidget)
    widget.kind.setCurrentText(HARDEN)
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("ct labels")
    widget.seg_path.setCurrentText(str(trained_seg_dir))
    widget.device.setCurrentText("cpu")
    widget.out.setText(str(tmp_path / "hardened"))
    widget.steps.setValue(2)
    widget.batch.setValue(2)
    widget.latent_d.setValue(4)
    widget.latent_v.setValue(4)
    form = widget.harden_form
    form.patch_size.setValue(32)
    form.attack_batch.setValue(2)
    yield widget
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)


def file_bytes(folder):
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_harden_mode_shows_its_settings_and_they_reach_the_trainer(
    harden_widget, trained_seg_dir, tmp_path
):
    widget = harden_widget
    assert not widget.harden_form.isHidden()
    assert widget._model_label.text() == "Model to harden"
    form = widget.harden_form
    form.attacked_fraction.setValue(0.25)
    form.attacker_every.setValue(3)
    form.warmup.setValue(4)
    form.learning_rate.setValue(3e-5)
    widget.xi.setValue(1.5)
    request = widget.request()
    assert isinstance(request, HardenRequest) and request.seg_path == trained_seg_dir
    config = request.config
    assert (config.steps, config.batch_size, config.patch_size) == (2, 2, 32)
    assert (config.attacked_fraction, config.attacker_every, config.warmup_steps) == (0.25, 3, 4)
    assert config.learning_rate == pytest.approx(3e-5) and config.device == "cpu"
    attack = request.attack
    assert (attack.xi, attack.crop_size, attack.batch_size) == (1.5, 32, 2)
    assert attack.steps == config.attacker_steps() == 5  # 4 warm-up, then 1 before 2 steps
    trainer = widget.make_trainer()
    assert isinstance(trainer, HardenTrainer)
    assert trainer.base.name == trained_seg_dir.name and trainer.val_volumes
    assert widget.split_note.startswith(f"hardening {trained_seg_dir.name}; validation: ct")

    widget.kind.setCurrentText(KINDS[1])
    assert widget.harden_form.isHidden()
    assert widget._model_label.text() == "Model to attack"


def test_harden_runs_in_the_worker_and_registers_the_model_and_its_attacker(
    harden_widget, qtbot, trained_seg_dir, tmp_path, registry, notes
):
    widget = harden_widget
    before = file_bytes(trained_seg_dir)
    widget.start()
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)  # a bound, not a timing
    assert not notes["error"], notes["error"]
    assert isinstance(widget.last_event, TrainingFinished) and not widget.last_event.stopped
    out = tmp_path / "hardened"
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "segmentation/unet" and config["training"]["hardened"]
    assert (out / "attacker" / "config.json").is_file()
    assert (out / "MODEL_CARD.md").is_file()
    assert file_bytes(trained_seg_dir) == before  # the model it started from is untouched
    assert registry == [("segmentation", out), ("attacker", out / "attacker")]
    assert out in REGISTRY.segmentation and out / "attacker" in REGISTRY.attackers
    offered = [widget.seg_path.itemText(i) for i in range(widget.seg_path.count())]
    assert str(out) in offered  # "Model to harden" offers it too
    assert str(out / "attacker") in widget.attacker_choices.stringList()
    assert f"hardened model: {out}" in widget.status.text()
    assert len(widget.plot.history("seg_cross_entropy")) == 2
    qtbot.waitUntil(lambda: widget.plot.idle, timeout=30000)
    names = [name for name, _ in widget.plot.figure.panel_terms()]
    assert names == ["f_seg", "attack", "critic"]  # no term left on an "other" panel
    assert widget.start_button.isEnabled()


def test_stop_saves_a_checkpoint_and_resume_continues(
    harden_widget, qtbot, tmp_path, registry, notes
):
    widget = harden_widget
    widget.steps.setValue(10_000)
    widget.start()
    qtbot.waitUntil(lambda: len(widget.plot.history("seg_cross_entropy")) >= 1, timeout=600000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)
    assert not notes["error"], notes["error"]
    finished = widget.last_event
    assert isinstance(finished, TrainingFinished) and finished.stopped
    out = tmp_path / "hardened"
    assert 1 <= finished.step < 10_000
    assert (out / "last" / "weights.safetensors").is_file()
    assert ("segmentation", out) in registry  # a stopped run's model is offered too

    started = []
    on_event = widget.on_event
    widget.on_event = lambda event: (started.append(event), on_event(event))  # before start()
    widget.steps.setValue(finished.step + 1)
    widget.resume.setChecked(True)
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600000)
    assert not notes["error"], notes["error"]
    first = next(event for event in started if isinstance(event, TrainingStarted))
    assert first.start_step == finished.step
    assert isinstance(widget.last_event, TrainingFinished) and not widget.last_event.stopped
    assert widget.last_event.step == finished.step + 1
    assert widget.plot.history("seg_cross_entropy").size == 1  # the plot starts again
    assert widget.plot.series["seg_cross_entropy"].step_view().tolist() == [finished.step + 1]


def test_a_bad_setting_is_one_line_not_a_traceback(harden_widget, qtbot, notes, tmp_path):
    widget = harden_widget
    widget.harden_form.patch_size.setValue(100)  # not a multiple of the attacker's stride
    widget.start()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert len(notes["error"]) == 1
    message = notes["error"][0]
    assert "Patch size 100 must be a multiple of" in message and "\n" not in message
    assert widget.status.text() == message and widget.trainer is None
    assert not (tmp_path / "hardened").exists()

    widget.harden_form.patch_size.setValue(32)
    widget.labels_box.setCurrentText("")  # hardening needs labels
    widget.start()
    assert len(notes["error"]) == 2 and "choose its labels layer to harden" in notes["error"][1]
    assert widget.worker is None


def fake_model(folder, kind):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format": "napari-advseg", "kind": kind}))
    return folder


def test_every_shipped_model_is_offered(make_napari_viewer, tmp_path, monkeypatch, registry):
    shipped = tmp_path / "models"
    fake_model(shipped / "unet_default", "segmentation/unet")
    hardened = fake_model(shipped / "unet_hardened_xi2", "segmentation/unet")
    tuned = fake_model(shipped / "net_finetuned", "segmentation/finetuned")
    attacker = fake_model(shipped / "my_attacker", "attacker")
    (shipped / "notes").mkdir()  # no config: not a model
    (shipped / "broken").mkdir()
    (shipped / "broken" / "config.json").write_text("{")
    (shipped / "default_attacker.json").write_text("{}")
    monkeypatch.setattr(model_registry._resources, "models_dir", lambda: shipped)
    assert shipped_models("segmentation") == [tuned, hardened]  # the default is the empty choice
    assert shipped_models("attacker") == [attacker]
    REGISTRY.add(tmp_path / "session_unet", "segmentation")
    assert REGISTRY.choices("segmentation") == [tuned, hardened, tmp_path / "session_unet"]

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
    offered = [widget.seg_path.itemText(i) for i in range(widget.seg_path.count())]
    assert offered == ["", str(tuned), str(hardened), str(tmp_path / "session_unet")]
    assert widget.attacker_choices.stringList() == [str(attacker)]


def test_the_real_shipped_attackers_are_listed():
    listed = shipped_models("attacker")
    assert set(models_dir().glob("attacker_*")) <= set(listed)  # each has kind "attacker"
    assert all(folder.name != "unet_default" for folder in shipped_models("segmentation"))


def test_harden_on_a_dataset_folder_validates_on_its_split(harden_widget, tmp_path):
    from napari_advseg._napari.training_run import build_trainer
    from napari_advseg.data.dataset_folder import read_dataset_folder, split_cases

    from .test_training_widget import nnunet_dataset

    root = nnunet_dataset(tmp_path / "Dataset042_Tiny")
    widget = harden_widget
    widget.labels_box.setCurrentText("")  # the folder replaces the layers
    widget.dataset.setText(str(root))
    request = widget.request()
    assert isinstance(request, HardenRequest)
    assert request.dataset == root and request.scans == ()  # read in the worker, not here
    ready = build_trainer(request)
    split = split_cases(read_dataset_folder(root).training)
    trainer = ready.trainer
    assert [v.name for v in trainer.train_volumes] == [case.name for case in split["train"]]
    assert [v.name for v in trainer.val_volumes] == [case.name for case in split["val"]]
    assert "1 cases kept out for testing" in ready.note


def test_the_harden_plot_places_every_term_at_its_step():
    from napari_advseg._napari.loss_figure import HARDEN_LAYOUT, decimate

    terms = ["seg_cross_entropy", "seg_clean", "seg_attacked", "attacker_xi"]
    terms += ["attacker_masked_xent", "attacker_wasserstein", "attacker_adversarial"]
    terms += ["attacker_displacement", "attacker_intensity", "attacker_kl", "attacker_total"]
    panels = HARDEN_LAYOUT.assign(terms)
    assert [panel.name for panel in panels] == ["f_seg", "attack", "critic"]  # no "other"
    steps, values = decimate(np.array([1.0, 2.0]), steps=np.array([101.0, 103.0]))
    assert steps.tolist() == [101, 103] and values.tolist() == [1, 2]
    steps, _ = decimate(np.ones(1000), max_points=10, steps=np.arange(1000) * 2 + 100.0)
    assert len(steps) == 10 and steps[0] == np.mean(np.arange(100) * 2 + 100.0)
