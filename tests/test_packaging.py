"""The package as a user installs it: manifest, shipped folders, wheel contents, layering."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

from napari_advseg._resources import models_dir, sample_data_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
UI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")
QT_BINDINGS = ("pyqt5", "pyqt6", "pyside2", "pyside6")
PACKAGE_MANIFEST = ROOT / "napari_advseg" / "napari.yaml"
TOP_LEVEL_MANIFEST = ROOT / "napari.yaml"

# Declared on purpose although no module imports them (distribution name: why).
DECLARED_NOT_IMPORTED = {
    "pyqt6": "the Qt binding of the napari extra: qtpy finds and loads it, the code imports qtpy",
    "pytest-qt": "a pytest plugin: pytest loads it and the widget tests use its qtbot fixture",
    "ruff": "a command (ruff check, ruff format), not a module",
    "hatchling": "the build backend that the wheel and sdist tests run in this environment",
}
# Imported on purpose although not declared (module: why).
IMPORTED_NOT_DECLARED = {
    "tomli": "tomllib of Python 3.10 (this file); pytest depends on it there",
    "tests": "the repository's own test helpers, which benchmarks/bench_nnunet_fidelity.py reuses",
}


def test_manifest_is_registered_and_valid():
    manifest = PluginManifest.from_distribution("napari-advseg")
    assert manifest.name == "napari-advseg"
    manifest.validate_imports()


def test_shipped_folders_are_found():
    assert (sample_data_dir() / "abdomen_ct_ts" / "ct.nii.gz").is_file()
    assert (models_dir() / "unet_default" / "config.json").is_file()


def test_backend_imports_neither_qt_nor_napari():
    offenders = []
    for path in (ROOT / "napari_advseg").rglob("*.py"):
        if "_napari" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UI_MODULES]
    assert offenders == []


@pytest.mark.slow
def test_wheel_carries_manifest_models_and_samples(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_advseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "napari_advseg/napari.yaml",
        "napari_advseg/models/unet_default/config.json",
        "napari_advseg/models/unet_default/weights.safetensors",
        "napari_advseg/models/unet_default/MODEL_CARD.md",
        "napari_advseg/sample_data/abdomen_ct_ts/ct.nii.gz",
        "napari_advseg/sample_data/abdomen_ct_ts/README.md",
        "napari_advseg/data/phantom/__init__.py",
    ):
        assert required in names, required
    archive = zipfile.ZipFile(wheel)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = archive.read(entry_points).decode()
    assert "napari_advseg:napari.yaml" in text and "advseg = napari_advseg.cli:main" in text
    # The manifest is the package's file itself, not a link or another copy.
    assert archive.read("napari_advseg/napari.yaml") == PACKAGE_MANIFEST.read_bytes()
    # The license the metadata declares travels with it.
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "License-File: LICENSE" in metadata
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [line for line in base if "extra ==" not in line]
    assert not [line for line in base if _dist_name(line.split(":", 1)[1].strip()) in QT_BINDINGS]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    blocks, inside = [], None
    for line in readme[:60]:
        if line.startswith("```"):
            if inside is None:
                inside = []
            else:
                blocks.append(inside)
                inside = None
        elif inside is not None:
            inside.append(line)
    test_command = blocks[1][-1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1].strip() == test_command


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dist_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, set[str]]:
    """Declared distributions: base, and each extra."""
    project = _pyproject()["project"]
    groups = {"base": {_dist_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        groups[extra] = {_dist_name(r) for r in requirements}
    return groups


def _third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level third-party modules imported by ``paths`` -> the files importing them.

    Relative imports, the standard library, napari_advseg itself and sibling modules (a
    benchmark importing ``stall`` from its own folder) are left out.
    """
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                sibling = (path.parent / f"{top}.py").exists() or (path.parent / top).is_dir()
                if top in sys.stdlib_module_names or top == "napari_advseg" or sibling:
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _sources(*folders: str, exclude: str | None = None) -> list[Path]:
    paths = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    return [p for p in paths if exclude is None or exclude not in p.relative_to(ROOT).parts]


def _distributions_of(module: str) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    return {_dist_name(d) for d in mapping.get(module, [])}


def _modules_of(dist: str) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    return {m for m, dists in mapping.items() if dist in {_dist_name(d) for d in dists}}


