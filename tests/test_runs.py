import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from visalign.errors import VisalignError
from visalign.runs import JsonlStore, RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, scrub_secrets


# ------------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_json_and_text_replace_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"b": 1, "path": Path("/x/y")})
    assert json.loads(target.read_text()) == {"b": 1, "path": "/x/y"}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp files left


def test_atomic_write_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old content")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails inside the write, after the temp file exists
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


# ------------------------------------------------------------------------------------------------ JSONL store
def test_jsonl_store_append_reopen_get_and_latest_wins(tmp_path):
    path = tmp_path / "records.jsonl"
    with JsonlStore(path) as store:
        store.append({"id": "a", "value": 1})
        store.append({"id": "b", "value": 2})
        store.append({"id": "a", "value": 3})
    reopened = JsonlStore(path)
    assert reopened.done_keys() == {"a", "b"}
    assert reopened.get("a") == {"id": "a", "value": 3}
    assert reopened.get("missing") is None
    assert [r["id"] for r in reopened.records()] == ["a", "b"]
    assert len(path.read_text().splitlines()) == 3
    assert "a" in reopened and len(reopened) == 2


def test_jsonl_store_custom_key_and_missing_key_error(tmp_path):
    store = JsonlStore(tmp_path / "x.jsonl", key="scene_id")
    store.append({"scene_id": 7, "text": "fire"})
    assert JsonlStore(tmp_path / "x.jsonl", key="scene_id").get(7) == {"scene_id": 7, "text": "fire"}
    with pytest.raises(VisalignError, match="no 'scene_id' field"):
        store.append({"id": 1})
    store.close()


def test_jsonl_store_truncates_torn_last_line(tmp_path, caplog):
    path = tmp_path / "scenes.jsonl"
    with JsonlStore(path) as store:
        store.append({"id": "s1", "text": "a flood"})
        store.append({"id": "s2", "text": "a fire"})
    clean = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(b'{"id": "s3", "text": "a coll')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="visalign.runs"):
        store = JsonlStore(path)
    assert store.done_keys() == {"s1", "s2"}
    assert path.read_bytes() == clean
    assert str(path) in caplog.text and "torn" in caplog.text
    store.append({"id": "s3", "text": "a collapse"})
    store.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["s1", "s2", "s3"]


