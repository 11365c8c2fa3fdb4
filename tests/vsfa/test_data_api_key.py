"""An API key with a trailing CR/LF through the data pipeline: the run works, and the key reaches no record or log."""

import logging
from pathlib import Path

import pytest
from conftest import api_config, write_arxiv

from visalign.clients import base
from visalign.errors import VisalignError
from visalign.testing import CHAT_PATH, IMAGES_PATH
from visalign.vsfa import VsfaDataConfig, build_dataset

ENV = "VISALIGN_TEST_DATA_KEY"
KEY = "sk-proj-SECRET0123456789abcdef"
ROWS = [("a1", "Drones", "A drone hovers over a crowded market square at noon.", "cs.RO")]


def keyed_config(base_url: str, corpus: Path) -> VsfaDataConfig:
    """Every stage sends the key in ``ENV`` to the stand-in server, with one retry."""
    config = api_config(base_url, corpus, scenes={"per_abstract": 1})
    for section in (config["scenes"]["llm"], config["images"]["generator"], config["vqa"]["llm"]):
        section.update(api_key_env=ENV, max_retries=1)
    return VsfaDataConfig.model_validate(config)


def files_holding(root: Path, text: str) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize("ending", ["\r", "\n"])
def test_a_key_with_a_trailing_line_break_builds_the_dataset(server, tmp_path, monkeypatch, caplog, ending):
    monkeypatch.setenv(ENV, KEY + ending)  # a .env file with CRLF line endings, a secret made from a file
    corpus = write_arxiv(tmp_path / "c.jsonl", ROWS)
    with caplog.at_level(logging.DEBUG, logger="visalign"):
        stats = build_dataset(keyed_config(server.base_url, corpus), tmp_path / "run", show_progress=False)
    assert stats["export"] == {"examples": 1, "pairs": 3}
    sent = {r.authorization for path in (CHAT_PATH, IMAGES_PATH) for r in server.requests_to(path)}
    assert sent == {f"Bearer {KEY}"}
    assert files_holding(tmp_path / "run", KEY) == [] and KEY not in caplog.text


def test_a_header_httpx_refuses_stops_the_stage_without_the_key_in_records(server, tmp_path, monkeypatch, caplog):
    # defence in depth: a key that got past the check (here put back on purpose) is refused by httpx before
    # sending; the stage's error records, the log and the stage error carry no trace of it, and nothing is retried
    monkeypatch.setenv(ENV, KEY + "\r")
    monkeypatch.setattr(base, "read_api_key", lambda env, url: KEY + "\r", raising=False)
    corpus = write_arxiv(tmp_path / "c.jsonl", ROWS)
    with caplog.at_level(logging.DEBUG, logger="visalign"), pytest.raises(VisalignError) as info:
        build_dataset(keyed_config(server.base_url, corpus), tmp_path / "run", show_progress=False)
    message = str(info.value)
    assert message.startswith("scenes stage stopped:") and "could not be sent (LocalProtocolError" in message
    assert KEY not in message and KEY not in caplog.text
    assert "SECRET" not in (tmp_path / "run" / "scenes.jsonl").read_text()
    assert files_holding(tmp_path / "run", "SECRET") == [] and server.requests_to(CHAT_PATH) == []
    assert "retry" not in caplog.text
