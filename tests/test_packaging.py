"""The package as a user installs it: manifest, shipped folders, wheel contents, layering."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

from napari_advseg._resources import models_dir, sample_data_dir

ROOT = Path(__file__).resolve().parents[1]
UI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")


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
    ):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari_advseg:napari.yaml" in text and "advseg = napari_advseg.cli:main" in text


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
