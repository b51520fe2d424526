"""Labels layers are read as the loaded model's organs, not the paper's four."""

import numpy as np
import pytest
import torch

from napari_advseg._napari.explorer_jobs import load_session
from napari_advseg._napari.layer_scan import LayerScan
from napari_advseg.data.volume import Volume
from napari_advseg.errors import InvalidInputError
from napari_advseg.labels import label_map_from_names
from napari_advseg.nets.attacker import Attacker, AttackerConfig
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import SegmentationModel, save_unet
from napari_advseg.training.attack_trainer import AttackTrainingConfig
from napari_advseg.training.attacker_io import save_attacker
from napari_advseg.training.seg_trainer import make_spec

from .conftest import blob_volume

SIX = label_map_from_names({str(i): f"organ {i}" for i in range(1, 7)})


def run(generator):
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value


def test_a_six_organ_model_reads_label_values_up_to_six(tmp_path):
    torch.manual_seed(0)
    network = UNet(UNetConfig(num_classes=7, base_channels=4, depth=2)).eval()
    spec = make_spec(network.config, SIX)
    folder = save_unet(tmp_path / "six", network, spec)
    seg = SegmentationModel(network, spec, "six")
    config = AttackerConfig(latent_dim_d=2, latent_dim_v=2, base_channels=4, depth=3)
    attacker = save_attacker(tmp_path / "att", Attacker(config), seg, AttackTrainingConfig(), {})
    volume = blob_volume(shape=(2, 40, 48))
    labels = volume.labels.copy()
    labels[labels == 4] = 6
    scan = LayerScan(Volume(volume.image, volume.spacing, name="ct"), labels)
    with pytest.raises(InvalidInputError, match="6"):  # the paper's four organs refuse a 6
        scan.volume(label_map_from_names({"1": "a", "2": "b", "3": "c", "4": "d"}))
    loaded = run(load_session(scan, folder, attacker, 1))
    assert loaded.session.volume.label_map == SIX
    assert int(loaded.session.volume.labels.max()) == 6
    assert np.array_equal(loaded.session.volume.labels, labels)
