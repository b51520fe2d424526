"""Faithful exports (issue 9): D and V made on f_seg's grid are applied to the scan at its own
resolution, so a zero attack returns the scan voxel for voxel and nothing is clipped to the
model's HU window; p_hu_fov measures the change in HU over the field of view."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_advseg.attack import attack_volume
from napari_advseg.data.normalization import Normalization
from napari_advseg.data.orientation import SliceLayout, slice_layout
from napari_advseg.data.phantom import PhantomConfig, generate_phantom
from napari_advseg.data.volume import Volume
from napari_advseg.evaluation.attack_eval import evaluate_attack
from napari_advseg.explorer import ExplorerSession
from napari_advseg.inference import segment_volume
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.segmentation import SegmentationModel
from napari_advseg.training.attacker_io import LoadedAttacker

SPACING = (3.0, 1.5, 2.0)
"""Scan voxels (z, y, x) in mm: rows at 1.5 mm, columns at 2 mm; the stored model is at 3 mm."""
SHAPE = (2, 42, 50)
"""42 x 50 pixels are 21 x 33 at 3 mm: padded to the model's stride of 4, so a crop is undone."""
WINDOW = Normalization((-200.0, 300.0), "window")
"""A window model: std 500 HU, and most of the test scans lie far outside it."""
ATTACKER = AttackerConfig(latent_dim_d=2, latent_dim_v=2, base_channels=4, depth=3)


class ConstantAttack:
    """D = (dx, dy) model pixels and V = v normalised units everywhere."""

    def __init__(self, dx: float = 0.0, dy: float = 0.0, v: float = 0.0) -> None:
        self.dx, self.dy, self.v = dx, dy, v
        self.name = f"constant ({dx}, {dy}) px, {v}"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = images.shape
        displacement = images.new_zeros(batch, 2, height, width)
        displacement[:, 0], displacement[:, 1] = self.dx, self.dy
        return displacement, images.new_full((batch, 1, height, width), self.v)


def model(seg_model: SegmentationModel, **changes) -> SegmentationModel:
    """The stored tiny U-Net with its spec changed (normalisation, orientation)."""
    return SegmentationModel(seg_model.network, replace(seg_model.spec, **changes), "tiny")


def noisy_scan() -> Volume:
    """Random HU over [-3000, 3000], with both extremes present: far outside any window."""
    image = np.random.default_rng(0).uniform(-3000, 3000, SHAPE).astype(np.float32)
    image[0, 0, 0], image[1, 5, 7] = -3000.0, 3000.0
    return Volume(image, SPACING, name="noisy")


def ramp(axis: str, slope: float = 100.0) -> Volume:
    """A linear ramp of ``slope`` HU per pixel along x or y, from -3000 HU, plus a small tilt."""
    _, y, x = np.indices(SHAPE, dtype=np.float32)
    along, across = (x, y) if axis == "x" else (y, x)
    return Volume(-3000.0 + slope * along + 2.0 * across, SPACING, name=f"ramp {axis}")


def p_hu(attacked: np.ndarray, image: np.ndarray) -> float:
    return float(np.mean(np.abs(attacked.astype(np.float64) - image)))


def session_for(seg: SegmentationModel, volume: Volume) -> ExplorerSession:
    """A session with a new attacker: its decoders start at zero (D = 0, V = 0 exactly)."""
    torch.manual_seed(0)
    attacker = LoadedAttacker(Attacker(ATTACKER).eval(), {"attack": {"xi": 2.0}}, "new")
    return ExplorerSession(seg, attacker, volume)


def constant_fields(monkeypatch, session: ExplorerSession, method: ConstantAttack) -> None:
    """Make the session's decoders return ``method``'s constant fields."""
    monkeypatch.setattr(session, "_fields", lambda cached, *_: method(cached.image))


