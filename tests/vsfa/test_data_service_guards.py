"""Service guards of the data pipeline: the stage breaker on resumes and spent quotas, damaged image cache entries,
and PNGs with bytes after their IEND chunk."""

import base64
import hashlib
import io
import json
from pathlib import Path

import pytest
from conftest import api_config, write_arxiv
from PIL import Image
from standin import scripted_reply

from visalign.errors import VisalignError
from visalign.runs import JsonlStore
from visalign.testing import CHAT_PATH, IMAGES_PATH, Fault, StandInServer, render_png
from visalign.vsfa import VsfaDataConfig, build_dataset
from visalign.vsfa.imagegen import png_intact, store_png

TWO = [
    ("2401.00001", "Drones over markets", "Quadcopter swarms hover over a crowded market square at noon.", "cs.RO"),
    ("2401.00002", "Lab robots", "A pipetting robot runs unattended protocols beside an open fume hood.", "cs.AI"),
]


def _build(base_url: str, corpus: Path, out: Path, *, chat_retries: int = 5, image_retries: int = 5) -> dict:
    # one scene per abstract keeps the runs small: each good abstract gives one image of three pairs
    config = api_config(base_url, corpus, scenes={"per_abstract": 1})
    config["scenes"]["llm"]["max_retries"] = chat_retries
    config["images"]["generator"]["max_retries"] = image_retries
    return build_dataset(VsfaDataConfig.model_validate(config), out, show_progress=False)


def test_a_resume_left_with_only_items_that_always_fail_runs_the_later_stages(tmp_path):
    def reply(request):
        if "POISON" in json.dumps(request["messages"]):
            raise RuntimeError("upstream crashed")  # the stand-in drops the connection: no status at all
        return scripted_reply(request)

    poison = [(f"p{i}", f"Poison {i}", f"POISON abstract {i} about a cloned voice.", "cs.SD") for i in range(3)]
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO + poison)  # file order: the good two are asked first in run 1
    out = tmp_path / "run"
    with StandInServer(reply=reply) as server:
        server.inject(Fault("503", path=IMAGES_PATH), times=50)  # run 1: the image service is down
        with pytest.raises(VisalignError, match=r"^images stage stopped: all 2 request\(s\) failed"):
            _build(server.base_url, corpus, out, chat_retries=0, image_retries=0)
        scenes = {r["id"]: r["status"] for r in JsonlStore(out / "scenes.jsonl").records()}
        assert sorted(scenes.values()) == ["error"] * 3 + ["ok"] * 2
        server.clear_faults()  # the image service is back; the three poisoned abstracts still always fail
        for _ in range(2):  # every resume: the scenes todo list is only those three, and the run goes on
            stats = _build(server.base_url, corpus, out, chat_retries=0, image_retries=0)
            assert stats["export"] == {"examples": 2, "pairs": 6} and stats["scenes"]["service_errors"] == 3
        assert [r.status for r in server.requests_to(IMAGES_PATH)].count(200) == 2


def test_a_dead_service_still_stops_every_resume_of_a_run_that_never_had_an_answer(tmp_path):
    rows = [(f"a{i}", f"T{i}", f"A drone number {i} hovers above a crowded market square.", "cs.RO") for i in range(8)]
    corpus = write_arxiv(tmp_path / "c.jsonl", rows)
    with StandInServer(reply=scripted_reply) as server:
        server.inject(Fault("503", path=CHAT_PATH), times=1000)
        for run in (1, 2):  # the error records of run 1 are no answer: run 2 stops at the breaker too
            sent = len(server.requests_to(CHAT_PATH))
            with pytest.raises(VisalignError, match=r"^scenes stage stopped: POST .* last: HTTP 503"):
                _build(server.base_url, corpus, tmp_path / "run", chat_retries=0)
            # stopped at the third error: two recorded errors and at most four requests in flight, not all eight
            assert 3 <= len(server.requests_to(CHAT_PATH)) - sent <= 6
            # two records per run; which abstracts they name depends on which of the requests in flight failed
            # first (run 2 asks run 1's two again beside two new ones), so their lines are counted, not their keys
            assert len((tmp_path / "run" / "scenes.jsonl").read_text().splitlines()) == 2 * run
            records = list(JsonlStore(tmp_path / "run" / "scenes.jsonl").records())
            assert 2 <= len(records) <= 2 * run and {r["status"] for r in records} == {"error"}


