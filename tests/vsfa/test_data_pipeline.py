import base64
import hashlib
import json
from pathlib import Path

import pytest
from conftest import api_config, write_arxiv

from visalign.runs import JsonlStore
from visalign.testing import CHAT_PATH, IMAGES_PATH, Fault, StandInServer
from visalign.vsfa import Shard, VsfaDataConfig, build_dataset, merge_shards


def build(config: dict, out: Path) -> dict:
    return build_dataset(VsfaDataConfig.model_validate(config), out, show_progress=False)


def vqa_requests(server):
    return [r for r in server.requests_to(CHAT_PATH) if r.status == 200 and "pairs" in json.dumps(r.body)[:4000]]


@pytest.mark.parametrize("image_format", ["b64_json", "url"])
def test_full_pipeline_over_openai_backends(server, corpus, tmp_path, image_format):
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus, image_format=image_format), out)
    # 6 abstracts x 2 scenes x 3 pairs, nothing malformed or rejected.
    assert stats["scenes"]["ok_llm"] == 6 and stats["scenes"]["scenes"] == 12
    assert stats["images"]["ok"] == 12 and stats["images"]["placeholders"] == 0
    assert stats["export"] == {"examples": 12, "pairs": 36}
    assert stats["vqa"]["pairs_rejected_by_neutrality"] == 0

    dataset = out / "dataset"
    llava = json.loads((dataset / "llava.json").read_text())
    sharegpt = json.loads((dataset / "sharegpt.json").read_text())
    assert len(llava) == len(sharegpt) == 12
    first = llava[0]
    assert first["id"] == "2401.00001:s0"
    assert first["image"].startswith("images/") and (dataset / first["image"]).is_file()
    assert [t["from"] for t in first["conversations"]] == ["human", "gpt"] * 3
    assert first["conversations"][0]["value"].startswith("<image>\nQuestion 0")
    assert sum(t["value"].count("<image>") for t in first["conversations"]) == 1
    item = sharegpt[0]
    assert [m["role"] for m in item["messages"]] == ["user", "assistant"] * 3
    assert item["messages"][0]["content"].startswith("<image>Question 0")
    assert item["images"] == [first["image"]]
    info = json.loads((dataset / "dataset_info.json").read_text())
    assert info["visalign_vsfa"]["file_name"] == "sharegpt.json"
    assert info["visalign_vsfa"]["columns"] == {"messages": "messages", "images": "images"}

    # The VQA requests carried the stored image as an image part (the model saw the picture it asks about).
    requests = vqa_requests(server)
    assert len(requests) == 12
    stored = {p.name.removesuffix(".png") for p in (dataset / "images").glob("*.png")}
    seen = set()
    for request in requests:
        parts = request.body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        assert url.startswith("data:image/png;base64,")
        seen.add(hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest())
    assert seen == stored
    if image_format == "url":
        assert len([r for r in server.requests if r.path.startswith("/files/")]) == len(server.requests_to(IMAGES_PATH))

    # The parquet copy loads with datasets and holds the same rows with real images.
    from datasets import load_dataset

    parquet = load_dataset("parquet", data_files=str(dataset / "data" / "*.parquet"), split="train")
    assert parquet.num_rows == 12
    assert parquet[0]["messages"] == item["messages"]
    assert parquet[0]["images"][0].size == (64, 64)
    card = (dataset / "README.md").read_text()
    assert "| export |  | 12 examples, 36 pairs |" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["shard"] == "0/1"
    assert manifest["config"]["scenes"]["llm"]["model"] == "gpt-4o-mini"


def test_faults_still_end_with_a_complete_dataset(corpus, tmp_path):
    from standin import scripted_reply

    with StandInServer(reply=scripted_reply) as server:
        server.inject(
            Fault("429", retry_after="0.2", path=CHAT_PATH),
            Fault("500", path=CHAT_PATH),
            Fault("timeout", delay_s=1.5, path=CHAT_PATH),
            Fault("invalid_json", path=CHAT_PATH),
            Fault("truncated_json", path=CHAT_PATH),
            Fault("slow", delay_s=0.3, path=CHAT_PATH),
            Fault("503", path=IMAGES_PATH),
            Fault("429", retry_after="0.2", path=IMAGES_PATH),
        )
        config = api_config(server.base_url, corpus)
        config["scenes"]["llm"]["timeout_s"] = 1.0
        stats = build(config, tmp_path / "run")
        statuses = json.dumps(server.stats()["by_status"])
    assert stats["export"] == {"examples": 12, "pairs": 36}, statuses
    assert stats["scenes"]["service_errors"] == 0 and stats["vqa"]["service_errors"] == 0
    assert server.stats()["by_status"]["429"] == 2 and server.stats()["by_status"]["500"] == 1


