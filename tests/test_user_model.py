"""A user's TorchScript model is checked on every call, not only on the probe at load time."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from napari_advseg.errors import CheckpointError, InvalidInputError
from napari_advseg.inference import segment_volume
from napari_advseg.segmentation import (
    ModelSpec,
    SegmentationModel,
    load_segmentation_model,
    probe_sizes,
)

from .conftest import blob_volume

PROBE = probe_sizes(8, 16)  # the load-time probe of the default spec: (1, 1, 24, 40)


class WrongChannelsElsewhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.good = nn.Conv2d(1, 5, 3, padding=1)
        self.bad = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] == 24 and x.shape[-1] == 40:
            return self.good(x)
        return self.bad(x)


class WrongSizeElsewhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if x.shape[-1] == 40:
            return y
        return y[:, :, :, 1:]


class NanElsewhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if x.shape[-1] == 40:
            return y
        return y * float("nan")


class RaisesElsewhere(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 40:
            raise ValueError("input sides must be multiples of 40")
        return self.conv(x)


class NeedsMultiplesOf32(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 != 0 or x.shape[-2] % 32 != 0:
            raise ValueError("input sides must be multiples of 32")
        return self.conv(x)


def scripted(module: nn.Module, tmp_path, name: str) -> SegmentationModel:
    path = tmp_path / f"{name}.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.10
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return load_segmentation_model(path, ModelSpec())  # passes the 24x40 probe


CASES = {
    "wrong_channels": (WrongChannelsElsewhere, CheckpointError, r"returns \(1, 3, 40, 48\)"),
    "wrong_size": (WrongSizeElsewhere, CheckpointError, r"returns \(1, 5, 40, 47\)"),
    "nan": (NanElsewhere, CheckpointError, "NaN or infinite"),
    "raises": (RaisesElsewhere, InvalidInputError, "multiples of 40"),
}


@pytest.mark.parametrize("case", CASES)
def test_every_call_is_checked(tmp_path, case):
    module, error, pattern = CASES[case]
    model = scripted(module(), tmp_path, case)
    assert model(torch.zeros(1, 1, *PROBE)).shape == (1, 5, *PROBE)
    with pytest.raises(error, match=pattern) as raised:
        model(torch.zeros(1, 1, 40, 48))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{case}:"), message
    if case == "raises":
        assert "(1, 1, 40, 48)" in message


@pytest.mark.parametrize("case", CASES)
def test_segmenting_a_scan_with_a_bad_model_is_one_line(tmp_path, case):
    """Through the library's inference path (what eval-seg, the explorer and training use)."""
    module, error, _ = CASES[case]
    model = scripted(module(), tmp_path, case)
    volume = blob_volume(shape=(2, 40, 48))  # 40 x 48 at 3 mm: not the probe's 32 x 32
    with pytest.raises(error) as raised:
        segment_volume(model, volume)
    assert "\n" not in str(raised.value)


def test_a_larger_stride_than_the_spec_says_is_found_at_load(tmp_path):
    """A network that needs multiples of 32, described with 8, fails at load with one line."""
    with pytest.raises(CheckpointError, match='"input_multiple": 32') as raised:
        scripted(NeedsMultiplesOf32(), tmp_path, "stride32")
    assert "\n" not in str(raised.value)
    model = load_segmentation_model(tmp_path / "stride32.pt", ModelSpec(input_multiple=32))
    assert model.spec.input_multiple == 32


def test_a_user_network_needs_a_spec(tmp_path):
    scripted(nn.Conv2d(1, 5, 3, padding=1), tmp_path, "conv")
    with pytest.raises(InvalidInputError, match="--model-spec"):
        load_segmentation_model(tmp_path / "conv.pt")


def test_a_3d_network_is_refused_in_one_line(tmp_path):
    path = tmp_path / "net3d.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(nn.Conv3d(1, 5, 3, padding=1)).save(str(path))
    with pytest.raises(CheckpointError, match="2D slice models only"):
        load_segmentation_model(path, ModelSpec())


def test_a_good_user_model_and_the_unet_pass(tmp_path, tiny_unet):
    network, spec = tiny_unet
    model = scripted(nn.Conv2d(1, 5, 3, padding=1), tmp_path, "conv")
    assert model.check_outputs
    labels = segment_volume(model, blob_volume(shape=(2, 40, 48)))
    assert labels.shape == (2, 40, 48) and labels.dtype == np.uint8
    unet = SegmentationModel(network, spec, "unet")
    assert not unet.check_outputs  # the built-in U-Net: shape check only, no extra pass
    assert unet.logits(torch.zeros(2, 1, 30, 21)).shape == (2, 5, 30, 21)


def test_non_finite_input_is_not_blamed_on_the_model(tmp_path):
    model = scripted(nn.Conv2d(1, 5, 3, padding=1), tmp_path, "conv")
    image = torch.zeros(1, 1, *PROBE)
    image[0, 0, 0, 0] = float("nan")
    assert torch.isnan(model(image)).any()  # the caller (a trainer) sees and reports it


def test_organ_pixels_counts_foreground(tiny_unet):
    network, spec = tiny_unet
    with torch.no_grad():
        network.head.bias.copy_(torch.tensor([0.0, 50.0, 0.0, 0.0, 0.0]))
    model = SegmentationModel(network, spec, "unet")
    counts = model.organ_pixels(torch.zeros(3, 1, 20, 12), batch_size=2)
    assert counts.tolist() == [240, 240, 240]


def test_a_torch_without_the_pt2_reader_says_so(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "model.pt2"
    path.write_bytes(b"PK")  # never read: the reader cannot be imported
    monkeypatch.setitem(sys.modules, "napari_advseg.nets.exported_program", None)
    with pytest.raises(CheckpointError, match="needs a newer torch"):
        load_segmentation_model(path, ModelSpec())
