"""A killed atomic write leaves ``.<name>.<random>.tmp``: the next accepted resume of its run deletes it, no more."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from visalign.errors import VisalignError
from visalign.runs import RunDir, atomic_write_json

CONFIG = {"name": "job", "seed": 0}


def killed_write(final: Path, partial: bytes = b'{"half": ') -> Path:
    """What a SIGKILL between ``mkstemp`` and ``os.replace`` in ``atomic_write_bytes`` leaves: a 0600 temp file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(partial)
    return Path(name)


def started_run(root: Path) -> RunDir:
    """A run directory as a job leaves it: a manifest, records and an exported folder."""
    run = RunDir(root)
    run.write_manifest(CONFIG)
    (root / "records.jsonl").write_text('{"id": 1}\n')
    atomic_write_json(root / "dataset" / "dataset_info.json", {"vsfa": {}})
    return run


def test_a_resume_deletes_what_killed_writes_left_in_its_run_and_keeps_everything_else(tmp_path):
    root = tmp_path / "run"
    run = started_run(root)
    left = [killed_write(root / "dataset" / "dataset_info.json"), killed_write(root / "manifest.json"),
            killed_write(root / "images" / "ab" / "scene.png")]  # fmt: skip
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in left)
    kept = {
        root / "dataset" / "dataset_info.json": None,  # the real files
        root / "records.jsonl": None,
        root / ".notes.tmp": b"a user's file: not the writer's name",
        root / "dataset" / ".llava.json.abcdefgh.tmp.bak": b"not the writer's name either",
        root / "dataset" / "llava.json.abcdefgh.tmp": b"no leading dot: not the writer's name",
    }
    for path, data in kept.items():
        if data is not None:
            path.write_bytes(data)
    before = {path: path.read_bytes() for path in kept}
    # where another live process may be writing: a response cache (shards can share one), another run's folder
    in_cache = killed_write(root / "cache" / "ab" / "key.json")
    other_run = tmp_path / "run" / "nested"
    RunDir(other_run).write_manifest({"other": True})
    in_other_run = killed_write(other_run / "records.json")

    run.write_manifest(CONFIG)  # the same command again: the resume is accepted

    assert not any(p.exists() for p in left)
    assert {path: path.read_bytes() for path in kept} == before
    assert in_cache.exists() and in_other_run.exists()


def test_a_link_named_like_a_temp_file_is_not_followed_or_deleted(tmp_path):
    root = tmp_path / "run"
    run = started_run(root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = killed_write(outside / "precious.json")
    link = root / f".precious.json.{'a' * 8}.tmp"
    link.symlink_to(target)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    run.write_manifest(CONFIG)
    assert link.is_symlink() and target.exists()


@pytest.mark.parametrize("case", ["fresh", "refused"])
def test_nothing_is_deleted_in_a_folder_whose_run_was_not_accepted(tmp_path, case):
    root = tmp_path / "run"
    if case == "refused":
        started_run(root)
    left = killed_write(root / "dataset" / "dataset_info.json")
    if case == "fresh":  # no manifest: not known to be a run directory (an --out pointed at a folder in use)
        RunDir(root).write_manifest(CONFIG)
    else:  # another config's run is refused before anything in it is touched
        with pytest.raises(VisalignError, match="different config"):
            RunDir(root).write_manifest({**CONFIG, "seed": 1})
    assert left.exists()


def test_sweep_temp_files_returns_what_it_deleted(tmp_path):
    from visalign.runs import sweep_temp_files

    left = killed_write(tmp_path / "a" / "b.json")
    assert sweep_temp_files(tmp_path) == [left]
    assert sweep_temp_files(tmp_path) == []


def test_a_file_whose_name_is_near_the_length_limit_is_written_atomically(tmp_path):
    from visalign.runs import atomic_write_bytes

    # 250 bytes: legal (the limit is 255), but the temporary name's pid, host and random parts would pass it uncut
    target = tmp_path / ("a" * 246 + ".png")
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
