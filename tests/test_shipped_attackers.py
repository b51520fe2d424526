"""The shipped attackers, as a user gets them."""

import pytest
import torch
from safetensors import safe_open

from napari_advseg._resources import models_dir
from napari_advseg.attack import attack_volume
from napari_advseg.data.samples import load_real_case
from napari_advseg.evaluation.attacks import LearnedAttack
from napari_advseg.segmentation import load_segmentation_model
from napari_advseg.training.attacker_io import load_attacker

from .shipped import shipped_attacker, shipped_attackers

SHIPPED = shipped_attackers()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_attacker_matches_its_card_and_target(name):
    folder = models_dir() / name
    loaded = load_attacker(folder)
    assert (loaded.mode, loaded.xi) == SHIPPED[name]
    assert loaded.target_mismatch(load_segmentation_model()) is None
    with safe_open(folder / "weights.safetensors", "pt") as stored:  # the file, not the loader
        keys = list(stored.keys())
    assert keys and all(key.startswith("attacker/") for key in keys), keys[:5]
    card = (folder / "MODEL_CARD.md").read_text()
    assert loaded.config["training"]["command"] in card


def test_shipped_attack_on_the_real_case():
    seg = load_segmentation_model()
    volume = load_real_case()
    results = {}
    dv, d, v = (shipped_attacker(mode) for mode in ("dv", "d", "v"))
    for name in (dv, d, v):
        result = attack_volume(seg, LearnedAttack(load_attacker(models_dir() / name)), volume)
        assert result.attacked_hu.shape == volume.image.shape
        assert result.displacement_mm.shape == (2, *volume.image.shape)
        results[name] = result
    assert float(abs(results[d].intensity_hu).max()) == 0.0
    assert float(abs(results[v].displacement_mm).max()) == 0.0
    assert results[dv].p > 0.0
    changed = (results[dv].s_dv != results[dv].s0).mean()
    assert changed > 0.001  # the attack moves some of f_seg's labels on real CT


def test_posterior_samples_differ():
    loaded = load_attacker(models_dir() / shipped_attacker("dv"))
    images = torch.randn(2, 1, 64, 64)
    first = LearnedAttack(loaded, "posterior", seed=1)(images)
    again = LearnedAttack(loaded, "posterior", seed=1)(images)
    other = LearnedAttack(loaded, "posterior", seed=2)(images)
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], other[0]) or not torch.equal(first[1], other[1])