def test_package_manifest_is_a_real_file_and_the_top_level_copy_is_identical():
    # The package's napari.yaml is the manifest napari reads (the entry point names it); the
    # top-level napari.yaml is a copy for readers of the repository and must not drift.
    assert not PACKAGE_MANIFEST.is_symlink() and PACKAGE_MANIFEST.is_file()
    assert not TOP_LEVEL_MANIFEST.is_symlink() and TOP_LEVEL_MANIFEST.is_file()
    assert TOP_LEVEL_MANIFEST.read_bytes() == PACKAGE_MANIFEST.read_bytes(), (
        "napari.yaml differs from napari_advseg/napari.yaml: edit the package's manifest, then "
        "cp napari_advseg/napari.yaml napari.yaml"
    )
    entry_points = _pyproject()["project"]["entry-points"]["napari.manifest"]
    assert entry_points == {"napari-advseg": "napari_advseg:napari.yaml"}
    assert PluginManifest.from_file(PACKAGE_MANIFEST).name == "napari-advseg"


def test_license_file_is_the_one_the_metadata_declares():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, napari-advseg developers" in text
    assert "Neither the name of the copyright holder" in text  # clause 3


def test_no_qt_binding_in_the_base_dependencies():
    declared = _declared()
    assert not declared["base"] & set(QT_BINDINGS)
    assert declared["napari"] & set(QT_BINDINGS)  # the extra brings one


def test_every_imported_module_is_declared():
    declared = _declared()
    scopes = {
        "the backend (base dependencies)": (
            _sources("napari_advseg", exclude="_napari"),
            declared["base"],
        ),
        "napari_advseg/_napari (base + napari extra)": (
            _sources("napari_advseg/_napari"),
            declared["base"] | declared["napari"],
        ),
        "tests, benchmarks and scripts (base + napari + nnunet + testing extras)": (
            _sources("tests", "benchmarks", "scripts"),
            declared["base"] | declared["napari"] | declared["nnunet"] | declared["testing"],
        ),
    }
    missing = []
    for scope, (paths, allowed) in scopes.items():
        for module, files in sorted(_third_party_imports(paths).items()):
            if module in IMPORTED_NOT_DECLARED:
                continue
            dists = _distributions_of(module)
            if not dists & allowed:
                missing.append(f"{scope}: {module} ({sorted(dists)}) in {sorted(files)}")
    assert missing == [], "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def test_every_declared_dependency_is_imported():
    declared = _declared()
    package = set(_third_party_imports(_sources("napari_advseg")))
    plugin = set(_third_party_imports(_sources("napari_advseg/_napari")))
    dev = set(_third_party_imports(_sources("tests", "benchmarks", "scripts")))
    # napari_advseg/nnunet imports the nnunet extra by name (only its classes may be built), the
    # tests with import statements.
    where = {"base": package, "napari": plugin, "testing": dev, "nnunet": dev}
    unused = []
    for group, dists in declared.items():
        for dist in sorted(dists - set(DECLARED_NOT_IMPORTED)):
            if not _modules_of(dist) & where[group]:
                unused.append(f"{group}: {dist}")
    assert unused == [], "declared in pyproject.toml but never imported: " + ", ".join(unused)
    # The exceptions are declared, and each is still what it claims to be.
    everything = set().union(*declared.values())
    assert set(DECLARED_NOT_IMPORTED) <= everything
    assert "qtpy" in plugin and "pyqt6" in declared["napari"]
    assert any("qtbot" in p.read_text() for p in _sources("tests"))
    assert _pyproject()["build-system"]["build-backend"] == "hatchling.build"


@pytest.mark.slow
def test_sdist_carries_license_both_manifests_and_the_shipped_folders(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("napari_advseg-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name}
        for required in (
            "LICENSE",
            "pyproject.toml",
            "README.md",
            "napari.yaml",
            "napari_advseg/napari.yaml",
            "napari_advseg/data/phantom/__init__.py",
            "models/unet_default/config.json",
            "sample_data/abdomen_ct_ts/ct.nii.gz",
            "tests/test_packaging.py",
        ):
            assert required in members, required
            assert members[required].isfile(), f"{required} is not a plain file"
        manifest = archive.extractfile(members["napari_advseg/napari.yaml"]).read()
        assert manifest == PACKAGE_MANIFEST.read_bytes()
        assert archive.extractfile(members["napari.yaml"]).read() == manifest