def test_jsonl_store_invalid_complete_last_line_is_treated_as_torn(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "x": \n')
    assert JsonlStore(path).done_keys() == {1}
    assert path.read_bytes() == b'{"id": 1}\n'


def test_jsonl_store_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(VisalignError, match=r"r\.jsonl:2: corrupt JSON"):
        JsonlStore(path)


def test_jsonl_store_survives_sigkill_of_a_writer(tmp_path):
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(
        f"""
        from visalign.runs import JsonlStore
        store = JsonlStore({str(path)!r})
        for i in range(1_000_000):
            store.append({{"id": i, "payload": "x" * 500}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 50_000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = JsonlStore(path)
    keys = sorted(store.done_keys())
    assert len(keys) >= 50, "the writer made too little progress before the kill"
    assert keys == list(range(len(keys)))  # a prefix: nothing lost before the kill point
    assert all(r["payload"] == "x" * 500 for r in store.records())
    store.append({"id": len(keys), "payload": "resumed"})
    store.close()
    assert len(path.read_text().splitlines()) == len(keys) + 1


# ------------------------------------------------------------------------------------------------ manifest
def test_manifest_records_config_versions_seeds_inputs(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"title": "t", "abstract": "a"}\n')
    run = RunDir(tmp_path / "run")
    run.write_manifest({"limit": 5, "model": "gpt-4o-mini"}, seeds={"sampling": 13}, inputs={"corpus": corpus})
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"] == {"limit": 5, "model": "gpt-4o-mini"}
    assert manifest["seeds"] == {"sampling": 13}
    assert manifest["inputs"]["corpus"]["sha256"] == hashlib.sha256(b'{"title": "t", "abstract": "a"}\n').hexdigest()
    assert manifest["inputs"]["corpus"]["bytes"] == 32
    assert manifest["versions"]["python"] == platform.python_version()
    assert set(manifest["versions"]) == {"python", "torch", "transformers", "visalign"}
    assert manifest["versions"]["torch"].startswith("2.")
    assert manifest["git_revision"] is None or len(manifest["git_revision"]) == 40
    assert manifest["created"].endswith("+00:00")


def test_manifest_never_stores_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    config = {
        "api_key": "plain-secret-value-42",
        "api_key_env": "OPENAI_API_KEY",
        "max_tokens": 512,
        "keywords": ["safety", "agents"],
        "backend": {"hf_token": "hf_abcdefghijklmnopqrstuv", "base_url": "https://h/v1?sig=tok-0123456789abcdef"},
        "headers": ["Bearer abcdefghijklmnop"],
        "note": "sk-proj-ABCDEFGHIJKLMNOP1234",
    }
    run = RunDir(tmp_path / "run")
    run.write_manifest(config, extra={"password": "hunter22"})
    text = (tmp_path / "run" / "manifest.json").read_text()
    for secret in ("plain-secret-value-42", "hf_abcdefghijklmnopqrstuv", "tok-0123456789abcdef",
                   "abcdefghijklmnop", "sk-proj-ABCDEFGHIJKLMNOP1234", "hunter22"):  # fmt: skip
        assert secret not in text
    manifest = json.loads(text)
    assert manifest["config"]["api_key_env"] == "OPENAI_API_KEY"
    assert manifest["config"]["max_tokens"] == 512
    assert manifest["config"]["keywords"] == ["safety", "agents"]
    assert manifest["config"]["api_key"] == "<redacted>"


def test_scrub_secrets_keeps_ordinary_values():
    assert scrub_secrets({"author": "Ada", "tokens_total": 10, "keyword": "risk"}) == {
        "author": "Ada",
        "tokens_total": 10,
        "keyword": "risk",
    }


def test_manifest_resume_same_config_and_refuse_different(tmp_path):
    run = RunDir(tmp_path / "run")
    first = run.write_manifest({"limit": 5})
    again = run.write_manifest({"limit": 5})
    assert again["created"] == first["created"]
    assert len(again["resumed"]) == 1
    with pytest.raises(VisalignError, match=r"different config.*--out"):
        run.write_manifest({"limit": 6})
    assert json.loads(run.manifest_path.read_text())["config"] == {"limit": 5}


def test_manifest_missing_input_names_it(tmp_path):
    with pytest.raises(VisalignError, match=r"nope\.csv: input 'corpus' not found"):
        RunDir(tmp_path / "run").write_manifest({}, inputs={"corpus": tmp_path / "nope.csv"})


def test_credentials_inside_a_url_are_not_stored(tmp_path):
    config = {"base_url": "https://alice:Pa55w0rd-vLLM-2026@gpu-box.example.org/v1",
              "image_url": "https://cdn.example.org/a.png?X-Signature=8c1f00aa11bb22cc33dd44ee55ff6677c5d6",
              "plain_url": "https://api.openai.com/v1"}  # fmt: skip
    RunDir(tmp_path / "run").write_manifest(config)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert "Pa55w0rd" not in text and "alice" not in text and "8c1f00aa" not in text
    assert manifest["config"]["base_url"] == "https://<redacted>@gpu-box.example.org/v1"
    assert manifest["config"]["image_url"] == "https://cdn.example.org/a.png?<redacted>"
    assert manifest["config"]["plain_url"] == "https://api.openai.com/v1"


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_a_refused_resume_names_the_settings_that_differ(tmp_path):
    """A default that changed between versions looks like an edit the user never made: say which setting it is."""
    run = RunDir(tmp_path / "run")
    run.write_manifest({"refusal_judge": "visalign-refusal", "systems": [{"name": "a", "model": "m"}], "seed": 0})
    with pytest.raises(VisalignError) as refused:
        run.write_manifest(
            {"refusal_judge": "visalign-refusal-v4", "systems": [{"name": "a", "model": "n"}], "seed": 0, "title": "t"}
        )
    message = str(refused.value)
    assert "refusal_judge: 'visalign-refusal' -> 'visalign-refusal-v4'" in message
    assert "systems[0].model: 'm' -> 'n'" in message and "title: '(unset)' -> 't'" in message
    assert "name the old value in the config to resume" in message and len(message.splitlines()) == 1


def test_a_lone_surrogate_in_a_record_is_stored_and_read_back_and_other_text_is_written_as_before(tmp_path):
    from visalign.clients.cache import request_key

    reply = json.loads('"Sure \\ud83d"')  # an API reply whose emoji a server cut in half: a lone surrogate
    store = JsonlStore(tmp_path / "records.jsonl")
    store.append({"id": "cut", "response": reply})
    store.append({"id": "whole", "response": "café 😀"})
    store.close()
    assert (tmp_path / "records.jsonl").read_bytes() == (
        b'{"id": "cut", "response": "Sure \\ud83d"}\n'  # escaped as ensure_ascii would: the line encodes as UTF-8
        b'{"id": "whole", "response": "caf\xc3\xa9 \xf0\x9f\x98\x80"}\n'  # unchanged: UTF-8 as it always was
    )
    reopened = JsonlStore(tmp_path / "records.jsonl")
    assert reopened.get("cut")["response"] == reply and reopened.get("whole")["response"] == "café 😀"

    atomic_write_json(tmp_path / "reply.json", {"text": reply}, indent=None)
    assert json.loads((tmp_path / "reply.json").read_text(encoding="utf-8")) == {"text": reply}
    body = {"messages": [{"role": "assistant", "content": reply}]}  # the cut reply sent on, to a judge
    assert request_key("https://api.example/v1", body) != request_key("https://api.example/v1", {"messages": []})
    before = hashlib.sha256('https://x/v1\n{"t":"café"}'.encode()).hexdigest()
    assert request_key("https://x/v1", {"t": "café"}) == before  # a key cached before is the same key now


@pytest.mark.parametrize(("field", "old", "new"), [
    ("base_url", "https://x.openai.azure.com/openai/v1?api-version=2024-02-01",
     "https://x.openai.azure.com/openai/v1?api-version=2025-04-01"),  # a query string is hidden as a whole
    ("name", "sk-baseline-2024-a", "sk-baseline-2024-b"),  # a value shaped like a provider key
    ("api_key", "plain-secret-value-42", "plain-secret-value-43"),  # a value under a secret-looking name
])  # fmt: skip
def test_a_changed_redacted_setting_refuses_the_resume_without_storing_or_showing_it(tmp_path, field, old, new):
    shown = {"base_url": "https://x.openai.azure.com/openai/v1?<redacted>"}.get(field, "<redacted>")
    run = RunDir(tmp_path / "run")
    first = run.write_manifest({field: old, "seed": 0})
    # the hash is as it was: sha256 of the scrubbed config's canonical JSON (sorted keys, no spaces), written out
    canonical = f'{{"{field}":"{shown}","seed":0}}'  # each field's name sorts before "seed"
    assert first["config_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert run.write_manifest({field: old, "seed": 0})["resumed"]  # the same config resumes
    with pytest.raises(VisalignError) as refused:
        run.write_manifest({field: new, "seed": 0})
    message = str(refused.value)
    assert f"redacted setting(s) {field} had another value" in message and "pass the original config" in message
    for value in (old, new, "2024-02-01", "2025-04-01"):
        assert value not in message
    files = {p.name: p for p in (tmp_path / "run").iterdir()}
    key = files[".redaction-key"].read_text().strip()  # the digests' key: beside the manifest, never in it
    assert files[".redaction-key"].stat().st_mode & 0o777 == 0o600
    text = files["manifest.json"].read_text()
    assert old not in text and "2024-02-01" not in text and key not in text
    assert set(json.loads(text)["redacted"]) == {field}


def test_a_run_begun_before_redacted_settings_were_checked_resumes_then_checks_them(tmp_path, caplog):
    url = "https://x.example/v1?api-version=2024-02-01"
    run = RunDir(tmp_path / "run")
    run.write_manifest({"base_url": url})
    manifest = json.loads(run.manifest_path.read_text())
    manifest.pop("redacted", None)  # as an earlier visalign wrote it
    run.manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "run" / ".redaction-key").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING):
        run.write_manifest({"base_url": url})
    assert "cannot check the redacted settings this run began with (base_url)" in caplog.text
    with pytest.raises(VisalignError, match="redacted setting"):
        run.write_manifest({"base_url": url.replace("2024", "2025")})
