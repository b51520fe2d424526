"""Comparing two models on the same attack (issue 12): the backend and the explorer widget.

Tiny random networks and a tiny attacker whose decoders are given random heads (a new attacker
decodes D = 0 and V = 0 exactly), so every attack moves and changes the scan; the tests assert
on identities, shapes and exact equalities, never on how well a network segments.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from napari_advseg.data.normalization import Normalization
from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.explorer import ExplorerSession
from napari_advseg.explorer_compare import ComparedModel, displacement_to_model
from napari_advseg.inference import to_model_grid
from napari_advseg.labels import label_map_from_names
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.segmentation import SegmentationModel
from napari_advseg.training.attacker_io import LoadedAttacker

from .conftest import blob_volume

TINY_ATTACKER = AttackerConfig(3, 2, base_channels=4, depth=3, output_stride=2)
WINDOW = Normalization((-200.0, 300.0), "window")
INDEX = 1


def moving_attacker() -> Attacker:
    """A tiny attacker whose decoders' heads are random: D and V are not zero."""
    torch.manual_seed(0)
    attacker = Attacker(TINY_ATTACKER).eval()
    for decoder in (attacker.decoder_d, attacker.decoder_v):
        torch.nn.init.normal_(decoder.head.weight, std=0.3)
    return attacker


def make_session(tiny_unet, volume: Volume) -> ExplorerSession:
    network, spec = tiny_unet
    seg = SegmentationModel(network, spec, "original")
    loaded = LoadedAttacker(moving_attacker(), {"attack": {"xi": 2.0}}, "moving")
    return ExplorerSession(seg, loaded, volume)


def other_model(tiny_unet, name: str, **changes) -> SegmentationModel:
    """A separate copy of the tiny network, its spec changed by ``changes``."""
    network, spec = tiny_unet
    return SegmentationModel(copy.deepcopy(network), dataclasses.replace(spec, **changes), name)


def latents(session: ExplorerSession) -> tuple[np.ndarray, np.ndarray]:
    z_d, z_v = session.posterior_mean(INDEX)
    return z_d + 2.0, z_v - 2.0


@pytest.mark.parametrize("with_labels", [True, False], ids=["ground truth", "S0"])
def test_the_same_model_twice_gives_identical_s_dv_and_dice_rows(tiny_unet, with_labels):
    volume = blob_volume(shape=(3, 40, 48))
    if not with_labels:
        volume = Volume(volume.image, volume.spacing, name="no labels")
    session = make_session(tiny_unet, volume)
    twin = ComparedModel(other_model(tiny_unet, "twin"), session)
    assert twin.same_grid and twin.name == "twin"
    result = session.attack_slice(INDEX, *latents(session), compare=twin)
    assert np.abs(result.displacement_mm).max() > 0 and np.abs(result.intensity_hu).max() > 0
    compared = result.compare
    assert compared is not None and compared.name == "twin"
    np.testing.assert_array_equal(compared.s0, result.s0)
    np.testing.assert_array_equal(compared.s_dv, result.s_dv)
    assert compared.metrics == result.metrics  # every Dice row, the reference, p and p_HU
    assert compared.metrics.reference == ("ground truth" if with_labels else "S0")
    assert compared.metrics.decrease() == result.metrics.decrease()
    again = session.attack_slice(INDEX, *latents(session), compare=twin)
    assert again.compare.s0 is compared.s0  # S0 is cached per slice, like f_seg's
    assert session.attack_slice(INDEX, *latents(session)).compare is None  # no second model


