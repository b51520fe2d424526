"""A trained nnU-Net v2 2d fold, attacked straight from its results folder.

The fold is trained in the session fixture ``nnunet_trained`` (tests/conftest.py) until the
test's own nnU-Net-style inference (tests/nnunet_results.py) scores a Dice above 0.5 on two
organs; what is asserted here is that napari-advseg feeds the network exactly as nnU-Net does,
not how well it segments.
"""

import json

import nibabel as nib
import numpy as np

from napari_advseg.cli import main
from napari_advseg.segmentation import load_segmentation_model

from .nnunet_results import FAST_ATTACK, ORGANS, read_as_sitk_array


def test_the_reference_fold_segments(nnunet_trained):
    _, _, reference = nnunet_trained
    assert sum(score > 0.5 for score in reference.values()) >= 2, reference


def test_eval_seg_through_the_folder_gives_nnunets_dice(nnunet_trained, tmp_path, capsys):
    folder, raw, reference = nnunet_trained
    out = tmp_path / "dice.json"
    argv = ["eval-seg", "--model", str(folder), "--dataset", str(raw), "--split", "all"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nnU-Net 2d, fold 0, checkpoint_final.pth" in printed
    assert "fed as: liver, spleen, left kidney; 1.2x1.5 mm pixels; dataset z-score" in printed
    result = json.loads(out.read_text())
    assert len(result["subjects"]) == 4 and result["fold"] == "0"
    for organ in ORGANS:
        assert abs(result["dice"][organ] - reference[organ]) <= 0.01, (organ, result, reference)


def test_the_network_sees_what_nnunet_feeds_it(nnunet_trained):
    """Slice by slice, the same input array as nnU-Net's preprocessing (layout and values)."""
    from napari_advseg.data.nifti import load_volume
    from napari_advseg.inference import to_model_grid

    from .nnunet_results import ct_normalize

    folder, raw, _ = nnunet_trained
    model = load_segmentation_model(folder)
    path = raw / "imagesTr" / "case_001_0000.nii.gz"
    plans = json.loads((folder / "plans.json").read_text())
    expected = ct_normalize(
        read_as_sitk_array(path).astype(np.float32),
        plans["foreground_intensity_properties_per_channel"]["0"],
    )
    slices = to_model_grid(load_volume(path), model.spec)
    np.testing.assert_allclose(slices.images[:, 0].numpy(), expected, atol=1e-5)


def test_train_attack_and_generate_on_the_folder(nnunet_trained, tmp_path, capsys):
    folder, raw, _ = nnunet_trained
    attacker = tmp_path / "attacker"
    argv = ["train-attack", "--model", str(folder), "--dataset", str(raw), "--out", str(attacker)]
    assert main([*argv, *FAST_ATTACK]) == 0
    config = json.loads((attacker / "config.json").read_text())
    target = config["target"]
    assert target["name"] == "Dataset042_TinyAbdomen_2d_fold0"
    assert list(target["spec"]["labels"].values()) == list(ORGANS)
    capsys.readouterr()

    image = raw / "imagesTr" / "case_002_0000.nii.gz"
    out = tmp_path / "generated"
    argv = ["generate", "--model", str(folder), "--attacker", str(attacker), "--image", str(image)]
    assert main([*argv, "--out", str(out), "--samples", "1"]) == 0
    assert "warning" not in capsys.readouterr().err  # the attacker's own target: no transfer
    source = nib.load(image)
    written = {path.name for path in out.iterdir()}
    s0 = next(name for name in written if name.endswith("_S0.nii.gz"))
    labels = nib.load(out / s0)
    assert labels.shape == source.shape
    np.testing.assert_allclose(labels.affine, source.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, *ORGANS.values()}
