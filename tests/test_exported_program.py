"""torch.export programs (.pt2): loaded without unpickling or running code from the file."""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.export import Dim

from napari_advseg.errors import CheckpointError, InvalidInputError
from napari_advseg.nets.exported_program import (
    describe_input_constraints,
    inspect_exported_program,
    is_exported_program,
    load_exported_program,
    static_input_shape,
)


class TinyNet(nn.Module):
    """A few-channel 2D conv net with batch norm (eval-mode semantics matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm(self.conv1(x))))


class TinyNet3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Touch:
    """A malicious payload: unpickling it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def _torch_save_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An eager net and its dynamic, static and 3D exports (exported once: it takes a second)."""
    folder = tmp_path_factory.mktemp("programs")
    torch.manual_seed(0)
    net = TinyNet().eval()
    with torch.no_grad():  # non-trivial running statistics, so eval-mode batch norm is tested
        net.norm.running_mean.uniform_(-0.5, 0.5)
        net.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 1, 32, 32)
    spatial = {"x": {2: Dim("h", min=16, max=256), 3: Dim("w", min=16, max=256)}}
    paths = {
        "dynamic": folder / "dynamic.pt2",
        "static": folder / "static.pt2",
        "net3d": folder / "net3d.pt2",
    }
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=spatial), paths["dynamic"])
    torch.export.save(torch.export.export(net, (x,)), paths["static"])
    net3d = TinyNet3d().eval()
    torch.export.save(torch.export.export(net3d, (torch.randn(1, 1, 4, 8, 8),)), paths["net3d"])
    return {"net": net, **paths}


def _rewrite(
    source: Path,
    target: Path,
    replace: dict[str, bytes] | None = None,
    edit_program: Callable[[dict[str, Any]], None] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """Copy a PT2 archive, replacing, adding or dropping records (names below the root folder)."""
    replace = dict(replace or {})
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        root = archive.namelist()[0].split("/", 1)[0]
        for name in archive.namelist():
            relative = name.split("/", 1)[1]
            data = archive.read(name)
            if relative in drop:
                continue
            if edit_program is not None and relative == "models/model.json":
                program = json.loads(data)
                edit_program(program)
                data = json.dumps(program).encode()
            out.writestr(name, replace.pop(relative, data))
        for relative, data in replace.items():
            out.writestr(f"{root}/{relative}", data)
    return target


def _read_json(path: Path, relative: str) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        return json.loads(archive.read(f"{root}/{relative}"))


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


# --- the good path -----------------------------------------------------------------------------


def test_dynamic_program_matches_the_eager_net_at_two_sizes(programs, monkeypatch):
    real_load = torch.load
    loads: list[bool] = []

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        loads.append(True)
        return real_load(*args, **kwargs)

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled with pickle")

    monkeypatch.setattr(torch, "load", weights_only_load)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch._C, "_pickle_load_obj", no_unpickling)
    module = load_exported_program(programs["dynamic"])
    assert loads  # the sample inputs went through the wrapper: the patch is in effect

    assert is_exported_program(programs["dynamic"])
    for shape in [(1, 1, 24, 40), (1, 1, 48, 80)]:
        image = torch.randn(shape)
        with torch.no_grad():
            expected = programs["net"](image)
            actual = module(image)
        assert actual.shape == (1, 3, *shape[2:])
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert static_input_shape(module) is None
    description = describe_input_constraints(programs["dynamic"])
    assert "1x1xHxW" in description and "H in 16..256" in description


def test_loaded_module_takes_eval_and_train_calls(programs):
    module = load_exported_program(programs["dynamic"])
    wrapper = nn.Sequential(module)
    wrapper.eval()  # torch.export modules raise here unless the loader allows it
    assert not module.training
    wrapper.train()
    assert module.training
    assert all(parameter.device.type == "cpu" for parameter in module.parameters())


def test_static_program_loads_and_its_size_is_described(programs):
    module = load_exported_program(programs["static"])
    assert static_input_shape(module) == (1, 1, 32, 32)
    description = describe_input_constraints(programs["static"])
    assert "exported for 1x1x32x32 inputs only" in description
    assert "dynamic_shapes" in description
    with pytest.raises(RuntimeError, match="32"):
        module(torch.zeros(1, 1, 24, 40))


def test_3d_program_loads_with_5d_weights(programs):
    module = load_exported_program(programs["net3d"])
    assert any(parameter.ndim == 5 for parameter in module.parameters())


# --- pickles and code are refused, and never run -----------------------------------------------


def test_the_payload_runs_when_unpickled(tmp_path):
    """The refusal tests below are meaningful: this payload does create its marker."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Touch(marker)))
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_pickle_named_pt2_is_refused(tmp_path, legacy):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt2"
    torch.save({"weight": Touch(marker)}, path, _use_new_zipfile_serialization=not legacy)
    assert not is_exported_program(path)
    with pytest.raises(CheckpointError, match=r"pickle.*, not a torch.export archive"):
        load_exported_program(path)
    assert not marker.exists()


