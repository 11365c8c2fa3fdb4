"""A model that writes ``<image>`` in a question or answer: the pair is rejected with its reason, never exported."""

import json
from pathlib import Path

from conftest import api_config, write_arxiv
from standin import scripted_reply

from visalign.runs import JsonlStore
from visalign.testing import StandInServer
from visalign.vsfa import VsfaDataConfig, build_dataset, export_dataset
from visalign.vsfa.training.dataset import load_training_set

ROWS = [("a1", "Drones", "A drone hovers over a crowded market square at noon.", "cs.RO")]


def marker_reply(request: dict) -> str:
    """Scripted replies, but VQA pair 1 asks about "the <image>" and pair 2 answers with the marker."""
    text = scripted_reply(request)
    reply = json.loads(text)
    if "pairs" not in reply:
        return text
    reply["pairs"][1]["question"] = "What is shown in the <image>?"
    reply["pairs"][2]["answer"] = "<image> A drone above a market."
    return json.dumps(reply)


def build(base_url: str, corpus: Path, out: Path) -> dict:
    config = VsfaDataConfig.model_validate(api_config(base_url, corpus, scenes={"per_abstract": 1}))
    return build_dataset(config, out, show_progress=False)


def markers_per_row(dataset: Path) -> tuple[list[int], list[int]]:
    llava = json.loads((dataset / "llava.json").read_text())
    sharegpt = json.loads((dataset / "sharegpt.json").read_text())
    return ([sum(t["value"].count("<image>") for t in row["conversations"]) for row in llava],
            [sum(m["content"].count("<image>") for m in row["messages"]) for row in sharegpt])  # fmt: skip


def test_pairs_that_write_the_image_marker_are_rejected_and_the_export_loads(tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", ROWS)
    out = tmp_path / "run"
    with StandInServer(reply=marker_reply) as server:
        stats = build(server.base_url, corpus, out)
    assert stats["export"] == {"examples": 1, "pairs": 1}
    assert stats["vqa"]["pairs_rejected_image_marker"] == 2 and stats["vqa"]["pairs_rejected_by_neutrality"] == 0
    [record] = JsonlStore(out / "vqa.jsonl").records()
    assert [(p["id"], p["terms"]) for p in record["rejected"]] == [("a1:s0:q1", []), ("a1:s0:q2", [])]
    assert all(p["reason"].startswith("the text holds the '<image>' marker") for p in record["rejected"])
    assert markers_per_row(out / "dataset") == ([1], [1])
    assert len(load_training_set(out / "dataset" / "llava.json").examples) == 1  # refused a second marker before
    assert "2 for an '<image>' marker in their text" in (out / "dataset" / "README.md").read_text()


def test_the_export_screens_a_pair_with_the_marker_kept_by_an_older_version(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", ROWS)
    out = tmp_path / "run"
    assert build(server.base_url, corpus, out)["export"] == {"examples": 1, "pairs": 3}
    store = JsonlStore(out / "vqa.jsonl")
    [record] = store.records()
    record["pairs"][0]["answer"] = "The <image> shows a drone."  # as a record written before the check holds it
    store.append(record)
    store.close()
    stats = export_dataset(out)
    assert stats["export"] == {"examples": 1, "pairs": 2} and stats["vqa"]["pairs_rejected_image_marker"] == 1
    assert markers_per_row(out / "dataset") == ([1], [1])
    assert len(load_training_set(out / "dataset" / "sharegpt.json").examples) == 1
