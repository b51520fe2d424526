import numpy as np
import pytest

from napari_advseg.data.normalization import Normalization
from napari_advseg.errors import InvalidInputError


def test_zero_mean_unit_std_per_subject():
    rng = np.random.default_rng(0)
    image = rng.normal(40, 300, (4, 16, 16)).astype(np.float32)
    normalized, stats = Normalization(clip_hu=None).apply(image)
    assert abs(float(normalized.mean())) < 1e-4
    assert float(normalized.std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(stats.denormalize(normalized), image, atol=1e-2)


def test_clip_bounds_outliers():
    image = np.zeros((2, 8, 8), np.float32)
    image[0, 0, 0] = 3000.0  # metal
    image[1] = -1000.0
    clipped, _ = Normalization((-1000.0, 1000.0)).apply(image)
    unclipped, _ = Normalization(None).apply(image)
    assert clipped.max() < unclipped.max()
    high = image.copy()
    high[0, 0, 0] = 1000.0
    np.testing.assert_allclose(clipped, Normalization((-1000.0, 1000.0)).apply(high)[0])


def test_given_stats_are_used():
    norm = Normalization()
    stats = norm.stats(np.array([[[0.0, 100.0]]]))
    out, same = norm.apply(np.array([[[50.0]]]), stats)
    assert same is stats
    assert out.item() == pytest.approx(0.0)


def test_constant_image_is_refused():
    with pytest.raises(InvalidInputError, match="constant"):
        Normalization().apply(np.full((2, 4, 4), 20.0))


def test_config_round_trip_and_validation():
    for norm in (Normalization(), Normalization(None), Normalization((-200.0, 300.0))):
        assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(InvalidInputError):
        Normalization((5.0, -5.0))
    with pytest.raises(InvalidInputError, match="Unknown normalisation"):
        Normalization.from_dict({"method": "minmax"})


def test_window_maps_its_ends_onto_the_output_range_and_clips_outside():
    norm = Normalization((-175.0, 250.0), "window", (0.0, 1.0))
    image = np.array([[[-1000.0, -175.0, 37.5, 250.0, 3000.0]]], np.float32)
    normalized, stats = norm.apply(image)
    np.testing.assert_allclose(normalized[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        stats.denormalize(normalized)[0, 0, 1:4], image[0, 0, 1:4], atol=1e-3
    )
    other = norm.apply(image + 100.0)[1]
    assert other == stats  # a window does not depend on the subject


def test_dataset_statistics_are_the_same_for_every_subject():
    norm = Normalization((-1000.0, 1000.0), "dataset", mean=50.0, std=200.0)
    image = np.full((1, 2, 2), 450.0, np.float32)
    normalized, stats = norm.apply(image)
    np.testing.assert_allclose(normalized, 2.0)
    assert (stats.mean, stats.std) == (50.0, 200.0)
    np.testing.assert_allclose(norm.apply(image * 0 + 2000.0)[0], (1000.0 - 50.0) / 200.0)


@pytest.mark.parametrize(
    "norm",
    [
        Normalization(),
        Normalization(None),
        Normalization((-175.0, 250.0), "window", (-1.0, 1.0)),
        Normalization((-1024.0, 276.0), "dataset", mean=-12.5, std=310.0),
    ],
)
def test_every_kind_round_trips_through_its_config(norm):
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_version_1_configs_and_hand_written_specs_load():
    v1 = {"method": "zscore_per_subject", "clip_hu": [-1000, 1000]}
    assert Normalization.from_dict(v1) == Normalization()
    assert Normalization().to_dict() == v1  # the shipped models' configs stay as they are
    window = {"kind": "window", "window_hu": [-175, 250], "output_range": [0, 1]}
    assert Normalization.from_dict(window) == Normalization((-175.0, 250.0), "window")
    dataset = {"kind": "dataset", "clip_hu": [-1000, 300], "mean": 40, "std": 250}
    assert Normalization.from_dict(dataset).stats(np.zeros((1, 2, 2))).std == 250.0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "sigmoid"}, "Unknown normalisation"),
        ({"kind": "window"}, "needs its HU window"),
        ({"kind": "window", "window_hu": [250, -175]}, "low < high"),
        ({"kind": "window", "window_hu": [-175, 250], "output_range": [1]}, "two numbers"),
        ({"kind": "dataset", "mean": 40}, "needs the dataset's mean and std"),
        ({"kind": "dataset", "mean": 40, "std": 0}, "must be > 0"),
        ({"kind": "dataset", "mean": float("nan"), "std": 1}, "finite"),
        ({"kind": "zscore", "clip_hu": [0, float("inf")]}, "finite"),
    ],
)
def test_bad_normalisations_are_one_clear_error(data, match):
    with pytest.raises(InvalidInputError, match=match):
        Normalization.from_dict(data)


def test_a_checkpoint_keeps_its_window_normalisation(tmp_path):
    from napari_advseg.nets.unet import UNet, UNetConfig
    from napari_advseg.segmentation import load_unet, save_unet
    from napari_advseg.training.seg_trainer import make_spec

    config = UNetConfig(base_channels=4, depth=3)
    spec = make_spec(config, normalization=Normalization((-175.0, 250.0), "window"))
    save_unet(tmp_path / "m", UNet(config), spec)
    assert load_unet(tmp_path / "m")[0].spec.normalization == spec.normalization
