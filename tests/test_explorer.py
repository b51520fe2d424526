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


def straightforward(session, index, z_d, z_v, use_d=True, use_v=True):
    """The attack of one slice without the session's shortcuts: decode, warp, segment, resample."""
    import torch

    from napari_advseg.attack import to_source_grid
    from napari_advseg.class_map import class_map
    from napari_advseg.evaluation.attack_eval import SliceBatch
    from napari_advseg.nets.warp import warp

    attacker, seg, grid = session.loaded.attacker, session.seg_model, session.slices
    with torch.no_grad():
        image = grid.images[index : index + 1]
        output = attacker.decode(
            attacker.encode(image), image, torch.tensor(z_d)[None], torch.tensor(z_v)[None]
        )
        displacement = output.displacement if use_d else torch.zeros_like(output.displacement)
        intensity = output.intensity if use_v else torch.zeros_like(output.intensity)
        attacked = warp(image, displacement) + intensity
        p0 = torch.softmax(seg(image), dim=1)
        pdv = torch.softmax(seg(attacked), dim=1)
    crop = grid.crop
    batch = SliceBatch(
        *(crop(t) for t in (image, displacement, intensity, attacked)),
        class_map(crop(p0)),
        class_map(crop(pdv)),
        crop(p0),
        crop(pdv),
    )
    volume = session.volume
    image = volume.image[index : index + 1]
    source = to_source_grid(batch, grid, image, (volume.spacing[1], volume.spacing[2]))
    return {k: v[0] for k, v in source.items()}


@pytest.mark.parametrize("use_d, use_v", [(True, True), (True, False), (False, True)])
def test_the_fast_slice_attack_equals_the_straightforward_one(session, use_d, use_v):
    index = 30
    z_d, z_v = session.posterior_mean(index)
    z_d, z_v = z_d + 0.5, z_v - 0.5
    fast = session.attack_slice(index, z_d, z_v, use_d, use_v)
    again = session.attack_slice(index, z_d, z_v, use_d, use_v)  # from the slice's cache
    slow = straightforward(session, index, z_d, z_v, use_d, use_v)
    # The session runs the networks in the channels-last layout: equal up to float rounding,
    # so a label may flip where two classes tie to the last bits (never more than a few pixels).
    for result in (fast, again):
        for key in ("s0", "s_dv"):
            assert np.mean(getattr(result, key) != slow[key]) < 2e-3
        np.testing.assert_allclose(result.displacement_mm, slow["displacement_mm"], atol=1e-3)
        np.testing.assert_allclose(result.intensity_hu, slow["intensity_hu"], atol=0.05)
        # D and V differ by float rounding only; both paths skip the warp where D is zero
        np.testing.assert_allclose(result.attacked_hu, slow["attacked_hu"], atol=0.1)
        assert result.attacked_hu.dtype == result.displacement_mm.dtype == np.float32
    np.testing.assert_array_equal(fast.s_dv, again.s_dv)  # the same path gives the same result
    np.testing.assert_array_equal(fast.attacked_hu, again.attacked_hu)
