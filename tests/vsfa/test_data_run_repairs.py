"""``vsfa data`` resumed after outside damage: a damaged manifest and the temp files of killed atomic writes.

Both runs talk HTTP to the stand-in server, which counts requests: a recovery that paid twice would show.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import api_config

from visalign.errors import VisalignError
from visalign.runs import LOCK_NAME
from visalign.vsfa import VsfaDataConfig, build_dataset


def build(config: dict, out: Path) -> dict:
    return build_dataset(VsfaDataConfig.model_validate(config), out, show_progress=False)


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path: the cache aside (requests are counted instead), and the run lock,
    which records when its holder started (a later second each run), not the run's work."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "cache" not in p.relative_to(root).parts and p.name != LOCK_NAME}  # fmt: skip


def test_a_damaged_manifest_is_recovered_as_the_error_says_without_a_request_or_a_changed_file(
    server, corpus, tmp_path
):
    config, out = api_config(server.base_url, corpus), tmp_path / "run"
    build(config, out)
    sent = len(server.requests)
    manifest = out / "manifest.json"
    manifest.write_bytes(b"")  # a full disk or a copy tool; every record is intact
    finished = files(out)
    with pytest.raises(VisalignError) as refused:
        build(config, out)
    assert f"mv {manifest} {manifest}.damaged" in str(refused.value) and "new --out" not in str(refused.value)
    manifest.rename(f"{manifest}.damaged")  # what the message says to do, then the same command
    stats = build(config, out)
    assert len(server.requests) == sent  # nothing asked again: the run resumed from its records
    assert stats["export"] == {"examples": 12, "pairs": 36}
    now = files(out)
    changed = {name for name in finished.keys() | now.keys() if finished.get(name) != now.get(name)}
    # only the new manifest and the old one aside: records, images, dataset and statistics are as they were
    assert changed == {"manifest.json", "manifest.json.damaged"}


def test_a_resumed_run_deletes_the_temp_file_a_killed_write_left_in_its_dataset(server, corpus, tmp_path):
    config, out = api_config(server.base_url, corpus), tmp_path / "run"
    build(config, out)
    # what a SIGKILL between mkstemp and os.replace in atomic_write_bytes leaves in the folder users share
    fd, name = tempfile.mkstemp(prefix=".dataset_info.json.", suffix=".tmp", dir=out / "dataset")
    with os.fdopen(fd, "wb") as handle:
        handle.write(b'{"visalign_vs')
    left = Path(name)
    assert stat.S_IMODE(left.stat().st_mode) == 0o600
    finished = files(out / "dataset")
    build(config, out)
    assert not left.exists()
    assert files(out / "dataset") == {k: v for k, v in finished.items() if k != left.name}
