"""nnU-Net v2 results folders: the derived spec, folds, old plans, refusals and safe loading."""

import importlib.metadata
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from napari_advseg.cli import main
from napari_advseg.errors import AdvsegError, CheckpointError, InvalidInputError
from napari_advseg.model_spec import load_spec_file
from napari_advseg.nnunet.folder import derive_spec, network_plan, read_nnunet_folder
from napari_advseg.nnunet.network import read_network_weights
from napari_advseg.segmentation import load_segmentation_model

from . import nnunet_results as nr

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture
def folder(tmp_path):
    """An untrained results folder (fold 0, checkpoint_final.pth)."""
    return nr.untrained_results_folder(tmp_path / "results")


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def refusal(path, **kwargs) -> str:
    with pytest.raises(AdvsegError) as caught:
        load_segmentation_model(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the derived spec ------------------------------------------------------------------------


def test_the_spec_comes_from_dataset_json_and_the_plans(folder):
    found = read_nnunet_folder(folder)
    spec = derive_spec(found)
    assert spec.label_map.names == ["liver", "spleen", "left kidney"]
    assert spec.pixel_spacing == (1.2, 1.5)  # rows, columns: the 2d configuration's order
    assert spec.orientation == "file" and spec.input_multiple == 4 and spec.min_size == 8
    norm = spec.normalization
    assert norm.kind == "dataset" and norm.clip_hu == (50.0, 450.0)
    assert (norm.mean, norm.std) == (200.0, 110.0)
    assert found.fold == "0" and found.checkpoint.name == "checkpoint_final.pth"
    assert found.describe() == (
        "nnU-Net v2 Dataset042_TinyAbdomen, nnUNetTrainer__nnUNetPlans__2d, fold 0 "
        "(checkpoint_final.pth)"
    )


def test_ct_normalization_is_nnunets(folder):
    spec = derive_spec(read_nnunet_folder(folder))
    hu = np.array([-1000.0, 0.0, 60.0, 300.0, 2000.0], np.float32)
    stats = json.loads((folder / "plans.json").read_text())[
        "foreground_intensity_properties_per_channel"
    ]["0"]
    normalized, _ = spec.normalization.apply(hu)
    np.testing.assert_allclose(normalized, nr.ct_normalize(hu, stats), rtol=1e-6)


@pytest.mark.parametrize(
    ("scheme", "masked", "kind", "clip"),
    [("ZScoreNormalization", False, "zscore", None), ("NoNormalization", False, "dataset", None)],
)
def test_other_normalisations(folder, scheme, masked, kind, clip):
    def change(plans):
        plans["configurations"]["2d"]["normalization_schemes"] = [scheme]
        plans["configurations"]["2d"]["use_mask_for_norm"] = [masked]

    edit_json(folder / "plans.json", change)
    norm = derive_spec(read_nnunet_folder(folder)).normalization
    assert norm.kind == kind and norm.clip_hu == clip
    hu = np.array([-500.0, 10.0, 700.0], np.float32)
    if scheme == "NoNormalization":
        np.testing.assert_array_equal(norm.apply(hu)[0], hu)
    else:  # nnU-Net's ZScoreNormalization: the image's own mean and std
        np.testing.assert_allclose(norm.apply(hu)[0], (hu - hu.mean()) / hu.std(), rtol=1e-6)


@pytest.mark.parametrize(
    ("scheme", "masked", "words"),
    [
        ("ZScoreNormalization", True, "ZScoreNormalization inside a foreground mask"),
        ("RescaleTo01Normalization", False, "RescaleTo01Normalization has no model-spec form"),
    ],
)
def test_normalisations_a_spec_cannot_express_are_refused(folder, scheme, masked, words):
    def change(plans):
        plans["configurations"]["2d"]["normalization_schemes"] = [scheme]
        plans["configurations"]["2d"]["use_mask_for_norm"] = [masked]

    edit_json(folder / "plans.json", change)
    assert words in refusal(folder)


def test_the_ignore_label_has_no_channel(folder):
    edit_json(folder / "dataset.json", lambda d: d["labels"].update({"ignore": 4}))
    assert derive_spec(read_nnunet_folder(folder)).label_map.names == [
        "liver",
        "spleen",
        "left kidney",
    ]


def test_inherited_configurations_are_resolved(folder):
    def change(plans):
        plans["configurations"]["2d_bigger"] = {"inherits_from": "2d", "spacing": [0.8, 0.9]}

    edit_json(folder / "plans.json", change)
    renamed = folder.parent / "nnUNetTrainer__nnUNetPlans__2d_bigger"
    shutil.copytree(folder, renamed)
    spec = derive_spec(read_nnunet_folder(renamed))
    assert spec.pixel_spacing == (0.8, 0.9) and spec.input_multiple == 4


# -- what is refused, in one line --------------------------------------------------------------


def test_region_based_training_is_refused(folder):
    def change(dataset):
        dataset["labels"] = {"background": 0, "organ": [1, 2, 3], "core": [2, 3], "kidney": 3}
        dataset["regions_class_order"] = [1, 2, 3]

    edit_json(folder / "dataset.json", change)
    assert "region-based training (regions_class_order) is not supported" in refusal(folder)


def test_cascade_and_3d_configurations_are_refused(folder):
    def change(plans):
        plans["configurations"]["3d_cascade_fullres"] = {
            "inherits_from": "3d_fullres",
            "previous_stage": "3d_lowres",
        }

    edit_json(folder / "plans.json", change)
    cascade = folder.parent / "nnUNetTrainer__nnUNetPlans__3d_cascade_fullres"
    shutil.copytree(folder, cascade)
    assert "a cascade configuration (3d_cascade_fullres) is not supported" in refusal(cascade)
    full = folder.parent / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(folder, full)
    assert "attacks 2D slice models only" in refusal(full)


@pytest.mark.parametrize(
    ("file", "change", "words"),
    [
        (
            "dataset.json",
            lambda d: d.update(channel_names={"0": "CT", "1": "PET"}),
            "takes 2 input channels (CT, PET)",
        ),
        ("dataset.json", lambda d: d["labels"].update(spleen=5), "are not 0 (background), 1, 2"),
        (
            "dataset.json",
            lambda d: d.update(overwrite_image_reader_writer="NibabelIOWithReorient"),
            "reads images with NibabelIOWithReorient",
        ),
        ("plans.json", lambda p: p.update(transpose_forward=[2, 0, 1]), "transpose_forward"),
        (
            "plans.json",
            lambda p: p["configurations"]["2d"].pop("architecture"),
            "names no network",
        ),
    ],
)
def test_unsupported_folders_are_refused(folder, file, change, words):
    edit_json(folder / file, change)
    assert words in refusal(folder)


def test_a_folder_without_plans_or_folds_says_so(folder, tmp_path):
    (folder / "plans.json").unlink()
    assert "no plans.json; give nnU-Net's trained-model folder" in refusal(folder)
    bare = nr.untrained_results_folder(tmp_path / "other")
    shutil.rmtree(bare / "fold_0")
    assert "no fold_N folder with checkpoint_final.pth or checkpoint_best.pth" in refusal(bare)


# -- folds and checkpoints -------------------------------------------------------------------


def test_folds_default_choose_and_refuse(folder):
    shutil.copytree(folder / "fold_0", folder / "fold_3")
    shutil.copytree(folder / "fold_0", folder / "fold_all")
    assert read_nnunet_folder(folder).fold == "0"  # the first trained fold
    assert read_nnunet_folder(folder, 3).fold == "3"
    assert read_nnunet_folder(folder, "all").fold == "all"
    assert read_nnunet_folder(folder / "fold_3").fold == "3"  # a fold folder is that fold
    assert load_segmentation_model(folder, fold="all").config["fold"] == "all"
    message = refusal(folder, fold=1)
    assert "no trained fold 1 (trained: 0, 3, all)" in message
    assert "is fold 3, but fold 0 was asked for" in refusal(folder / "fold_3", fold=0)
    assert "fold number or 'all'" in refusal(folder, fold="best")


def test_only_fold_all_is_the_default(folder):
    (folder / "fold_0").rename(folder / "fold_all")
    assert read_nnunet_folder(folder).fold == "all"


def test_the_best_checkpoint_when_there_is_no_final(folder):
    (folder / "fold_0" / "checkpoint_final.pth").rename(folder / "fold_0" / "checkpoint_best.pth")
    model = load_segmentation_model(folder)
    assert model.config["checkpoint"] == "checkpoint_best.pth"


def test_fold_is_only_for_nnunet_folders(tmp_path):
    assert "--fold is for those" in refusal(None, fold=0)


# -- the network -----------------------------------------------------------------------------


def test_the_loaded_network_is_nnunets_with_deep_supervision_off(folder):
    model = load_segmentation_model(folder)
    weights = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    reference = nr.build_network(deep_supervision=False)
    reference.load_state_dict(weights["network_weights"])
    reference.eval()
    images = torch.randn(2, 1, 24, 40)
    with torch.inference_mode():
        expected = reference(images)
        got = model(images)
    assert got.shape == (2, 4, 24, 40)
    torch.testing.assert_close(got, expected)
    assert model.name == "Dataset042_TinyAbdomen_2d_fold0"
    assert len(model.config["weights_sha256"]) == 64


def test_older_plans_build_the_same_network(folder):
    """nnU-Net < 2.3 plans (UNet_class_name and friends), converted as nnU-Net 2.2 did."""

    def change(plans):
        settings = plans["configurations"]["2d"]
        settings.pop("architecture")
        settings.update(
            UNet_class_name="PlainConvUNet",
            UNet_base_num_features=8,
            unet_max_num_features=32,
            conv_kernel_sizes=[[3, 3], [3, 3], [3, 3]],
            pool_op_kernel_sizes=[[1, 1], [2, 2], [2, 2]],
            n_conv_per_stage_encoder=[2, 2, 2],
            n_conv_per_stage_decoder=[2, 2],
        )

    before = load_segmentation_model(folder)
    edit_json(folder / "plans.json", change)
    plan = network_plan(read_nnunet_folder(folder))
    assert plan.source == "UNet_class_name"
    after = load_segmentation_model(folder)
    assert after.spec == before.spec
    images = torch.randn(2, 1, 24, 40)
    with torch.inference_mode():
        torch.testing.assert_close(after(images), before(images))


def test_residual_encoder_plans_build_and_load(folder):
    """nnU-Net's ResEnc presets (nnUNetResEncUNet*Plans) name ResidualEncoderUNet."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    kwargs = dict(nr.ARCH_KWARGS)
    kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"

    def change(plans):
        architecture = plans["configurations"]["2d"]["architecture"]
        architecture.update(network_class_name=name, arch_kwargs=kwargs)

    edit_json(folder / "plans.json", change)
    torch.manual_seed(1)
    classes = {"conv_op": torch.nn.Conv2d, "norm_op": torch.nn.InstanceNorm2d}
    reference = ResidualEncoderUNet(
        input_channels=1,
        num_classes=4,
        deep_supervision=True,
        **{**kwargs, **classes, "nonlin": torch.nn.LeakyReLU},
    )
    checkpoint = nr.nnunet_checkpoint(reference, 3, {organ: 0.5 for organ in nr.ORGANS})
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    model = load_segmentation_model(folder)
    assert type(model.network).__name__ == "ResidualEncoderUNet"
    reference.decoder.deep_supervision = False
    images = torch.randn(2, 1, 24, 40)
    with torch.inference_mode():
        torch.testing.assert_close(model(images), reference.eval()(images))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("network_class_name", "os.system", "only dynamic_network_architectures classes"),
        ("network_class_name", "NoSuchUNet", "has no network 'NoSuchUNet'"),
        ("nonlin", "os.system", "only torch.nn module classes are allowed"),
        ("nonlin", "torch.nn.functional.relu", "only torch.nn module classes are allowed"),
    ],
)
def test_plans_name_only_network_and_torch_classes(folder, key, value, words):
    def change(plans):
        architecture = plans["configurations"]["2d"]["architecture"]
        if key == "network_class_name":
            architecture[key] = value
        else:
            architecture["arch_kwargs"][key] = value

    edit_json(folder / "plans.json", change)
    assert words in refusal(folder)


def test_weights_that_do_not_fit_the_plans_are_refused(folder):
    edit_json(
        folder / "plans.json",
        lambda p: p["configurations"]["2d"]["architecture"]["arch_kwargs"].update(
            features_per_stage=[8, 16, 48]
        ),
    )
    message = refusal(folder)
    assert "the weights do not fit the network plans.json describes" in message
    assert "custom trainer (nnUNetTrainer)" in message


def test_nan_weights_are_refused(folder):
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    first = next(iter(checkpoint["network_weights"]))
    checkpoint["network_weights"][first].fill_(float("nan"))
    torch.save(checkpoint, path)
    assert "hold NaN or infinite values" in refusal(folder)


def test_weights_larger_than_the_free_memory_are_refused_before_loading(folder, monkeypatch):
    from napari_advseg import validation

    monkeypatch.setattr(validation, "available_memory", lambda: 1000)
    assert "loading the nnU-Net weights needs about" in refusal(folder)


def test_the_extra_missing_says_how_to_install_it(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "dynamic_network_architectures", None)
    assert "pip install 'napari-advseg[nnunet]'" in refusal(folder)


# -- never a full unpickle -------------------------------------------------------------------


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_numpy_scalars_load_and_anything_else_is_refused_unrun(folder, tmp_path):
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    assert isinstance(checkpoint["_best_ema"], np.float64)  # as nnU-Net stores it
    assert len(read_network_weights(path)) == len(checkpoint["network_weights"])

    marker = tmp_path / "ran"
    checkpoint["init_args"]["hook"] = Payload(marker)
    torch.save(checkpoint, path)
    message = refusal(folder)
    assert "needs more than tensors and NumPy scalars" in message
    assert "open" in message and "never fully unpickles" in message
    assert not marker.exists()


def test_a_file_that_is_not_an_nnunet_checkpoint_is_refused(folder):
    path = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"state_dict": {}}, path)
    assert "holds no 'network_weights' mapping of tensors" in refusal(folder)
    path.write_bytes(b"not a torch file")
    assert "not a readable torch file" in refusal(folder)


def test_weights_alone_and_wrapped_names_load(folder):
    path = folder / "fold_0" / "checkpoint_final.pth"
    weights = torch.load(path, weights_only=False)["network_weights"]
    torch.save({"network_weights": {f"module.{k}": v for k, v in weights.items()}}, path)
    model = load_segmentation_model(folder)
    assert model.spec.label_map.names == ["liver", "spleen", "left kidney"]


# -- a spec given beside the folder ------------------------------------------------------------


def test_a_spec_that_differs_from_the_plans_is_refused(folder, tmp_path):
    import dataclasses

    spec = derive_spec(read_nnunet_folder(folder))
    assert load_segmentation_model(folder, spec).spec == spec
    other = dataclasses.replace(spec, pixel_spacing=(1.5, 1.5))
    message = refusal(folder, spec=other)
    assert "the nnU-Net folder's plans give model spec" in message
    assert "pixel spacing 1.5x1.5 mm vs 1.2x1.5 mm" in message


# -- advseg inspect-model ----------------------------------------------------------------------


def test_inspect_model_prints_and_saves_the_derived_spec(folder, tmp_path, capsys):
    saved = tmp_path / "spec.json"
    assert main(["inspect-model", "--model", str(folder), "--save-spec", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "(nnU-Net 2d, fold 0, checkpoint_final.pth)" in printed
    assert "network: PlainConvUNet" in printed
    assert re.search(r"fed as: liver, spleen, left kidney; 1\.2x1\.5 mm pixels", printed)
    assert json.loads(printed[printed.index("{") : printed.rindex("}") + 1]) == json.loads(
        saved.read_text()
    )
    spec = load_spec_file(saved)
    assert spec == derive_spec(read_nnunet_folder(folder))
    argv = ["inspect-model", "--model", str(folder), "--model-spec", str(saved)]
    assert main(argv) == 0  # the saved spec is the folder's own
    capsys.readouterr()
    assert main(["inspect-model", "--model", str(folder), "--save-spec", str(saved)]) == 2
    assert "exists; choose another name or add --overwrite" in capsys.readouterr().err
    assert main(["inspect-model", "--model", str(folder), "--fold", "2"]) == 2
    assert capsys.readouterr().err.startswith("advseg: error: ")


def test_inspect_model_on_the_shipped_unet(capsys):
    assert main(["inspect-model"]) == 0
    printed = capsys.readouterr().out
    assert "network: UNet" in printed and "fed as: pancreas, kidneys, liver, spleen" in printed


# -- the nnunet extra keeps the user's torch ---------------------------------------------------


def test_the_nnunet_extra_keeps_the_installed_torch():
    """The pinned release declares torch with a lower bound only and no timm or torchvision, so
    installing the extra never replaces the torch a user chose (scripts/setup.sh also compares
    torch.__version__ before and after installing the extras)."""
    from . import test_packaging

    pyproject = tomllib.loads((test_packaging.ROOT / "pyproject.toml").read_text())
    (pin,) = pyproject["project"]["optional-dependencies"]["nnunet"]
    assert pin == "dynamic-network-architectures==0.3.1"
    assert importlib.metadata.version("dynamic-network-architectures") == "0.3.1"
    requires = importlib.metadata.requires("dynamic-network-architectures") or []
    names = {
        re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower() for requirement in requires
    }
    assert names == {"torch", "numpy"}, requires
    (torch_requirement,) = [r for r in requires if r.lower().startswith("torch")]
    assert not re.search(r"==|<|~=|!=", torch_requirement), torch_requirement


def test_a_checkpoint_error_is_an_advseg_error():
    assert issubclass(CheckpointError, AdvsegError) and issubclass(InvalidInputError, AdvsegError)