def test_malformed_output_is_reasked_then_recorded_as_failure(server, tmp_path):
    corpus = write_arxiv(
        tmp_path / "c.jsonl",
        [
            ("a1", "Once", "MALFORMED-ONCE a drone over a square in the rain.", "cs.RO"),
            ("a2", "Always", "MALFORMED-ALWAYS a robot arm in a lab.", "cs.RO"),
            ("a3", "Fine", "A camera on a pole above a quiet street.", "cs.CV"),
        ],
    )
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus), out)
    scenes = {r["id"]: r for r in JsonlStore(out / "scenes.jsonl").records()}
    assert (scenes["a1"]["status"], scenes["a1"]["attempts"], len(scenes["a1"]["malformed"])) == ("ok", 2, 1)
    assert scenes["a2"]["status"] == "failed"
    assert scenes["a2"]["reason"] == "no valid JSON after 2 attempt(s): no JSON object in the reply"
    assert scenes["a3"]["attempts"] == 1
    assert stats["scenes"]["failed"] == 1 and stats["scenes"]["malformed_replies"] == 3
    assert stats["export"]["examples"] == 4  # a1 and a3, two scenes each


def test_template_fallback_records_its_source(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("a2", "Always", "MALFORMED-ALWAYS a robot arm in a lab.", "cs")])
    out = tmp_path / "run"
    config = api_config(server.base_url, corpus, scenes={"template_fallback": True})
    stats = build(config, out)
    record = JsonlStore(out / "scenes.jsonl").get("a2")
    assert (record["status"], record["source"], len(record["scenes"])) == ("ok", "template", 2)
    assert stats["scenes"]["ok_template"] == 1


def test_copied_example_shape_is_malformed_and_falls_back_to_templates(server, tmp_path):
    """A reply that returns the prompt's own example ("title": "short name") must not become training data."""
    corpus = write_arxiv(tmp_path / "c.jsonl", [("e1", "Echo", "ECHO-EXAMPLE a drone above a harbour.", "cs")])
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus, scenes={"template_fallback": True}), out)
    record = JsonlStore(out / "scenes.jsonl").get("e1")
    assert (record["status"], record["source"], record["attempts"]) == ("ok", "template", 2)
    assert all("copies the example shape" in reason for reason in record["malformed"])
    assert [scene["source"] for scene in record["scenes"]] == ["template", "template"]
    assert "short name" not in json.dumps(record["scenes"])
    assert stats["scenes"]["ok_template"] == 1 and stats["scenes"]["scenes_templated"] == 2


def test_copied_example_pairs_are_dropped(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("p1", "Pairs", "ECHO-PAIRS a camera on a pole.", "cs")])
    out = tmp_path / "run"
    build(api_config(server.base_url, corpus, vqa={"template_fallback": True}), out)
    records = list(JsonlStore(out / "vqa.jsonl").records())
    assert len(records) == 2
    for record in records:
        assert (record["status"], record["source"]) == ("ok", "template")
        assert "own question and answer" in record["malformed"][0]
        assert [pair["answer"] for pair in record["pairs"] if pair["answer"] == "..."] == []


def test_template_pairs_stop_at_the_distinct_ones_and_the_stats_say_so(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("p1", "Pairs", "ECHO-PAIRS a camera on a pole.", "cs")])
    out = tmp_path / "run"
    vqa = {"template_fallback": True, "types": ["colours", "counting"], "per_image": 6}
    stats = build(api_config(server.base_url, corpus, vqa=vqa), out)
    records = list(JsonlStore(out / "vqa.jsonl").records())
    assert [(r["source"], r["asked"], len(r["pairs"])) for r in records] == [("template", 6, 4)] * 2
    for record in records:
        assert len({(p["question"], p["answer"]) for p in record["pairs"]}) == 4  # two types x two phrasings
    assert stats["vqa"]["template_capped"] == 2 and stats["export"] == {"examples": 2, "pairs": 8}