@pytest.mark.parametrize("orientation", ["radiological", "ras"])
@pytest.mark.parametrize("normalization", [Normalization(), WINDOW], ids=["zscore", "window"])
def test_a_zero_attack_returns_the_scan_exactly(seg_model, orientation, normalization):
    seg = model(seg_model, orientation=orientation, normalization=normalization)
    volume = noisy_scan()
    result = attack_volume(seg, ConstantAttack(), volume)
    assert result.attacked_hu.dtype == np.float32
    assert np.array_equal(result.attacked_hu, volume.image)
    assert float(np.abs(result.displacement_mm).max()) == 0.0
    assert float(np.abs(result.intensity_hu).max()) == 0.0
    assert result.p_hu_fov == 0.0 and result.p < 1e-6  # p: f_seg's grid, warped by zero


@pytest.mark.parametrize("orientation", ["radiological", "ras"])
def test_a_zero_attack_in_the_explorer_returns_the_slice_exactly(seg_model, orientation):
    volume = noisy_scan()
    session = session_for(model(seg_model, orientation=orientation, normalization=WINDOW), volume)
    z_d, z_v = session.posterior_mean(1)
    for use_d, use_v in ((False, False), (True, True)):  # switched off, and decoded as zero
        result = session.attack_slice(1, z_d, z_v, use_d, use_v)
        assert np.array_equal(result.attacked_hu, volume.image[1])
        assert float(np.abs(result.displacement_mm).max()) == 0.0
        assert result.metrics.p_hu_fov == 0.0


def test_a_translation_along_x_moves_the_scan_by_model_millimetres(seg_model):
    seg = model(seg_model, normalization=WINDOW)
    volume = ramp("x")
    result = attack_volume(seg, ConstantAttack(dx=1.0), volume)
    # 1 model pixel = 3 mm = 1.5 scan columns at 2 mm: out(y, x) = I(y, x + 1.5) = I + 150 HU
    np.testing.assert_allclose(result.displacement_mm[0], 3.0, atol=1e-5)
    np.testing.assert_allclose(result.displacement_mm[1], 0.0, atol=1e-6)
    interior = np.s_[:, :, : SHAPE[2] - 2]
    expected = volume.image + 150.0
    np.testing.assert_allclose(result.attacked_hu[interior], expected[interior], atol=0.02)
    assert float(result.attacked_hu.max()) > 1500.0  # far above the window: not clipped
    assert result.p_hu_fov == pytest.approx(p_hu(result.attacked_hu, volume.image), rel=1e-6)
    assert 140.0 < result.p_hu_fov < 150.0  # the last columns repeat the border


def test_a_constant_v_adds_hounsfield_units_everywhere(seg_model):
    seg = model(seg_model, normalization=WINDOW)
    volume = noisy_scan()
    result = attack_volume(seg, ConstantAttack(v=0.1), volume)
    np.testing.assert_allclose(result.intensity_hu, 50.0, atol=1e-3)  # 0.1 x std 500 HU
    np.testing.assert_allclose(result.attacked_hu, volume.image + 50.0, atol=1e-3)
    assert result.attacked_hu.min() < -2900.0 and result.attacked_hu.max() > 3000.0
    assert result.p_hu_fov == pytest.approx(50.0, abs=1e-3)
    assert result.p_hu_fov == pytest.approx(p_hu(result.attacked_hu, volume.image), rel=1e-6)


def test_a_translation_along_ras_columns_moves_the_scan_toward_anterior(seg_model):
    """RAS slices: rows run from the patient's left to right, columns from posterior to anterior,
    along the canonical rows reversed. +1 px along the model's columns samples 3 mm further
    anterior: D_y = -3 mm, and out(y, x) = I(y - 2, x) at 1.5 mm rows."""
    seg = model(seg_model, orientation="ras", normalization=WINDOW)
    volume = ramp("y")
    result = attack_volume(seg, ConstantAttack(dx=1.0), volume)
    np.testing.assert_allclose(result.displacement_mm[1], -3.0, atol=1e-5)
    np.testing.assert_allclose(result.displacement_mm[0], 0.0, atol=1e-6)
    interior = np.s_[:, 2:, :]
    expected = volume.image - 200.0
    np.testing.assert_allclose(result.attacked_hu[interior], expected[interior], atol=0.02)
    assert result.p_hu_fov == pytest.approx(p_hu(result.attacked_hu, volume.image), rel=1e-6)


