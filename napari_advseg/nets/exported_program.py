"""Load a user's ``torch.export`` program (a ``.pt2`` file) without unpickling or running its code.

``torch.export.load`` is not safe on an untrusted file: it unpickles weights and constants stored
with ``use_pickle``, custom (torchbind) and opaque objects, and sample inputs that fail to load
with ``weights_only=True``; it evaluates every symbolic-shape expression in the program with
``sympy.sympify`` (which calls ``eval``); and ``ExportedProgram.module()`` ``exec``s the saved
``guards_code`` and pastes argument names into generated Python source. So before torch sees the
file, :func:`inspect_exported_program` reads the archive's JSON and refuses anything that would
take one of those paths; :func:`load_exported_program` then loads the very bytes it checked.

PT2 archive layout relied on (``torch/export/pt2_archive/constants.py``, written by
``torch/export/pt2_archive/_package.py``), every record under one top-level folder::

    archive_format                          b"pt2"
    archive_version                         b"0"
    models/<name>.json                      the program (torch/_export/serde/schema.py)
    data/weights/<name>_weights_config.json {"config": {fqn: PayloadMeta}}
    data/weights/weight_<i>                 raw tensor bytes (use_pickle false) or a pickle
    data/constants/<name>_constants_config.json  same, tensor_<i> / custom_obj_<i> / opaque_obj_<i>
    data/sample_inputs/<name>.pt            torch.save of (args, kwargs)
    data/aotinductor/<name>/...             AOTInductor compiled code (.so)
    extra/<file>                            user text

``PayloadMeta`` is ``{"path_name", "is_param", "use_pickle", "tensor_meta"}``.
"""

from __future__ import annotations

import ast
import io
import json
import keyword
import re
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.export.pt2_archive import PT2ArchiveReader
from torch.export.pt2_archive import constants as pt2

from ..errors import CheckpointError, InvalidInputError

__all__ = [
    "describe_input_constraints",
    "inspect_exported_program",
    "is_exported_program",
    "load_exported_program",
    "static_input_shape",
]