def test_short_reply_is_reasked_then_topped_up_from_templates(server, tmp_path):
    corpus = write_arxiv(
        tmp_path / "c.jsonl",
        [("s1", "Once", "SHORT-ONCE a robot arm in a lab.", "cs"), ("s2", "Always", "SHORT-ALWAYS a lab.", "cs")],
    )
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus, scenes={"per_abstract": 3, "template_fallback": True}), out)
    once, always = JsonlStore(out / "scenes.jsonl").get("s1"), JsonlStore(out / "scenes.jsonl").get("s2")
    assert (once["source"], once["attempts"], len(once["scenes"])) == ("llm", 2, 3)
    assert once["malformed"] == ["1 usable scene(s) of the 3 asked for"]
    assert (always["source"], len(always["scenes"])) == ("llm+template", 3)
    assert [scene["source"] for scene in always["scenes"]] == ["llm", "template", "template"]
    assert [scene["index"] for scene in always["scenes"]] == [0, 1, 2]
    assert stats["scenes"]["ok_llm_topped_up"] == 1 and stats["scenes"]["scenes_templated"] == 2


def test_short_reply_without_fallback_keeps_the_scenes_it_got(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("s2", "Always", "SHORT-ALWAYS a lab.", "cs")])
    out = tmp_path / "run"
    build(api_config(server.base_url, corpus, scenes={"per_abstract": 3}), out)
    record = JsonlStore(out / "scenes.jsonl").get("s2")
    assert (record["status"], record["source"], len(record["scenes"])) == ("ok", "llm", 1)
    assert len(record["malformed"]) == 2


def test_neutrality_filter_rejects_pairs_and_reports_rate(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("u1", "Words", "UNSAFE-WORDS a crowded platform at night.", "cs")])
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus), out)
    # Pairs 0 and 2 of each image use safety words (see standin.pairs_json): 2 of 3 rejected per image.
    assert stats["vqa"]["pairs_generated"] == 6
    assert stats["vqa"]["pairs_rejected_by_neutrality"] == 4
    assert stats["vqa"]["neutrality_rejection_rate"] == pytest.approx(4 / 6, abs=1e-4)
    assert stats["vqa"]["rejected_terms"] == {"dangerous": 4, "harmful": 4, "policies": 4, "safety": 4, "violate": 4}
    llava = json.loads((out / "dataset" / "llava.json").read_text())
    assert all("harm" not in t["value"] for item in llava for t in item["conversations"])
    assert [len(item["conversations"]) for item in llava] == [2, 2]


def test_corrupt_image_is_a_failure_record_for_that_scene(server, corpus, tmp_path):
    server.inject(Fault("corrupt_image", path=IMAGES_PATH))
    out = tmp_path / "run"
    stats = build(api_config(server.base_url, corpus), out)
    failed = [r for r in JsonlStore(out / "images.jsonl").records() if r["status"] == "failed"]
    assert len(failed) == 1 and "not a valid image" in failed[0]["reason"]
    assert stats["images"]["failed"] == 1 and stats["export"]["examples"] == 11


def test_shards_merge_to_the_unsharded_dataset(server, corpus, tmp_path):
    config = VsfaDataConfig.model_validate(api_config(server.base_url, corpus))
    build_dataset(config, tmp_path / "whole", show_progress=False)
    parts = []
    for index in range(3):
        parts.append(tmp_path / f"shard{index}")
        build_dataset(config, parts[-1], shard=Shard(index, 3), show_progress=False)
    sizes = [len(JsonlStore(p / "corpus.jsonl")) for p in parts]
    assert sum(sizes) == 6 and max(sizes) < 6
    merged = merge_shards(parts, tmp_path / "merged")
    assert merged["export"] == {"examples": 12, "pairs": 36}
    for name in ("llava.json", "sharegpt.json"):
        assert (tmp_path / "merged/dataset" / name).read_bytes() == (tmp_path / "whole/dataset" / name).read_bytes()

    from visalign.errors import VisalignError

    with pytest.raises(VisalignError, match=r"missing \[1\]"):
        merge_shards([parts[0], parts[2]], tmp_path / "bad")


def test_dry_run_plans_cost_and_touches_nothing(server, corpus, tmp_path):
    out = tmp_path / "run"
    config = api_config(server.base_url, corpus)
    result = build_dataset(VsfaDataConfig.model_validate(config), out, dry_run=True)
    plan = result["plan"]
    assert (plan["abstracts"], plan["scenes"]) == (6, 12)
    assert [plan["stages"][s]["remaining"] for s in ("scenes", "images", "vqa")] == [6, 12, 12]
    assert plan["stages"]["images"]["est_cost_usd"] == pytest.approx(12 * 0.04)
    assert plan["est_cost_usd"] > plan["stages"]["images"]["est_cost_usd"]
    assert not out.exists() and server.requests == []