@pytest.mark.parametrize(
    "orientation, axis, shift_hu", [("radiological", "x", 150.0), ("ras", "y", -200.0)]
)
def test_the_explorer_applies_d_and_v_on_the_scan(
    seg_model, monkeypatch, orientation, axis, shift_hu
):
    """The same D as above (1 model px along the model's columns), and then a constant V."""
    move = ConstantAttack(dx=1.0)
    volume = ramp(axis)
    session = session_for(model(seg_model, orientation=orientation, normalization=WINDOW), volume)
    constant_fields(monkeypatch, session, move)
    result = session.attack_slice(0, *session.posterior_mean(0))
    reference = attack_volume(session.seg_model, move, volume)
    np.testing.assert_allclose(result.displacement_mm, reference.displacement_mm[:, 0], atol=1e-5)
    np.testing.assert_allclose(result.attacked_hu, reference.attacked_hu[0], atol=1e-3)
    interior = np.s_[:, : SHAPE[2] - 2] if axis == "x" else np.s_[2:, :]
    expected = volume.image[0] + shift_hu
    np.testing.assert_allclose(result.attacked_hu[interior], expected[interior], atol=0.02)
    assert result.metrics.p_hu_fov == pytest.approx(
        p_hu(result.attacked_hu, volume.image[0]), rel=1e-6
    )
    constant_fields(monkeypatch, session, ConstantAttack(v=-0.2))
    shifted = session.attack_slice(0, *session.posterior_mean(0))
    np.testing.assert_allclose(shifted.attacked_hu, volume.image[0] - 100.0, atol=1e-3)
    assert shifted.metrics.p_hu_fov == pytest.approx(100.0, abs=1e-3)


class LaidOut(torch.nn.Module):
    """A network fed slices in ``layout`` that lays them out canonically for ``network``."""

    def __init__(self, network: torch.nn.Module, layout: SliceLayout) -> None:
        super().__init__()
        self.network, self.layout = network, layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layout.apply(self.network(self.layout.invert(images)))


def phantom_slices() -> Volume:
    """Two 64 x 54 slices of the phantom the stored model was trained on: it finds organs."""
    image, labels = generate_phantom(3, PhantomConfig(shape=(12, 64, 64), spacing=(6.0,) * 3))
    crop = np.s_[5:7, :, 4:58]
    return Volume(image[crop].astype(np.float32), (6.0, 6.0, 6.0), labels=labels[crop])


def test_labels_come_back_in_the_canonical_layout(seg_model):
    """A RAS model that is the radiological one behind a change of layout gives the same S0."""
    volume = phantom_slices()
    s0 = segment_volume(seg_model, volume)
    assert np.isin([2, 3], s0).all()  # kidneys and liver found: a flip would move them
    layout = slice_layout("ras", None)
    ras = SegmentationModel(
        LaidOut(seg_model.network, layout), replace(seg_model.spec, orientation="ras"), "ras"
    )
    result = attack_volume(ras, ConstantAttack(), volume)
    assert np.mean(result.s0 != s0) < 1e-3 and np.mean(result.s_dv != s0) < 1e-3
    assert np.array_equal(result.attacked_hu, volume.image)
    session = session_for(ras, volume)
    assert np.mean(session.s0(1) != s0[1]) < 1e-3
    attack = session.attack_slice(1, *session.posterior_mean(1))
    assert np.mean(attack.s_dv != s0[1]) < 1e-3


def test_evaluation_reports_p_in_hounsfield_units(seg_model):
    seg = model(seg_model, normalization=WINDOW)
    volume = noisy_scan()
    zero = evaluate_attack(seg, ConstantAttack(), [volume]).summary()
    assert zero["p_hu_fov"] == 0.0 and zero["p"] < 1e-6
    report = evaluate_attack(seg, ConstantAttack(v=0.1), [volume])
    assert report.summary()["p_hu_fov"] == pytest.approx(50.0, abs=1e-3)
    assert report.summary()["p"] == pytest.approx(0.1, abs=1e-5)
    assert report.to_dict()["subjects"][0]["p_hu_fov"] == pytest.approx(50.0, abs=1e-3)
