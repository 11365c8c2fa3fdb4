"""A damaged ``manifest.json`` beside intact records: the error says how to resume from them, and that way works."""

from __future__ import annotations

import pytest

from visalign.errors import VisalignError
from visalign.runs import RunDir

CONFIG = {"name": "job", "seed": 0}


@pytest.mark.parametrize("damage", [b"", b'{"format": "visalign-run/1", "conf', b"[]", b"null", b"\xff\xfe"])
def test_a_damaged_manifest_names_the_file_and_how_to_keep_the_records(tmp_path, damage):
    run = RunDir(tmp_path / "run")
    run.write_manifest(CONFIG)
    run.manifest_path.write_bytes(damage)  # a full disk, a copy tool: never the atomic writer itself
    with pytest.raises(VisalignError) as refused:
        run.write_manifest(CONFIG)
    message = str(refused.value)
    assert message.startswith(f"{run.manifest_path}: unreadable manifest")
    assert "\n" not in message and "new --out" not in message  # starting over would pay for every record again
    assert f"mv {run.manifest_path} {run.manifest_path}.damaged" in message
    assert "re-run the command that wrote this folder with its original config" in message


def test_the_advice_works_the_run_resumes_with_its_records(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_manifest(CONFIG)
    with run.store("records.jsonl") as store:
        store.append({"id": "a", "answer": 1})
    run.manifest_path.write_bytes(b"")
    with pytest.raises(VisalignError):
        run.write_manifest(CONFIG)
    run.manifest_path.rename(run.manifest_path.with_name("manifest.json.damaged"))  # as the message says
    assert run.write_manifest(CONFIG)["config"] == CONFIG
    assert run.store("records.jsonl").get("a") == {"id": "a", "answer": 1}
    with pytest.raises(VisalignError, match="different config"):  # and it guards the run again from now on
        run.write_manifest({**CONFIG, "seed": 1})
