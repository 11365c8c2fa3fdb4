"""``replace_dir`` first finishes what a killed replace of the same folder left, whichever caller uses it."""

from __future__ import annotations

from pathlib import Path

from visalign.runs import replace_dir


def _folder(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_text(content)
    (path / "config.json").write_text(content)
    return path


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_replace_after_one_killed_while_deleting_the_old_folder_succeeds(tmp_path):
    # the killed replace had renamed its new folder in and was deleting the old one, set aside
    target = _folder(tmp_path / "checkpoint-10", "second save")
    aside = _folder(tmp_path / ".checkpoint-10.old", "first save")
    (aside / "weights.bin").unlink()  # deleted before the kill
    staging = _folder(tmp_path / ".staging-3", "third save")

    assert replace_dir(staging, target) == target
    assert _contents(target) == {"weights.bin": "third save", "config.json": "third save"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]


def test_a_replace_after_one_killed_between_its_renames_succeeds(tmp_path):
    # the killed replace had set the old folder aside and not yet renamed the new one in
    target = tmp_path / "checkpoint-10"
    _folder(tmp_path / ".checkpoint-10.old", "first save")
    staging = _folder(tmp_path / ".staging-3", "third save")

    assert replace_dir(staging, target) == target
    assert _contents(target) == {"weights.bin": "third save", "config.json": "third save"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]
