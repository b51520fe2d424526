import json
import pickle
import warnings

import pytest
import torch

from napari_advseg.errors import CheckpointError
from napari_advseg.labels import DEFAULT_LABEL_MAP, Label, LabelMap
from napari_advseg.nets.unet import UNet, UNetConfig
from napari_advseg.segmentation import (
    ModelSpec,
    load_segmentation_model,
    load_torchscript,
    load_unet,
    save_unet,
)
from napari_advseg.training import checkpoint
from napari_advseg.training.checkpoint import load_checkpoint, save_checkpoint


def test_unet_round_trip_is_bit_exact(tmp_path, tiny_unet):
    network, spec = tiny_unet
    with torch.no_grad():
        for buffer in network.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # non-default batch-norm statistics
    folder = save_unet(tmp_path / "model", network, spec, {"command": "test"})
    model, extra = load_unet(folder)
    assert extra == {}
    pairs = zip(network.state_dict().items(), model.network.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert model.spec == spec
    assert model.config["training"] == {"command": "test"}
    assert len(model.config["weights_sha256"]) == 64
    assert not any(p.requires_grad for p in model.network.parameters())
    x = torch.randn(2, 1, 24, 32)
    assert torch.equal(network(x), model(x))


def test_unet_shapes_on_odd_sizes():
    network = UNet(UNetConfig(base_channels=4, depth=4)).eval()
    for size in ((8, 8), (24, 40), (64, 120)):
        assert network(torch.zeros(1, 1, *size)).shape == (1, 5, *size)


def test_save_is_atomic(tmp_path, tiny_unet, monkeypatch):
    network, spec = tiny_unet
    folder = save_unet(tmp_path / "model", network, spec, {"version": 1})
    before = (folder / "weights.safetensors").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with torch.no_grad():
        next(network.parameters()).add_(1.0)
    with pytest.raises(OSError, match="No space"):
        save_unet(folder, network, spec, {"version": 2})
    assert (folder / "weights.safetensors").read_bytes() == before
    assert json.loads((folder / "config.json").read_text())["training"] == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind


def test_nested_checkpoint_survives_replacement(tmp_path):
    save_checkpoint(tmp_path / "run" / "last", {"a": torch.zeros(2)}, {"kind": "x"})
    save_checkpoint(tmp_path / "run", {"b": torch.ones(2)}, {"kind": "x"})
    save_checkpoint(tmp_path / "run", {"b": torch.full((2,), 2.0)}, {"kind": "x"})
    assert torch.equal(load_checkpoint(tmp_path / "run" / "last")[1]["a"], torch.zeros(2))
    assert torch.equal(load_checkpoint(tmp_path / "run")[1]["b"], torch.full((2,), 2.0))


def test_other_architecture_or_labels_are_refused(tmp_path, tiny_unet):
    network, spec = tiny_unet
    folder = save_unet(tmp_path / "model", network, spec)
    with pytest.raises(CheckpointError, match="architecture"):
        load_unet(folder, expect_architecture=UNetConfig(base_channels=8, depth=3))
    other = LabelMap((Label(1, "liver", (1, 2, 3)),))
    with pytest.raises(CheckpointError, match="trained for labels"):
        load_unet(folder, expect_label_map=other)
    assert load_unet(folder, network.config, DEFAULT_LABEL_MAP)[0].spec == spec


def test_damaged_checkpoints(tmp_path, tiny_unet):
    network, spec = tiny_unet
    folder = save_unet(tmp_path / "model", network, spec)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt weights"):
        load_unet(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        load_unet(folder)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_unet(tmp_path / "absent")
    folder2 = save_unet(tmp_path / "model2", network, spec)
    config = json.loads((folder2 / "config.json").read_text())
    config["architecture"]["base_channels"] = 8
    (folder2 / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_unet(folder2)
    save_checkpoint(tmp_path / "other", {"x": torch.zeros(1)}, {"kind": "attacker"})
    with pytest.raises(CheckpointError, match="'attacker' checkpoint"):
        load_unet(tmp_path / "other")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickles_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps(_Exploit(marker)))
    zipped = tmp_path / "model.pt"
    torch.save({"payload": _Exploit(marker)}, zipped)
    assert not marker.exists()
    for path in (plain, zipped):
        with pytest.raises(CheckpointError, match="TorchScript"):
            load_segmentation_model(path, ModelSpec())
    assert not marker.exists()


def script(module: torch.nn.Module, path) -> None:
    with warnings.catch_warnings():  # deprecated in torch >= 2.10, still what users have
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))


def test_torchscript_model(tmp_path, tiny_unet):
    network, spec = tiny_unet
    path = tmp_path / "net.pt"
    script(network, path)
    model = load_segmentation_model(path, spec)
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(model(x), network(x))
    assert model.config["kind"] == "segmentation/torchscript"


def test_torchscript_with_wrong_outputs_is_refused(tmp_path):
    path = tmp_path / "binary.pt"
    script(torch.nn.Conv2d(1, 2, 3, padding=1), path)
    with pytest.raises(CheckpointError, match=r"expected \(2, 5, "):
        load_torchscript(path, ModelSpec())
