"""The explorer's backend: slice attacks for chosen latents, with the shipped models."""

import numpy as np
import pytest

from napari_advseg._resources import models_dir
from napari_advseg.data.samples import load_real_case
from napari_advseg.errors import InvalidInputError
from napari_advseg.explorer import ExplorerSession
from napari_advseg.segmentation import load_segmentation_model
from napari_advseg.training.attacker_io import load_attacker


@pytest.fixture(scope="module")
def session():
    attacker = load_attacker(models_dir() / "attacker_dv_xi2")
    return ExplorerSession(load_segmentation_model(), attacker, load_real_case())


def test_slice_attack_is_on_the_source_grid(session):
    index = 25
    z_d, z_v = session.posterior_mean(index)
    assert (z_d.shape, z_v.shape) == ((8,), (8,)) and session.latent_dims == (8, 8)
    result = session.attack_slice(index, z_d, z_v)
    shape = session.volume.image.shape[1:]
    assert result.attacked_hu.shape == result.intensity_hu.shape == result.s0.shape == shape
    assert result.displacement_mm.shape == (2, *shape)
    assert result.metrics.reference == "ground truth"
    assert 0 < result.metrics.p < 1
    decrease = result.metrics.decrease()
    assert set(decrease) == {"pancreas", "kidneys", "liver", "spleen"}


def test_latents_and_toggles_change_the_attack(session):
    index = 25
    z_d, z_v = session.posterior_mean(index)
    base = session.attack_slice(index, z_d, z_v)
    moved = session.attack_slice(index, z_d, z_v + 3.0)
    assert not np.allclose(base.intensity_hu, moved.intensity_hu)
    d_only = session.attack_slice(index, z_d, z_v, use_v=False)
    v_only = session.attack_slice(index, z_d, z_v, use_d=False)
    assert float(np.abs(d_only.intensity_hu).max()) == 0.0
    assert float(np.abs(v_only.displacement_mm).max()) == 0.0
    first, again = session.sample(index, seed=4), session.sample(index, seed=4)
    assert np.array_equal(first[0], again[0])
    with pytest.raises(InvalidInputError, match="outside"):
        session.attack_slice(99, z_d, z_v)