_NEVER_UNPICKLE = "napari-advseg never unpickles files (that can run code)"
_SAVE_HOWTO = (
    "save the network with torch.export.save(torch.export.export(model.eval(), (x,), "
    "dynamic_shapes=...), 'model.pt2')"
)
_MODEL = "model"
"""The program name ``torch.export.save`` writes and ``torch.export.load`` reads."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED_NAME = re.compile(r"(?!__)[A-Za-z0-9_]+(\.(?!__)[A-Za-z0-9_]+)*")  # no dunders
_SYMBOL = re.compile(r"[a-z]+[0-9]{1,6}")
_NUMBER_TEXT = re.compile(r"[-+]?[0-9.]+([eE][-+]?[0-9]+)?")
_MODEL_FILE = re.compile(r"models/([A-Za-z_][A-Za-z0-9_]*)\.json")
_TRAINING_ARGUMENTS = ("training", "train")

# Graph node targets that are run; anything else is refused (a target is resolved with getattr
# from the torch, operator or math module and then called, so e.g. "torch.os.system" would run).
_OP_NAMESPACES = frozenset({"aten", "prims"})
_HIGHER_ORDER_OPS = frozenset(
    {
        "cond",
        "while_loop",
        "map_impl",
        "scan",
        "associative_scan",
        "wrap_with_set_grad_enabled",
        "wrap_with_autocast",
        "auto_functionalized",
        "auto_functionalized_v2",
        "invoke_subgraph",
        "hints_wrapper",
    }
)
_PYTHON_OPERATORS = frozenset(
    {
        "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
        "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
        "lshift", "rshift", "matmul", "truth",
    }
)  # fmt: skip
_MATH_FUNCTIONS = frozenset({"ceil", "floor", "trunc", "sqrt", "isnan", "isinf", "isfinite"})
_TORCH_SYM_FUNCTIONS = frozenset(
    {"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sum", "sym_sqrt"}
)
_SPEC_NAME_KEYS = frozenset(
    {"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "user_input_name"}
)

# Symbolic-shape expressions are sympy ``srepr`` text such as
# "Mul(Integer(2), Symbol('s0', positive=True, integer=True))"; sympify evaluates them.
_SYM_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp,
    ast.UnaryOp, ast.Compare, ast.BoolOp, ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)  # fmt: skip
_SYM_EXPR_MAX_CHARS = 4000
_SYMPY_NAMES = frozenset(
    {
        "Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max",
        "Min", "Abs", "floor", "ceiling", "sign", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
        "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan",
        "GreaterThan", "And", "Or", "Not", "Xor", "ITE", "Piecewise", "ExprCondPair", "Tuple",
        "true", "false", "BooleanTrue", "BooleanFalse", "oo", "zoo", "nan", "Infinity",
        "NegativeInfinity", "NaN", "Zero", "One", "NegativeOne", "Half",
    }
)  # fmt: skip
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow"})


def is_exported_program(path: Path) -> bool:
    """Whether ``path`` is a zip with a PT2 archive layout (a cheap check; nothing is loaded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = _common_root(archive.namelist())
            return root is not None and _read_member(archive, root, pt2.ARCHIVE_FORMAT_PATH) == (
                pt2.ARCHIVE_FORMAT_VALUE.encode()
            )
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return False


def inspect_exported_program(path: Path) -> None:
    """Check that ``path`` is a ``torch.export`` program that loads without pickle or code.

    Raises
    ------
    InvalidInputError
        If there is no such file.
    CheckpointError
        One line that says what the file is instead (a pickle, TorchScript, an AOTInductor
        package, an archive with pickled payloads, custom objects or code) and what to do.
    """
    _checked_bytes(Path(path))


def load_exported_program(path: Path) -> torch.nn.Module:
    """Load a ``torch.export`` program as a CPU module, after :func:`inspect_exported_program`.

    The graph runs exactly as exported: export it from a model in eval mode (a program that runs
    batch norm or dropout in training mode is refused), and with a dynamic batch, H and W, from
    an example of 2 slices, e.g. ``dynamic_shapes={"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}``
    (a program exported with static shapes
    loads, but raises on any other input size; :func:`describe_input_constraints` says which).
    The saved input guards are not executed (they are Python source); the input ranges still are.
    ``train()`` and ``eval()`` only set the flag (``torch.export`` modules otherwise raise).

    Raises
    ------
    InvalidInputError, CheckpointError
        As :func:`inspect_exported_program`, or "cannot load as a torch.export program (...)".
    """
    path = Path(path)
    program = _load_program(path)
    try:
        module = program.module(check_guards=False)
    except Exception as error:  # torch raises many kinds of errors on a bad graph
        raise _cannot_load(path, error) from error
    # torch.export modules raise on train()/eval(); the graph's mode is fixed at export.
    module.train = types.MethodType(torch.nn.Module.train, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(torch.nn.Module.eval, module)  # type: ignore[method-assign]
    return module.eval()


def describe_input_constraints(path: Path) -> str | None:
    """The input shapes a ``.pt2`` program accepts, in words; None if it has no single input.

    E.g. "exported for 1x1x64x64 inputs only; re-export with dynamic_shapes for H and W (...)"
    or "takes 1x1xHxW inputs with H in 16..4096 and W in 16..4096".

    Raises
    ------
    InvalidInputError, CheckpointError
        As :func:`inspect_exported_program`.
    """
    path = Path(path)
    program = _load_program(path)
    names = program.graph_signature.user_inputs
    value = _single_input_value(program.graph, names)
    if value is None:
        return None
    return _describe_shape(value.shape, names[0], program.range_constraints, program._guards_code)


def static_input_shape(program_or_module: Any) -> tuple[int, ...] | None:
    """The one input shape a program or loaded module accepts; None if some size is dynamic.

    Also None where it cannot tell (several inputs, or no shape recorded).
    """
    if isinstance(program_or_module, torch.export.ExportedProgram):
        graph = program_or_module.graph
        names = program_or_module.graph_signature.user_inputs
    elif isinstance(program_or_module, torch.fx.GraphModule):
        graph = program_or_module.graph
        names = [node.name for node in graph.find_nodes(op="placeholder")]
    else:
        return None
    value = _single_input_value(graph, list(names))
    if value is None or not all(isinstance(size, int) for size in value.shape):
        return None
    return tuple(int(size) for size in value.shape)


# --- loading -----------------------------------------------------------------------------------


def _load_program(path: Path) -> torch.export.ExportedProgram:
    """Inspect, then ``torch.export.load`` the same bytes (so the file cannot change between)."""
    data = _checked_bytes(path)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as error:  # torch raises many kinds of errors on a bad archive
        raise _cannot_load(path, error) from error


def _cannot_load(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot load as a torch.export program ({_first_line(error)}); {_SAVE_HOWTO} "
        f"with the installed torch {torch.__version__}."
    )


def _first_line(error: BaseException) -> str:
    """An error's message cut to one short line (torch's messages span many)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _checked_bytes(path: Path) -> bytes:
    """The file's bytes, once every check passed."""
    data = _read_file(path)
    names = _zip_layout(path, data)
    reader = _pt2_reader(path, data, names)
    _check_archive_files(path, names)
    for model in _model_names(path, names):
        _check_model(path, reader, names, model)
    return data


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file.")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"{path}: cannot read ({error.strerror}).") from error


# --- what kind of file -------------------------------------------------------------------------


def _zip_layout(path: Path, data: bytes) -> set[str]:
    """The archive's record names below its one top-level folder; refuse any other file."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            raise CheckpointError(
                f"{path}: a pickle (legacy torch.save format), not a torch.export archive; "
                f"{_NEVER_UNPICKLE}; {_SAVE_HOWTO}."
            )
        raise CheckpointError(
            f"{path}: not a torch.export archive (not a zip file); {_SAVE_HOWTO}."
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            listed = archive.namelist()
            root = _common_root(listed)
            format_value = _read_member(archive, root, pt2.ARCHIVE_FORMAT_PATH) if root else None
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as error:
        raise CheckpointError(f"{path}: a damaged zip file ({_first_line(error)}).") from error
    if len(set(listed)) != len(listed):
        raise CheckpointError(f"{path}: a zip with duplicate entries; refusing it.")
    if root is None:
        raise CheckpointError(
            f"{path}: a zip but not a PT2 archive (its entries are not in one top-level folder); "
            f"{_SAVE_HOWTO}."
        )
    names = {name[len(root) + 1 :] for name in listed}
    _check_format(path, names, format_value)
    return names


def _common_root(names: list[str]) -> str | None:
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or not all("/" in name for name in names):
        return None
    return roots.pop()


def _read_member(archive: zipfile.ZipFile, root: str, name: str) -> bytes | None:
    try:
        return archive.read(f"{root}/{name}")
    except KeyError:
        return None


def _check_format(path: Path, names: set[str], format_value: bytes | None) -> None:
    if format_value is None:
        if "constants.pkl" in names and any(name.startswith("code/") for name in names):
            raise CheckpointError(
                f"{path}: a TorchScript archive, not a torch.export program; name it .pt / .ts."
            )
        if "data.pkl" in names:
            raise CheckpointError(
                f"{path}: a torch.save pickle, not a torch.export archive; {_NEVER_UNPICKLE}; "
                f"{_SAVE_HOWTO}."
            )
        raise CheckpointError(
            f"{path}: a zip but not a PT2 archive (no archive_format entry); {_SAVE_HOWTO}."
        )
    if format_value != pt2.ARCHIVE_FORMAT_VALUE.encode():
        shown = format_value[:20].decode("ascii", "replace")
        raise CheckpointError(
            f"{path}: a zip but not a PT2 archive (archive_format says {shown!r}); {_SAVE_HOWTO}."
        )


def _pt2_reader(path: Path, data: bytes, names: set[str]) -> PT2ArchiveReader:
    """The PT2 reader torch uses, checked to see the same records as :mod:`zipfile` did."""
    try:
        reader = PT2ArchiveReader(io.BytesIO(data))
        records = set(reader.get_file_names())
        version = reader.read_string(pt2.ARCHIVE_VERSION_PATH)
    except Exception as error:  # the C++ reader raises RuntimeError and friends
        raise CheckpointError(f"{path}: a damaged PT2 archive ({_first_line(error)}).") from error
    if records != names:
        raise CheckpointError(
            f"{path}: a PT2 archive whose zip directory torch reads differently; refusing it."
        )
    if version != pt2.ARCHIVE_VERSION_VALUE:
        raise CheckpointError(
            f"{path}: PT2 archive version {version[:20]!r}, but torch {torch.__version__} reads "
            f"version {pt2.ARCHIVE_VERSION_VALUE}; {_SAVE_HOWTO} with this torch."
        )
    return reader


def _check_archive_files(path: Path, names: set[str]) -> None:
    if any(name.startswith(pt2.AOTINDUCTOR_DIR) or name.endswith(".so") for name in names):
        raise CheckpointError(
            f"{path}: an AOTInductor package (compiled .so), which would run native code; "
            f"{_SAVE_HOWTO} instead of torch._inductor.aoti_compile_and_package."
        )
    legacy = sorted(
        name
        for name in names
        if name.endswith(".pt")
        and (name.startswith(pt2.WEIGHTS_DIR) or name.startswith(pt2.CONSTANTS_DIR))
    )
    if legacy:
        raise CheckpointError(
            f"{path}: a torch.export archive whose weights are pickled ({legacy[0]}, an older "
            f"torch format); {_NEVER_UNPICKLE}. Re-export with torch.export.save from the "
            "installed torch, which stores raw tensors."
        )


def _model_names(path: Path, names: set[str]) -> list[str]:
    files = sorted(name for name in names if name.startswith(pt2.MODELS_DIR))
    models = [match.group(1) for name in files if (match := _MODEL_FILE.fullmatch(name))]
    if len(models) != len(files):
        raise CheckpointError(f"{path}: a PT2 archive with unexpected files under models/.")
    if not models:
        raise CheckpointError(
            f"{path}: a PT2 archive without a torch.export program (no models/*.json); "
            f"{_SAVE_HOWTO}."
        )
    if _MODEL not in models:
        raise CheckpointError(
            f"{path}: a PT2 archive whose programs are named {', '.join(models)}, but "
            f"torch.export.load reads only one named {_MODEL!r}; {_SAVE_HOWTO}."
        )
    return models


# --- one program -------------------------------------------------------------------------------


def _check_model(path: Path, reader: PT2ArchiveReader, names: set[str], model: str) -> None:
    """Refuse what ``torch.export.load`` would unpickle or evaluate for program ``model``."""
    where = f"{path}: a torch.export archive"
    weights = _payload_config(path, reader, names, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT, model)
    for fqn, meta in weights.items():
        _check_weight(where, names, fqn, meta)
    constants = _payload_config(path, reader, names, pt2.CONSTANTS_CONFIG_FILENAME_FORMAT, model)
    for fqn, meta in constants.items():
        _check_constant(where, names, fqn, meta)
    _check_sample_inputs(path, reader, names, model)
    _check_program(path, _read_json(path, reader, names, pt2.MODELS_FILENAME_FORMAT.format(model)))


def _read_json(path: Path, reader: PT2ArchiveReader, names: set[str], name: str) -> Any:
    if name not in names:
        raise CheckpointError(f"{path}: an incomplete PT2 archive (no {name}); {_SAVE_HOWTO}.")
    try:
        return json.loads(reader.read_bytes(name))
    except (ValueError, RecursionError, RuntimeError) as error:
        raise CheckpointError(f"{path}: a damaged PT2 archive ({name} is not JSON).") from error


def _payload_config(
    path: Path, reader: PT2ArchiveReader, names: set[str], name_format: str, model: str
) -> dict[str, Any]:
    name = name_format.format(model)
    config = _read_json(path, reader, names, name)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise CheckpointError(f"{path}: a damaged PT2 archive ({name} has no config).")
    return entries


def _check_weight(where: str, names: set[str], fqn: str, meta: dict[str, Any]) -> None:
    if meta.get("use_pickle") is not False:
        raise CheckpointError(
            f"{where} whose weights are pickled (use_pickle, {fqn!r}: e.g. a tensor subclass); "
            f"{_NEVER_UNPICKLE}. Re-export with plain torch.Tensor weights and "
            "torch.export.save, which stores raw tensors."
        )
    _check_raw_tensor(where, names, pt2.WEIGHTS_DIR, pt2.WEIGHT_FILENAME_PREFIX, fqn, meta)


def _check_constant(where: str, names: set[str], fqn: str, meta: dict[str, Any]) -> None:
    file = str(meta.get("path_name", ""))
    if file.startswith(pt2.CUSTOM_OBJ_FILENAME_PREFIX):
        raise CheckpointError(
            f"{where} that holds custom objects (torchbind, {fqn!r}), which load by unpickling; "
            f"{_NEVER_UNPICKLE}. Export a network of plain tensors and operators."
        )
    if file.startswith(pt2.OPAQUE_OBJ_FILENAME_PREFIX):
        raise CheckpointError(
            f"{where} that holds opaque Python objects ({fqn!r}), stored as pickles; "
            f"{_NEVER_UNPICKLE}. Export a network of plain tensors and operators."
        )
    if meta.get("use_pickle") is not False:
        raise CheckpointError(
            f"{where} whose constants are pickled (use_pickle, {fqn!r}); {_NEVER_UNPICKLE}. "
            "Re-export with plain torch.Tensor constants and torch.export.save."
        )
    _check_raw_tensor(
        where, names, pt2.CONSTANTS_DIR, pt2.TENSOR_CONSTANT_FILENAME_PREFIX, fqn, meta
    )


def _check_raw_tensor(
    where: str, names: set[str], folder: str, prefix: str, fqn: str, meta: dict[str, Any]
) -> None:
    file = meta.get("path_name")
    tensor_meta = meta.get("tensor_meta")
    if (
        not _DOTTED_NAME.fullmatch(fqn)
        or not isinstance(file, str)
        or not re.fullmatch(re.escape(prefix) + r"[0-9]+", file)
        or folder + file not in names
        or not isinstance(tensor_meta, dict)
    ):
        raise CheckpointError(f"{where} with a malformed entry for {fqn[:80]!r}; refusing it.")
    device = tensor_meta.get("device")
    device_type = device.get("type") if isinstance(device, dict) else None
    if device_type != "cpu":
        raise CheckpointError(
            f"{where} whose tensors are on {str(device_type)[:20]!r}; export the model and "
            "inputs on the CPU (model.cpu())."
        )


def _check_sample_inputs(path: Path, reader: PT2ArchiveReader, names: set[str], model: str) -> None:
    """Load them as torch will, but with weights_only=True only: torch retries without it."""
    name = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
    if name not in names:
        raise CheckpointError(f"{path}: an incomplete PT2 archive (no {name}); {_SAVE_HOWTO}.")
    data = reader.read_bytes(name)
    if not data:
        return
    try:
        sample = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # weights_only refusals are UnpicklingError, RuntimeError, ...
        raise CheckpointError(
            f"{path}: a torch.export archive whose sample inputs do not load with "
            f"weights_only=True ({type(error).__name__}: they hold more than tensors), so torch "
            f"would unpickle them; {_NEVER_UNPICKLE}. Export with plain CPU tensors as example "
            "inputs."
        ) from error
    if not isinstance(sample, (tuple, dict)):
        raise CheckpointError(f"{path}: a damaged PT2 archive (sample inputs are not a tuple).")


# --- the program JSON --------------------------------------------------------------------------


def _check_program(path: Path, program: Any) -> None:
    """Refuse a program with code in it, custom objects, training-mode layers or another schema."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise CheckpointError(f"{path}: a damaged PT2 archive (the program has no graph).")
    _check_schema_version(path, program)
    for name in program.get("range_constraints") or {}:
        if not _safe_range_name(name):
            raise _code_error(path, f"a shape symbol named {str(name)[:40]!r}")
    for key, value, parent in _walk(program["graph_module"]):
        _check_entry(path, key, value, parent)


def _check_entry(path: Path, key: str, value: Any, parent: dict[str, Any]) -> None:
    """Refuse one JSON entry of the program that torch would run, unpickle or misuse."""
    if key in ("custom_obj_values", "as_custom_obj", "custom_obj") and value:
        raise CheckpointError(
            f"{path}: a torch.export program that holds custom objects (torchbind), which load "
            f"by unpickling; {_NEVER_UNPICKLE}. Export a network of plain tensors and operators."
        )
    if key == "name" and value in _TRAINING_ARGUMENTS and parent.get("arg") == {"as_bool": True}:
        raise CheckpointError(
            f"{path}: a torch.export program exported in training mode (batch norm or dropout "
            f"run with {value}=True); call model.eval() before torch.export.export."
        )
    problem = _code_problem(key, value, parent)
    if problem is not None:
        raise _code_error(path, problem)


def _safe_range_name(name: Any) -> bool:
    """Range names are only looked up, but torch counts up to an unbacked symbol's number."""
    from torch.utils._sympy.symbol import SymT, prefix_str

    if not isinstance(name, str) or len(name) > 200:
        return False
    unbacked = (prefix_str[SymT.UNBACKED_INT], prefix_str[SymT.UNBACKED_FLOAT])
    return not name.startswith(unbacked) or _SYMBOL.fullmatch(name) is not None


def _check_schema_version(path: Path, program: dict[str, Any]) -> None:
    from torch._export.serde.schema import SCHEMA_VERSION

    version = program.get("schema_version")
    major = version.get("major") if isinstance(version, dict) else None
    if major != SCHEMA_VERSION[0]:
        saved_by = str(program.get("torch_version", "an unknown torch"))[:40]
        raise CheckpointError(
            f"{path}: a torch.export program saved by torch {saved_by} (export schema {major}), "
            f"which torch {torch.__version__} (schema {SCHEMA_VERSION[0]}) cannot read; "
            "re-export it with the installed torch."
        )


def _code_error(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: a torch.export program with {what}, which torch would run as code on loading; "
        f"napari-advseg refuses it; {_SAVE_HOWTO} from a plain PyTorch network."
    )


def _walk(tree: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Every (key, value, dict) in a JSON tree, without recursion."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value, item
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _code_problem(key: str, value: Any, parent: dict[str, Any]) -> str | None:
    """What in one JSON entry torch would run as code, or None."""
    is_node_target = key == "target" and "inputs" in parent and "outputs" in parent
    if is_node_target or key == "as_operator":
        return _operator_problem(value)
    if key == "expr_str":
        return None if _safe_sym_expr(value) else f"a shape expression {str(value)[:60]!r}"
    if key == "forward_arg_names":
        ok = isinstance(value, list) and all(_is_identifier(name) for name in value)
        return None if ok else f"argument names {str(value)[:60]}"
    if key in ("in_spec", "out_spec") and value is not None:
        return None if _safe_treespec(value) else f"an input/output spec {str(value)[:60]!r}"
    if key == "as_graph":
        name = value.get("name") if isinstance(value, dict) else None
        return None if _is_identifier(name) else f"a subgraph named {str(name)[:40]!r}"
    if key in _SPEC_NAME_KEYS:
        ok = isinstance(value, str) and _DOTTED_NAME.fullmatch(value) is not None
        return None if ok else f"a state name {str(value)[:40]!r}"
    return None


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _operator_problem(target: Any) -> str | None:
    """None if ``target`` names an operator napari-advseg lets a graph call."""
    shown = f"operator {str(target)[:80]!r}"
    if not isinstance(target, str) or not all(_IDENTIFIER.fullmatch(p) for p in target.split(".")):
        return shown
    parts = target.split(".")
    if any(part.startswith("__") for part in parts):
        return shown
    if len(parts) == 2:
        module, name = parts
        allowed = (
            (module == "_operator" and name in _PYTHON_OPERATORS)
            or (module == "math" and name in _MATH_FUNCTIONS)
            or (module == "torch" and name in _TORCH_SYM_FUNCTIONS)
        )
        return None if allowed else shown
    if parts[:2] != ["torch", "ops"] or len(parts) not in (4, 5):
        return shown
    if parts[2] == "higher_order":
        return None if len(parts) == 4 and parts[3] in _HIGHER_ORDER_OPS else shown
    if parts[2] not in _OP_NAMESPACES or len(parts) != 5:
        return shown
    try:
        overload = getattr(getattr(getattr(torch.ops, parts[2]), parts[3]), parts[4])
    except Exception:  # AttributeError or RuntimeError for an unknown operator
        return shown
    if not isinstance(overload, torch._ops.OpOverload):
        return shown
    # aten::save and aten::from_file write and read files.
    if any(argument.name == "filename" for argument in overload._schema.arguments):
        return shown
    return None


def _safe_sym_expr(text: Any) -> bool:
    """Whether sympify can only build a sympy expression from ``text`` (it calls ``eval``)."""
    if not isinstance(text, str) or len(text) > _SYM_EXPR_MAX_CHARS:
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _SYM_NODES) or not _safe_sym_node(node):
            return False
    return True


def _safe_sym_node(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or any(k.arg is None for k in node.keywords):
            return False
        if node.func.id in _POWERS and len(node.args) == 2:
            return _small_exponent(node.args[1])
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _small_exponent(node.right)
    if isinstance(node, ast.Name):
        return _sympy_name(node.id)
    if isinstance(node, ast.keyword):
        return _IDENTIFIER.fullmatch(node.arg or "") is not None
    if isinstance(node, ast.Constant):
        return _safe_constant(node.value)
    return True


def _small_exponent(node: ast.AST) -> bool:
    """An exponent that cannot blow up: no nested power and no number above 64."""
    for child in ast.walk(node):
        if isinstance(child, ast.BinOp) and isinstance(child.op, ast.Pow):
            return False
        if isinstance(child, ast.Call) and getattr(child.func, "id", None) in _POWERS:
            return False
        if isinstance(child, ast.Constant) and isinstance(child.value, (int, float)):
            if abs(child.value) > 64:
                return False
    return True


def _safe_constant(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, float):
        return True
    if isinstance(value, int):
        return abs(value) <= 2**63
    if isinstance(value, str):
        return bool(_IDENTIFIER.fullmatch(value) or _NUMBER_TEXT.fullmatch(value))
    return False


def _sympy_name(name: str) -> bool:
    """A sympy class torch prints, or a new symbol; never a function such as sympify or eval."""
    import torch.utils._sympy.functions as torch_sympy

    if name in _SYMPY_NAMES:
        return True
    obj = getattr(torch_sympy, name, None)
    if isinstance(obj, type) and obj.__module__ == torch_sympy.__name__:
        return True  # FloorDiv, ModularIndexing, CleanDiv, ...: the deserializer's own names
    # sympify turns an unknown name into a Symbol, but resolves sympy's and Python's built-in
    # names first; none of those is a few lowercase letters then digits.
    import sympy

    return _SYMBOL.fullmatch(name) is not None and not hasattr(sympy, name)


def _safe_treespec(text: Any) -> bool:
    """Whether a serialized pytree spec names only identifiers (they go into generated code)."""
    try:
        spec = json.loads(text)
        for key, value, _ in _walk(spec):
            if key == "context" and isinstance(value, str):
                names = _json_strings(json.loads(value))
                if not all(_DOTTED_NAME.fullmatch(name) for name in names):
                    return False
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _json_strings(tree: Any) -> list[str]:
    """Every string in a JSON tree, dictionary keys included."""
    strings: list[str] = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return strings


# --- input shapes ------------------------------------------------------------------------------


def _single_input_value(graph: torch.fx.Graph, names: list[str]) -> torch.Tensor | None:
    """The example value (a fake tensor) of the program's one user input, or None."""
    nodes = [node for node in graph.find_nodes(op="placeholder") if node.name in names]
    if len(nodes) != 1:
        return None
    value = nodes[0].meta.get("val")
    return value if isinstance(value, torch.Tensor) else None


def _dim_labels(ndim: int) -> list[str]:
    spatial = {1: ["W"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(ndim - 2)
    return ["N", "C", *spatial] if spatial else [f"dim {i}" for i in range(ndim)]


def _describe_shape(shape: Any, name: str, ranges: dict[Any, Any], guards: list[str]) -> str:
    """E.g. "takes 1x1xHxW inputs with H in 2..any and W in 2..any"."""
    labels = _dim_labels(len(shape))
    pairs = list(zip(shape, labels, strict=True))
    text = "x".join(str(size) if isinstance(size, int) else label for size, label in pairs)
    notes = [
        f"{label} in {_size_range(size, ranges)}"
        for size, label in pairs
        if not isinstance(size, int)
    ]
    free = [0, *range(2, len(shape))]  # the batch and the spatial dimensions
    if any(isinstance(shape[index], int) for index in free):
        hint = ", ".join(f"{index}: Dim.AUTO" for index in free)
        where = f"inputs ({' and '.join(notes)})" if notes else "inputs only"
        dims = ", ".join(["the batch", *labels[2:]])
        return (
            f"exported for {text} {where}; re-export with dynamic_shapes for {dims}, from an "
            f"example batch of 2 slices, e.g. torch.export.export(model, ({name},), "
            f"dynamic_shapes={{'{name}': {{{hint}}}}})"
        )
    description = f"takes {text} inputs" + (f" with {' and '.join(notes)}" if notes else "")
    if guards:
        shown = "; ".join(re.sub(r"L\['(\w+)'\]", r"\1", guard) for guard in guards)
        description += f"; export guards: {shown[:200]}"
    return description


def _size_range(size: torch.SymInt, ranges: dict[Any, Any]) -> str:
    """E.g. "16..4096", "2..any" or "32..4096 (multiples of 16)"."""
    import sympy
    from torch.utils._sympy.numbers import int_oo
    from torch.utils._sympy.value_ranges import bound_sympy

    expr = size.node.expr
    try:
        bounds = bound_sympy(expr, ranges)
    except Exception:  # a symbol without a recorded range
        return "any size"
    upper = "any" if bounds.upper in (int_oo, sympy.oo) else str(int(bounds.upper))
    text = f"{int(bounds.lower)}..{upper}"
    coefficient = expr.as_coeff_Mul()[0]
    if coefficient.is_Integer and coefficient > 1:
        text += f" (multiples of {int(coefficient)})"
    return text