@pytest.mark.parametrize(
    "changes",
    [
        {"pixel_spacing": (1.5, 2.0)},
        {"pixel_spacing": (2.0, 2.0), "orientation": "ras", "normalization": WINDOW},
    ],
    ids=["spacing", "spacing, layout and window"],
)
def test_a_model_fed_otherwise_gets_the_attacked_scan_on_its_own_grid(tiny_unet, changes):
    volume = blob_volume(shape=(3, 40, 48))
    session = make_session(tiny_unet, volume)
    model = other_model(tiny_unet, "fine", **changes)
    compared_model = ComparedModel(model, session)
    assert not compared_model.same_grid
    grid = to_model_grid(volume, model.spec)
    assert compared_model.slices.model_shape == grid.model_shape != session.slices.model_shape
    result = session.attack_slice(INDEX, *latents(session), compare=compared_model)
    compared = result.compare
    shape = volume.image.shape[1:]
    assert compared.s0.shape == compared.s_dv.shape == result.s_dv.shape == shape
    assert compared.s0.dtype == compared.s_dv.dtype == np.uint8
    assert set(compared.metrics.dice_dv_warped) == {"liver", "kidneys", "spleen", "pancreas"}
    assert compared.metrics.reference == "ground truth"
    assert compared.metrics.p_hu_fov == result.metrics.p_hu_fov  # the same I_DV on the scan
    # Its input is the displayed I_DV (HU, scan grid) brought to its grid as for any scan:
    # with the scan's statistics, so the untouched scan slice gives exactly its I0.
    np.testing.assert_array_equal(
        compared_model.model_input(volume.image[INDEX]), grid.images[INDEX : INDEX + 1]
    )
    if model.spec.normalization.kind == "window":  # statistics of no scan: to_model_grid itself
        image = volume.image.copy()
        image[INDEX] = result.attacked_hu
        attacked_scan = Volume(image, volume.spacing, name="attacked")
        expected = to_model_grid(attacked_scan, model.spec).images[INDEX : INDEX + 1]
        np.testing.assert_array_equal(compared_model.model_input(result.attacked_hu), expected)
    zero = session.attack_slice(INDEX, *latents(session), False, False, compare=compared_model)
    np.testing.assert_array_equal(zero.compare.s_dv, zero.compare.s0)  # I_DV = I0: S_DV = S0
    assert zero.compare.metrics.dice_dv == zero.compare.metrics.dice_s0


def test_displacement_to_model_undoes_displacement_to_source(tiny_unet):
    volume = blob_volume(shape=(2, 40, 48))  # 3 mm pixels: the model's, so no resampling
    _, spec = tiny_unet
    for orientation in ("radiological", "ras"):
        grid = to_model_grid(volume, dataclasses.replace(spec, orientation=orientation))
        field = torch.randn(1, 2, *grid.images.shape[-2:])
        on_source = grid.displacement_to_source_mm(field)
        back = displacement_to_model(grid, on_source)
        torch.testing.assert_close(back, grid.crop(field))


def test_a_model_of_other_organs_is_refused(tiny_unet):
    session = make_session(tiny_unet, blob_volume(shape=(2, 40, 48)))
    organs = label_map_from_names({"1": "liver", "2": "spleen", "3": "kidneys", "4": "pancreas"})
    model = other_model(tiny_unet, "reordered", label_map=organs)
    with pytest.raises(InvalidInputError, match="compare models of the same organs"):
        ComparedModel(model, session)
    other = make_session(tiny_unet, blob_volume(shape=(2, 40, 48)))
    twin = ComparedModel(other_model(tiny_unet, "twin"), other)
    with pytest.raises(InvalidInputError, match="another scan"):
        session.attack_slice(0, *session.posterior_mean(0), compare=twin)


# -- the explorer widget ------------------------------------------------------------------------
WAIT_MS = 60_000
SLICE = 1


@pytest.fixture
def tiny_models(tmp_path, tiny_unet):
    """Folders of the tiny U-Net ("original"), a copy fed at 1.5 mm ("fine") and its attacker."""
    from napari_advseg.segmentation import load_unet, save_unet
    from napari_advseg.training.attack_trainer import AttackTrainingConfig
    from napari_advseg.training.attacker_io import save_attacker

    network, spec = tiny_unet
    original = save_unet(tmp_path / "original", network, spec)
    fine_spec = dataclasses.replace(spec, pixel_spacing=(1.5, 1.5))
    fine = save_unet(tmp_path / "fine", network, fine_spec)
    target = load_unet(original)[0]
    config = AttackTrainingConfig(xi=1.5)
    attacker = save_attacker(tmp_path / "att", moving_attacker(), target, config, {"step": 1})
    return original, fine, attacker


@pytest.fixture
def compare_explorer(make_napari_viewer, qtbot, monkeypatch, tiny_models):
    from napari_advseg._napari import explorer_widget
    from napari_advseg._napari.model_registry import REGISTRY

    errors: list[str] = []
    monkeypatch.setattr(explorer_widget, "show_error", errors.append)
    monkeypatch.setattr(REGISTRY, "attackers", [])
    monkeypatch.setattr(REGISTRY, "segmentation", [])
    original, _, attacker = tiny_models
    viewer = make_napari_viewer()
    volume = blob_volume(shape=(3, 40, 48))
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    viewer.add_labels(volume.labels, name="ct labels", scale=volume.spacing)
    _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Adversarial explorer")
    widget.image_box.setCurrentText("ct")
    widget.labels_box.setCurrentText("ct labels")
    widget.seg_path.setText(str(original))
    widget.attacker_path.setText(str(attacker))
    viewer.dims.set_current_step(0, SLICE)
    yield viewer, widget, errors
    widget.cancel()
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)


def wait_loaded(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.session is not None and widget.is_idle(), timeout=WAIT_MS)


def layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def dice_rows(widget) -> int:
    """Rows of the metrics table, its header left out."""
    return widget.metrics.text().count("<tr>") - 1


def test_a_compare_model_adds_two_layers_and_a_row_of_dice_per_organ(
    compare_explorer, qtbot, tiny_models
):
    viewer, widget, errors = compare_explorer
    original, fine, _ = tiny_models
    widget.compare_path.setText(str(fine))
    assert widget.state.compare_model == str(fine)
    assert widget.apply_compare() is None  # nothing loaded yet: Start loads it
    assert widget.start() is not None
    wait_loaded(qtbot, widget)
    assert widget.compare is not None and not widget.compare.model.same_grid
    compared = widget.output.compared
    assert [compared[key].name for key in ("S0", "S_DV")] == ["ct S0 [fine]", "ct S_DV [fine]"]
    assert {"ct S0 [fine]", "ct S_DV [fine]"} <= set(layer_names(viewer))
    source = viewer.layers["ct"]
    for layer in compared.values():
        assert layer.data.shape == source.data.shape
        np.testing.assert_allclose(layer.scale, source.scale)
    state = widget.state
    expected = widget.session.attack_slice(
        SLICE, np.array(state.z_d), np.array(state.z_v), compare=widget.compare.model
    ).compare
    np.testing.assert_array_equal(compared["S_DV"].data[SLICE], expected.s_dv)
    np.testing.assert_array_equal(compared["S0"].data[SLICE], expected.s0)
    assert widget.last_result.compare.metrics == expected.metrics
    text = widget.metrics.text()
    assert dice_rows(widget) == 2 * 4 and "<td>original</td>" in text and "<td>fine</td>" in text
    assert text.index("<td>original</td>") < text.index("<td>fine</td>")  # the first model first
    assert "compared with fine" in widget.status.text()

    widget.compare_path.setText("")  # clearing it removes its layers and its rows
    widget.compare_path.editingFinished.emit()
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    assert widget.compare is None and widget.output.compared == {}
    assert not any("[fine]" in name for name in layer_names(viewer))
    assert dice_rows(widget) == 4 and "<td>fine</td>" not in widget.metrics.text()
    assert widget.last_result.compare is None

    widget.compare_path.setText(str(original))  # chosen after Start: loaded on its own
    worker = widget.apply_compare()
    assert worker is not None and widget.state.job == "loading the model to compare with"
    qtbot.waitUntil(lambda: widget.compare is not None and widget.is_idle(), timeout=WAIT_MS)
    assert widget.compare.model.same_grid
    assert widget.output.compared["S_DV"].name == "ct S_DV [original]"
    assert widget.apply_compare() is None  # the same model again: nothing to do
    widget.sliders[0].setValue(250)
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    # the same model on the same I_DV: its S_DV layer is the first model's, its rows the same
    np.testing.assert_array_equal(
        widget.output.compared["S_DV"].data[SLICE], widget.layers["S_DV"].data[SLICE]
    )
    assert widget.last_result.compare.metrics == widget.last_result.metrics
    widget.attack_volume()  # All slices fills both models' layers
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    np.testing.assert_array_equal(widget.output.compared["S_DV"].data, widget.layers["S_DV"].data)
    assert errors == []


def test_a_broken_compare_model_is_one_line_and_leaves_no_layers(compare_explorer, qtbot, tmp_path):
    from napari_advseg._napari.model_registry import REGISTRY
    from napari_advseg.segmentation import default_model_path

    viewer, widget, errors = compare_explorer
    assert widget.compare_box.findText(str(default_model_path())) >= 0
    REGISTRY.add(tmp_path / "hardened", "segmentation")  # trained in this session: offered
    assert widget.compare_box.findText(str(tmp_path / "hardened")) >= 0
    assert widget.compare_path.text() == "" and widget.state.compare_model == ""
    widget.compare_path.setText(str(tmp_path / "no_such_model"))
    widget.start()
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    assert widget.session is None and len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("Loading models failed: Compare with: ")
    widget.compare_path.setText("")
    widget.start()
    wait_loaded(qtbot, widget)
    assert widget.compare is None and widget.output.compared == {} and dice_rows(widget) == 4
    widget.compare_path.setText(str(tmp_path / "no_such_model"))
    widget.apply_compare()
    qtbot.waitUntil(widget.is_idle, timeout=WAIT_MS)
    assert errors[-1].startswith("Loading the model to compare with failed: ")
    assert "no_such_model: no such model" in errors[-1]
    assert widget.status.text() == errors[-1] and widget.compare is None
    assert not any("[" in name for name in layer_names(viewer))
    assert widget.sliders[0].isEnabled()  # the explorer goes on with its own model
