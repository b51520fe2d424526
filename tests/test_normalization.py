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