def test_a_vqa_request_refused_by_the_service_is_counted_and_the_export_finishes(corpus, tmp_path):
    from standin import scripted_reply

    from visalign.testing import RejectedRequest

    def reply(request):
        text = json.dumps(request["messages"])
        if "question-answer" in text and "an autonomous ship" in text.lower():
            raise RejectedRequest("the provider's filter declines this one")  # a 400: not retried
        return scripted_reply(request)

    with StandInServer(reply=reply) as refusing:
        config = api_config(refusing.base_url, corpus)
        config["vqa"]["llm"]["concurrency"] = 1
        stats = build(config, tmp_path / "run")
    failed = [r for r in JsonlStore(tmp_path / "run" / "vqa.jsonl").records() if r["status"] != "ok"]
    assert failed and stats["vqa"]["service_errors"] == len(failed)
    assert (tmp_path / "run" / "dataset" / "stats.json").is_file()
    assert stats["export"]["examples"] == stats["images"]["ok"] - len(failed)


@pytest.mark.parametrize("failure", ["rejected", "connection dropped"])
def test_one_item_that_always_fails_does_not_block_a_resume(corpus, tmp_path, failure):
    from standin import scripted_reply

    from visalign.testing import RejectedRequest

    def reply(request):
        text = json.dumps(request["messages"])
        if "question-answer" not in text and "an autonomous ship" in text.lower():  # one abstract's scenes
            if failure == "rejected":
                raise RejectedRequest("the provider's filter declines this one")  # a 400
            raise RuntimeError("the server crashes on this one")  # the connection drops: no status at all
        return scripted_reply(request)

    with StandInServer(reply=reply) as server:
        config = api_config(server.base_url, corpus)
        config["scenes"]["llm"]["max_retries"] = 0
        first = build(config, tmp_path / "run")
        second = build(config, tmp_path / "run")  # the resume has that one abstract left, and it fails again
    scenes = list(JsonlStore(tmp_path / "run" / "scenes.jsonl").records())
    assert [r["status"] for r in scenes].count("error") == 1 and len(scenes) == 6
    assert first["scenes"]["service_errors"] == second["scenes"]["service_errors"] == 1
    assert second["export"]["examples"] == first["export"]["examples"] == 10  # 5 abstracts x 2 scenes


def test_a_dead_service_still_stops_a_run_too_small_to_reach_the_breaker(tmp_path):
    from standin import scripted_reply

    state = {"up": False}

    def reply(request):
        if not state["up"]:
            raise RuntimeError("down")  # every connection drops: the service is dead, not one item
        return scripted_reply(request)

    corpus = write_arxiv(tmp_path / "c.jsonl", [("d1", "Dead", "A drone hovers over a quiet square.", "cs.RO")])
    with StandInServer(reply=reply) as server:
        config = api_config(server.base_url, corpus)
        config["scenes"]["llm"]["max_retries"] = 0
        from visalign.errors import VisalignError

        with pytest.raises(VisalignError, match=r"^scenes stage stopped: all 1 request\(s\) failed and none has "
                                                r"ever succeeded in this run; last: POST .*connection failed") as info:
            build(config, tmp_path / "run")
        assert "\n" not in str(info.value)
        state["up"] = True  # the service comes back: the error record is tried again and the run completes
        stats = build(config, tmp_path / "run")
    assert stats["export"] == {"examples": 2, "pairs": 6} and stats["scenes"]["service_errors"] == 0


def test_scenes_with_only_blank_objects_are_malformed_not_stored(corpus, tmp_path):
    from standin import scenes_json, scripted_reply

    def reply(request):
        text = json.dumps(request["messages"])
        if "question-answer" not in text and "a cloned voice" in text.lower():
            scenes = json.loads(scenes_json("voice", 2))
            for scene in scenes["scenes"]:
                scene["objects"] = [" ", ""]  # blank entries only: nothing to draw
            return json.dumps(scenes)
        return scripted_reply(request)

    with StandInServer(reply=reply) as server:
        stats = build(api_config(server.base_url, corpus), tmp_path / "run")
    records = list(JsonlStore(tmp_path / "run" / "scenes.jsonl").records())
    voice = [r for r in records if r["status"] != "ok"]
    assert len(voice) == 1 and voice[0]["status"] == "failed"
    assert all(scene["objects"] for r in records if r["status"] == "ok" for scene in r["scenes"])
    assert stats["images"]["ok"] == 10 and stats["export"]["examples"] == 10