def test_an_exhausted_quota_stops_the_stage_like_a_dead_service(tmp_path):
    # an always-429 service (OpenAI's insufficient_quota) used to be tried for every item and end in 0 examples
    rows = [(f"a{i}", f"T{i}", f"A drone number {i} hovers above a crowded market square.", "cs.RO") for i in range(12)]
    corpus = write_arxiv(tmp_path / "c.jsonl", rows)
    with StandInServer(reply=scripted_reply) as server:
        server.inject(Fault("429", retry_after=None, path=CHAT_PATH), times=1000)
        with pytest.raises(VisalignError) as info:
            _build(server.base_url, corpus, tmp_path / "run", chat_retries=1)
        sent = len(server.requests_to(CHAT_PATH))
    message = str(info.value)
    assert message.startswith("scenes stage stopped: POST ") and "\n" not in message
    assert "last: HTTP 429 (injected rate limit); the quota or rate limit of this API key is exhausted" in message
    assert len(list(JsonlStore(tmp_path / "run" / "scenes.jsonl").records())) == 2  # the third error stopped it
    assert sent <= 6 * 2  # two recorded errors and at most four items in flight, two attempts each; not all 12


def test_a_run_too_small_for_the_breaker_ends_in_the_quota_error(tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO[:1])
    with StandInServer(reply=scripted_reply) as server:
        server.inject(Fault("429", retry_after=None, path=CHAT_PATH), times=1000)
        with pytest.raises(VisalignError) as info:
            _build(server.base_url, corpus, tmp_path / "run", chat_retries=0)
    message = str(info.value)
    assert message.startswith("scenes stage stopped: all 1 request(s) failed and none has ever succeeded in this run")
    assert message.endswith(
        "last: HTTP 429 (injected rate limit); the quota or rate limit of this API key is exhausted; check the "
        "account's quota and billing, or lower concurrency/requests_per_second"
    )


def test_a_truncated_image_and_its_cache_entry_are_drawn_again(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO)
    out = tmp_path / "run"
    first = _build(server.base_url, corpus, out)
    assert first["export"] == {"examples": 2, "pairs": 6}
    record = next(JsonlStore(out / "images.jsonl").records())
    image = out / record["image"]
    whole = image.read_bytes()
    [entry] = [b for b in (out / "cache").rglob("*.bin") if b.read_bytes() == whole]
    for damaged in (image, entry):  # an interrupted copy of the run folder: the first half of each file
        damaged.write_bytes(whole[: len(whole) // 2])
    drawn = len(server.requests_to(IMAGES_PATH))
    second = _build(server.base_url, corpus, out)
    assert second["export"] == first["export"] and second["images"]["ok"] == 2
    assert JsonlStore(out / "images.jsonl").get(record["id"])["status"] == "ok"
    assert image.read_bytes() == whole and entry.read_bytes() == whole
    assert len(server.requests_to(IMAGES_PATH)) == drawn + 1  # the damaged entry was a miss: drawn once more


class _PaddedPngServer(StandInServer):
    """The stand-in, except that every PNG carries 16 zero bytes after IEND (a service's quirk)."""

    def image_generation(self, request, fault):
        payload = super().image_generation(request, fault)
        item = payload["data"][0]
        item["b64_json"] = base64.b64encode(base64.b64decode(item["b64_json"]) + b"\0" * 16).decode()
        return payload


def test_a_png_with_bytes_after_iend_is_stored_intact_and_not_redrawn(tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO)
    out = tmp_path / "run"
    with _PaddedPngServer(reply=scripted_reply) as server:
        first = _build(server.base_url, corpus, out)
        drawn = len(server.requests_to(IMAGES_PATH))
        second = _build(server.base_url, corpus, out)
        assert len(server.requests_to(IMAGES_PATH)) == drawn == 2  # intact on the resume: nothing redrawn
    assert first["export"] == second["export"] == {"examples": 2, "pairs": 6}
    stored = sorted((out / "images").glob("*.png"))
    assert len(stored) == 2 and all(png_intact(path) for path in stored)


def test_store_png_writes_a_padded_png_without_its_trailing_bytes(tmp_path):
    whole = render_png("a quiet harbour", 3, "48x32")
    stored = store_png(whole + b"\0" * 16, tmp_path, origin="scene s0")
    path = tmp_path / stored.path
    assert png_intact(path) and (stored.width, stored.height) == (48, 32)
    with Image.open(path) as a, Image.open(io.BytesIO(whole)) as b:
        assert a.mode == b.mode and a.tobytes() == b.tobytes()
    assert store_png(whole, tmp_path, origin="scene s0").sha256 == hashlib.sha256(whole).hexdigest()  # unchanged
