"""The app's default attacker is named by models/default_attacker.json."""

import json

from napari_advseg import _resources
from napari_advseg._resources import default_attacker_name, models_dir


def test_the_shipped_file_names_a_shipped_attacker():
    data = json.loads((models_dir() / "default_attacker.json").read_text())
    assert default_attacker_name() == data["attacker"]
    assert (models_dir() / data["attacker"] / "config.json").is_file()
    assert data["chosen_by"]


def test_a_missing_or_wrong_file_falls_back_to_the_attacker_shipped_before(tmp_path, monkeypatch):
    monkeypatch.setattr(_resources, "models_dir", lambda: tmp_path)
    (tmp_path / _resources.FALLBACK_ATTACKER).mkdir()
    assert default_attacker_name() == _resources.FALLBACK_ATTACKER  # no file
    (tmp_path / "default_attacker.json").write_text('{"attacker": "attacker_gone"}')
    assert default_attacker_name() == _resources.FALLBACK_ATTACKER  # names no folder
    (tmp_path / "attacker_new").mkdir()
    (tmp_path / "default_attacker.json").write_text('{"attacker": "attacker_new"}')
    assert default_attacker_name() == "attacker_new"