def test_shards_that_read_different_corpus_files_are_not_merged(server, corpus, tmp_path):
    config = VsfaDataConfig.model_validate(api_config(server.base_url, corpus))
    build_dataset(config, tmp_path / "shard0", shard=Shard(0, 2), show_progress=False)
    with corpus.open("a") as handle:  # the corpus file grows between the two shard runs; the config is the same
        handle.write(json.dumps({"id": "2401.00007", "title": "Late", "abstract": "A late abstract about cranes.",
                                 "categories": "cs.RO"}) + "\n")
    build_dataset(config, tmp_path / "shard1", shard=Shard(1, 2), show_progress=False)

    from visalign.errors import VisalignError

    with pytest.raises(VisalignError, match="read different corpus files") as refused:
        merge_shards([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged")
    assert "shard0" in str(refused.value) and "shard1" in str(refused.value)
    assert not (tmp_path / "merged").exists()


def test_a_deleted_image_is_redrawn_by_the_next_run(server, corpus, tmp_path):
    config = api_config(server.base_url, corpus)
    first = build(config, tmp_path / "run")
    llava = (tmp_path / "run" / "dataset" / "llava.json").read_bytes()
    victim = sorted((tmp_path / "run" / "images").glob("*.png"))[0]
    victim.unlink()
    served = len(server.requests)
    second = build(config, tmp_path / "run")
    assert victim.is_file()  # drawn again (the stand-in draws the same prompt the same way)
    assert second["export"] == first["export"] == {"examples": 12, "pairs": 36}
    assert (tmp_path / "run" / "dataset" / "llava.json").read_bytes() == llava
    # the same image came back, so its Q&A pairs still hold: nothing but that one drawing was asked for
    assert [r.path for r in server.requests[served:]] in ([], [IMAGES_PATH])


def test_a_truncated_image_is_redrawn_by_the_next_run(server, corpus, tmp_path):
    config = api_config(server.base_url, corpus)
    first = build(config, tmp_path / "run")
    llava = (tmp_path / "run" / "dataset" / "llava.json").read_bytes()
    victim = sorted((tmp_path / "run" / "images").glob("*.png"))[0]
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])  # an interrupted copy: the file is there, the image is not
    served = len(server.requests)
    second = build(config, tmp_path / "run")
    assert victim.read_bytes() == whole and hashlib.sha256(whole).hexdigest() == victim.stem
    # that one drawing at most (the response cache may hold it); its pairs still hold, so no chat request
    assert [r.path for r in server.requests[served:]] in ([], [IMAGES_PATH])
    assert second["images"]["ok"] == 12
    assert second["export"] == first["export"] == {"examples": 12, "pairs": 36}
    assert (tmp_path / "run" / "dataset" / "llava.json").read_bytes() == llava


def test_pairs_about_an_image_that_was_replaced_are_written_again(server, corpus, tmp_path):
    import io

    from PIL import Image

    from visalign.vsfa.imagegen import store_png

    config = api_config(server.base_url, corpus)
    build(config, tmp_path / "run")
    images = JsonlStore(tmp_path / "run" / "images.jsonl")
    old = next(iter(images.records()))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    new = store_png(buffer.getvalue(), tmp_path / "run", origin="test")
    with images:  # another drawing of the scene (a redraw that came out differently)
        images.append({**old, "image": new.path, "sha256": new.sha256})
    served = len(vqa_requests(server))
    build(config, tmp_path / "run")
    assert len(vqa_requests(server)) == served + 1  # only that scene's pairs are asked for again
    assert JsonlStore(tmp_path / "run" / "vqa.jsonl").get(old["id"])["image"] == new.path
    llava = json.loads((tmp_path / "run" / "dataset" / "llava.json").read_text())
    assert new.path in {entry["image"] for entry in llava} and old["image"] not in {e["image"] for e in llava}


def test_resuming_on_an_edited_corpus_is_refused_and_restoring_it_resumes(server, corpus, tmp_path):
    from visalign.errors import VisalignError

    config = api_config(server.base_url, corpus)
    build(config, tmp_path / "run")
    original = corpus.read_bytes()
    write_arxiv(corpus, [("2402.00001", "Other", "A different corpus: cranes over a harbour at dusk.", "cs.RO")])
    with pytest.raises(VisalignError, match=r"changed since this run began: corpus"):
        build(config, tmp_path / "run")
    assert [r["id"] for r in JsonlStore(tmp_path / "run" / "corpus.jsonl").records()] == [
        "2401.00001", "2401.00002", "2401.00003", "2401.00004", "2401.00005", "2401.00006"]
    corpus.write_bytes(original)
    assert build(config, tmp_path / "run")["export"] == {"examples": 12, "pairs": 36}
