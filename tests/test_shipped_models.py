"""Every shipped segmentation model beside the default: its card, and an attacker trained
against it (issue 12: new models ship under new names, each with both)."""

import json

import pytest

from napari_advseg._resources import models_dir
from napari_advseg.segmentation import load_segmentation_model
from napari_advseg.training.attacker_io import load_attacker


def shipped(kind_prefix):
    """Names of the shipped folders whose config kind starts with ``kind_prefix``."""
    names = []
    for folder in sorted(models_dir().iterdir()):
        config = folder / "config.json"
        if config.is_file() and json.loads(config.read_text())["kind"].startswith(kind_prefix):
            names.append(folder.name)
    return names


MODELS = [name for name in shipped("segmentation/") if name != "unet_default"]


def test_more_than_the_default_model_ships():
    assert MODELS


@pytest.mark.parametrize("name", MODELS)
def test_a_shipped_model_has_its_card_and_an_attacker_trained_against_it(name):
    model = load_segmentation_model(models_dir() / name)
    card = (models_dir() / name / "MODEL_CARD.md").read_text()
    assert model.config["training"]["command"] in card
    targets = [load_attacker(models_dir() / other) for other in shipped("attacker")]
    against = [a for a in targets if a.config["target"].get("weights_sha256")]
    matching = [
        a.name
        for a in against
        if a.config["target"]["weights_sha256"] == model.config["weights_sha256"]
        and a.target_mismatch(model) is None
    ]
    assert matching, f"no shipped attacker was trained against {name}"