def _pickled_weight(marker: Path, source: Path) -> dict[str, bytes]:
    config = _read_json(source, WEIGHTS_CONFIG)
    entry = config["config"]["conv1.weight"]
    entry["use_pickle"] = True
    return {
        WEIGHTS_CONFIG: json.dumps(config).encode(),
        f"data/weights/{entry['path_name']}": _torch_save_bytes(Touch(marker)),
    }


def _pickled_sample_inputs(marker: Path, source: Path) -> dict[str, bytes]:
    return {SAMPLE_INPUTS: _torch_save_bytes(((Touch(marker),), {}))}


def _pickled_constant(prefix: str) -> Callable[[Path, Path], dict[str, bytes]]:
    def inject(marker: Path, source: Path) -> dict[str, bytes]:
        meta = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True}
        config = {"config": {"evil": {**meta, "tensor_meta": None}}}
        return {
            CONSTANTS_CONFIG: json.dumps(config).encode(),
            f"data/constants/{prefix}0": pickle.dumps(Touch(marker)),
        }

    return inject


def _legacy_weights(marker: Path, source: Path) -> dict[str, bytes]:
    return {"data/weights/model.pt": _torch_save_bytes({"conv1.weight": Touch(marker)})}


INJECTIONS = {
    "weights": (_pickled_weight, "weights are pickled \\(use_pickle"),
    "sample-inputs": (_pickled_sample_inputs, "sample inputs do not load with weights_only"),
    "opaque-constant": (_pickled_constant("opaque_obj_"), "opaque Python objects"),
    "torchbind-constant": (_pickled_constant("custom_obj_"), "custom objects \\(torchbind"),
    "pickled-tensor-constant": (_pickled_constant("tensor_"), "constants are pickled"),
    "legacy-weights": (_legacy_weights, "weights are pickled"),
}


@pytest.mark.parametrize("kind", list(INJECTIONS))
def test_pickle_injected_into_a_genuine_archive_is_refused(programs, tmp_path, kind):
    inject, message = INJECTIONS[kind]
    marker = tmp_path / "marker"
    source = programs["dynamic"]
    path = _rewrite(source, tmp_path / "model.pt2", inject(marker, source))
    assert is_exported_program(path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_exported_program(path)
    assert "torch.export archive" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["weights", "sample-inputs"])
