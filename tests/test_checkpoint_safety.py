"""Checkpoint saves keep what they did not write and survive a kill between their two renames."""

import json
import os

import pytest
import torch

from napari_advseg.errors import CheckpointError
from napari_advseg.training import checkpoint
from napari_advseg.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    read_config,
    recover_checkpoint,
    save_checkpoint,
)


def dead_pid() -> int:
    """A process id that no process on this machine has."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def value(folder) -> float:
    return float(load_checkpoint(folder)[1]["w"][0])


def test_replacing_a_checkpoint_keeps_every_file_it_did_not_write(tmp_path):
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(2)}, {"kind": "x"})
    (folder / "MODEL_CARD.md").write_text("# my model\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "a.txt").write_text("keep me")
    save_checkpoint(folder / "last", {"w": torch.ones(2)}, {"kind": "x"})
    save_checkpoint(folder, {"w": torch.full((2,), 2.0)}, {"kind": "x"})
    assert (folder / "MODEL_CARD.md").read_text() == "# my model\n"
    assert (folder / "notes" / "a.txt").read_text() == "keep me"
    assert value(folder) == 2.0 and value(folder / "last") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


class Killed(BaseException):
    """Stands for SIGKILL: no ``finally`` of the save may clean up after it."""


def kill_between_renames(monkeypatch, pid):
    """Make the next save die after its first rename, as a process killed there would."""
    real_replace = os.replace
    calls = []

    def replace(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise Killed
        real_replace(source, destination)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint.os, "getpid", lambda: pid)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda *args, **kwargs: None)


def test_a_kill_between_the_two_renames_is_repaired_on_the_next_read(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(1)}, {"kind": "x", "step": 1})
    (folder / "MODEL_CARD.md").write_text("card")
    pid = dead_pid()
    with monkeypatch.context() as patch:
        kill_between_renames(patch, pid)
        with pytest.raises(Killed):
            save_checkpoint(folder, {"w": torch.ones(1)}, {"kind": "x", "step": 2})
    # The state on disk: no folder, the old one and the complete new one beside it.
    assert not folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".model.old-{pid}", f".model.tmp-{pid}"]
    assert has_checkpoint(folder)  # what the trainers ask before refusing or resuming
    assert read_config(folder)["step"] == 2  # the newer, complete copy
    assert value(folder) == 1.0
    assert (folder / "MODEL_CARD.md").read_text() == "card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_without_a_complete_new_copy_the_old_checkpoint_comes_back(tmp_path):
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(1)}, {"kind": "x", "step": 1})
    pid = dead_pid()
    os.replace(folder, tmp_path / f".model.old-{pid}")
    partial = tmp_path / f".model.tmp-{pid}"
    partial.mkdir()
    (partial / "weights.safetensors").write_bytes(b"half a file")  # killed while writing
    assert recover_checkpoint(folder) == folder
    assert read_config(folder)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_only_our_own_abandoned_leftovers_are_removed(tmp_path):
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(1)}, {"kind": "x"})
    dead = dead_pid()
    # this process's own id: stale unless this process is saving (a restarted container's run
    # often gets the id of the run that was killed)
    removed = [f".model.tmp-{dead}", f".model.old-{dead}", f".model.tmp-{os.getpid()}"]
    kept = [
        f".model.tmp-{os.getppid()}",  # a live process's save in progress
        f".other.tmp-{dead}",  # another checkpoint's
        f".model.tmp-{dead}x",
        f"model.tmp-{dead}",
        f".model.backup-{dead}",
        ".model.tmp-",
    ]
    for name in removed + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    (tmp_path / f".model.old-{dead}.txt").write_text("a file, not a folder")
    kept.append(f".model.old-{dead}.txt")
    read_config(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", *kept])


def test_a_leftover_that_cannot_be_put_back_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(1)}, {"kind": "x"})
    pid = dead_pid()
    os.replace(folder, tmp_path / f".model.tmp-{pid}")

    def refuse(source, destination):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.os, "replace", refuse)
    with pytest.raises(CheckpointError, match="rename it to model by hand") as error:
        read_config(folder)
    assert "\n" not in str(error.value)


def test_malformed_format_version_is_one_line(tmp_path):
    folder = save_checkpoint(tmp_path / "model", {"w": torch.zeros(1)}, {"kind": "x"})
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = "1"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format_version must be a whole number"):
        read_config(folder)


def test_a_read_during_a_save_in_this_process_leaves_the_save_alone(tmp_path, monkeypatch):
    """A reader (the GUI thread) recovering while a trainer thread saves: the save survives."""
    folder = tmp_path / "model"
    save_checkpoint(folder, {"w": torch.zeros(1)}, {"kind": "x", "step": 1})
    real_save_file = checkpoint.save_file

    def save_file_and_read(tensors, path):
        real_save_file(tensors, path)
        assert read_config(folder.resolve())["step"] == 1  # same folder, spelled otherwise
        assert recover_checkpoint(folder) is None

    monkeypatch.setattr(checkpoint, "save_file", save_file_and_read)
    monkeypatch.chdir(tmp_path)
    save_checkpoint("model", {"w": torch.ones(1)}, {"kind": "x", "step": 2})
    assert read_config(folder)["step"] == 2 and value(folder) == 1.0


def test_saving_through_a_link_replaces_the_folder_it_points_to(tmp_path):
    target = save_checkpoint(tmp_path / "real", {"w": torch.zeros(1)}, {"kind": "x"})
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    save_checkpoint(tmp_path / "link", {"w": torch.ones(1)}, {"kind": "x"})
    assert (tmp_path / "link").is_symlink() and value(tmp_path / "link") == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
