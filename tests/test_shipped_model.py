"""The shipped default U-Net, as a user gets it."""

import json

from napari_advseg.cli import main
from napari_advseg.data.samples import PhantomCohort, load_real_case
from napari_advseg.evaluation.metrics import dice_per_label
from napari_advseg.inference import segment_volume
from napari_advseg.labels import DEFAULT_LABEL_MAP
from napari_advseg.segmentation import default_model_path, load_segmentation_model


def test_shipped_model_loads_with_its_card():
    model = load_segmentation_model()
    assert model.spec.label_map == DEFAULT_LABEL_MAP
    assert model.spec.pixel_spacing == (3.0, 3.0)
    assert model.config["training"]["command"].startswith("advseg train-seg")
    card = (default_model_path() / "MODEL_CARD.md").read_text()
    assert model.config["training"]["command"] in card


def test_shipped_model_segments_the_real_case():
    volume = load_real_case()
    dice = dice_per_label(
        segment_volume(load_segmentation_model(), volume), volume.labels, DEFAULT_LABEL_MAP
    )
    # In sample (the real case is in its training set): a sanity check of the whole pipeline.
    assert dice["liver"] > 0.85 and dice["kidneys"] > 0.8 and dice["spleen"] > 0.8, dice


def test_eval_seg_json_on_the_real_case(tmp_path):
    out = tmp_path / "dice.json"
    assert main(["eval-seg", "--sample", "real", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["dice"]) == set(DEFAULT_LABEL_MAP.names)
    assert all(0.0 <= value <= 1.0 for value in result["dice"].values())
    assert result["subjects"][0]["subject"] == "abdomen_ct_ts"


def test_unseen_phantom_subjects_are_segmented():
    cohort = PhantomCohort()
    model = load_segmentation_model()
    for index in cohort.split("test")[:3]:
        volume = cohort.subject(index)
        dice = dice_per_label(segment_volume(model, volume), volume.labels, DEFAULT_LABEL_MAP)
        assert dice["liver"] > 0.85 and dice["spleen"] > 0.8, (volume.name, dice)