def test_torch_export_load_alone_would_run_the_injected_pickle(programs, tmp_path, kind):
    """Why the checks exist: torch.export.load falls back to full unpickling on these files."""
    marker = tmp_path / "marker"
    inject = INJECTIONS[kind][0]
    source = programs["dynamic"]
    path = _rewrite(source, tmp_path / "model.pt2", inject(marker, source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(path)
        except Exception:  # it may fail after unpickling; the marker is what matters
            pass
    assert marker.exists()


def _first_size(program: dict[str, Any]) -> dict[str, Any]:
    sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
    return next(size for size in sizes if "as_expr" in size)["as_expr"]


def _shape_expression(marker: Path) -> Callable[[dict[str, Any]], None]:
    def edit(program: dict[str, Any]) -> None:
        _first_size(program)["expr_str"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"

    return edit


def _argument_names(marker: Path) -> Callable[[dict[str, Any]], None]:
    def edit(program: dict[str, Any]) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x=__import__('os').mkdir({str(marker)!r})"]

    return edit


def _operator_target(marker: Path) -> Callable[[dict[str, Any]], None]:
    def edit(program: dict[str, Any]) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    return edit


CODE = {
    "shape-expression": (_shape_expression, "a shape expression"),
    "argument-names": (_argument_names, "argument names"),
    "operator": (_operator_target, "operator 'torch.os.system'"),
}


@pytest.mark.parametrize("kind", list(CODE))
def test_code_in_the_program_json_is_refused(programs, tmp_path, kind):
    make_edit, message = CODE[kind]
    marker = tmp_path / "marker"
    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", edit_program=make_edit(marker))
    with pytest.raises(CheckpointError, match=message) as caught:
        load_exported_program(path)
    assert "run as code" in str(caught.value)
    assert not marker.exists()


def test_torch_export_load_alone_would_evaluate_a_shape_expression(programs, tmp_path):
    marker = tmp_path / "marker"
    edit = _shape_expression(marker)
    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", edit_program=edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(path)
        except Exception:  # sympify returns None here, and torch fails after running it
            pass
    assert marker.exists()


def test_saved_guards_code_is_never_executed(programs, tmp_path):
    marker = tmp_path / "marker"
    guard = f"__import__('pathlib').Path({str(marker)!r}).touch() is None"

    def edit(program: dict[str, Any]) -> None:
        program["guards_code"] = [guard]

    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", edit_program=edit)
    module = load_exported_program(path)
    module(torch.zeros(1, 1, 24, 40))
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch's default: the guard becomes generated Python source, run on every call
        torch.export.load(path).module()(torch.zeros(1, 1, 24, 40))
    assert marker.exists()


def test_program_exported_in_training_mode_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(TinyNet().train(), (torch.randn(2, 1, 16, 16),)), path)
    with pytest.raises(CheckpointError, match=r"training mode.*model\.eval\(\)"):
        load_exported_program(path)


# --- other kinds of file -----------------------------------------------------------------------


def test_torchscript_named_pt2_is_refused(tmp_path):
    path = tmp_path / "model.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates jit
        torch.jit.script(TinyNet().eval()).save(str(path))
    assert not is_exported_program(path)
    with pytest.raises(CheckpointError, match=r"a TorchScript archive.*name it \.pt / \.ts"):
        inspect_exported_program(path)


def test_random_zip_is_not_a_pt2_archive(tmp_path):
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/notes.txt", "hello")
    assert not is_exported_program(path)
    with pytest.raises(CheckpointError, match="a zip but not a PT2 archive"):
        inspect_exported_program(path)


def test_text_file_is_not_a_zip(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_text("not a model")
    with pytest.raises(CheckpointError, match="not a zip file"):
        load_exported_program(path)


def test_missing_file_is_invalid_input(tmp_path):
    assert not is_exported_program(tmp_path / "missing.pt2")
    with pytest.raises(InvalidInputError, match="no such file"):
        load_exported_program(tmp_path / "missing.pt2")


def test_aotinductor_package_is_refused(programs, tmp_path):
    so = {"data/aotinductor/model/model.so": b"\x7fELF"}
    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", so)
    with pytest.raises(CheckpointError, match=r"AOTInductor package.*native code"):
        inspect_exported_program(path)


def _renamed_model(source: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    with zipfile.ZipFile(source) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        files = {
            "models/{}.json": archive.read(f"{root}/models/model.json"),
            "data/weights/{}_weights_config.json": archive.read(f"{root}/{WEIGHTS_CONFIG}"),
            "data/constants/{}_constants_config.json": archive.read(f"{root}/{CONSTANTS_CONFIG}"),
            "data/sample_inputs/{}.pt": archive.read(f"{root}/{SAMPLE_INPUTS}"),
        }
    return {pattern.format(name): data for name in names for pattern, data in files.items()}


@pytest.mark.parametrize(
    ("names", "message"),
    [((), "no models/\\*.json"), (("net",), "named net,"), (("first", "second"), "first, second")],
)
def test_archive_without_a_program_named_model_is_refused(programs, tmp_path, names, message):
    originals = ("models/model.json", WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
    added = _renamed_model(programs["dynamic"], names)
    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", added, drop=originals)
    with pytest.raises(CheckpointError, match=message):
        inspect_exported_program(path)


def test_several_programs_load_the_one_named_model(programs, tmp_path):
    added = _renamed_model(programs["dynamic"], ("other",))
    path = _rewrite(programs["dynamic"], tmp_path / "model.pt2", added)
    module = load_exported_program(path)
    assert module(torch.zeros(1, 1, 24, 40)).shape == (1, 3, 24, 40)


def test_through_the_model_loader(programs, tmp_path, capsys):
    """load_segmentation_model and advseg take .pt2 files: dynamic loads, static says why not."""
    from napari_advseg.cli import main
    from napari_advseg.labels import label_map_from_names
    from napari_advseg.model_spec import ModelSpec, save_spec_file
    from napari_advseg.segmentation import load_segmentation_model

    spec = ModelSpec(label_map_from_names({"1": "liver", "2": "spleen"}), min_size=16)  # 3 outputs
    free = {"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
    program = torch.export.export(
        programs["net"], (torch.randn(2, 1, 32, 32),), dynamic_shapes=free
    )
    torch.export.save(program, tmp_path / "free.pt2")
    model = load_segmentation_model(tmp_path / "free.pt2", spec)
    assert model.config["kind"] == "segmentation/torch-export" and model.check_outputs
    with pytest.raises(CheckpointError, match="1x1x32x32 inputs only") as caught:
        load_segmentation_model(programs["static"], spec)
    assert "\n" not in str(caught.value) and "dynamic_shapes" in str(caught.value)
    with pytest.raises(CheckpointError, match="2D slice models only"):
        load_segmentation_model(programs["net3d"], spec)
    # dynamic H and W but a fixed batch of one: inference feeds batches, so it is refused at load
    with pytest.raises(CheckpointError, match="dynamic_shapes for the batch, H, W") as caught:
        load_segmentation_model(programs["dynamic"], spec)
    assert "\n" not in str(caught.value)
    # a pickled payload through the command line: one line, exit 2, nothing unpickled
    marker = tmp_path / "marker"
    bad = _rewrite(
        programs["dynamic"], tmp_path / "bad.pt2", _pickled_weight(marker, programs["dynamic"])
    )
    spec_file = save_spec_file(tmp_path / "spec.json", spec)
    argv = ["eval-seg", "--model", str(bad), "--model-spec", str(spec_file), "--sample", "real"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pickled" in err[0] and not marker.exists()
