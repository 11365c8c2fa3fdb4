"""The export writes only pairs about a scene's current image, repairs torn image copies, and refuses an empty set."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import api_config, write_arxiv, write_yaml

from visalign.errors import VisalignError
from visalign.runs import JsonlStore
from visalign.testing import IMAGES_PATH, Fault
from visalign.vsfa import Shard, VsfaDataConfig, build_dataset, export_dataset, merge_shards

TWO = [
    ("2401.00001", "Drones over markets", "Quadcopter swarms hover over a crowded market square at noon.", "cs.RO"),
    ("2401.00002", "Lab robots", "A pipetting robot runs unattended protocols beside an open fume hood.", "cs.AI"),
]


def _config(base_url: str, corpus: Path, **overrides) -> VsfaDataConfig:
    # one scene per abstract keeps the runs small: two abstracts give two images of three pairs each
    return VsfaDataConfig.model_validate(api_config(base_url, corpus, scenes={"per_abstract": 1}, **overrides))


def _build(config: VsfaDataConfig, out: Path, **kwargs) -> dict:
    return build_dataset(config, out, show_progress=False, **kwargs)


def test_a_scene_whose_image_is_lost_and_whose_redraw_fails_is_left_out_not_a_refusal_forever(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO)
    out = tmp_path / "run"
    config = _config(server.base_url, corpus, cache_dir=str(tmp_path / "cache"))
    assert _build(config, out)["export"] == {"examples": 2, "pairs": 6}
    lost = next(JsonlStore(out / "images.jsonl").records())
    (out / lost["image"]).unlink()
    shutil.rmtree(tmp_path / "cache")  # nothing to serve the lost image from: it must be drawn again
    server.inject(Fault("corrupt_image", path=IMAGES_PATH))  # ... and that redraw fails, finally
    for _ in range(2):  # a re-run does the same: the failed image is final, and the export still completes
        stats = _build(config, out)
        assert JsonlStore(out / "images.jsonl").get(lost["id"])["status"] == "failed"
        assert JsonlStore(out / "vqa.jsonl").get(lost["id"])["image"] == lost["image"]  # the stale record stays
        assert stats["export"] == {"examples": 1, "pairs": 3}
        assert (stats["images"]["ok"], stats["images"]["failed"]) == (1, 1)
        assert (stats["vqa"]["images"], stats["vqa"]["ok_llm"], stats["vqa"]["without_current_image"]) == (1, 1, 1)
        assert stats["vqa"]["pairs_generated"] == 3
        llava = json.loads((out / "dataset" / "llava.json").read_text())
        assert [item["id"] for item in llava] != [] and lost["id"] not in {item["id"] for item in llava}
    assert len(server.requests_to(IMAGES_PATH)) == 3  # two in run 1, the failed redraw in run 2, none in run 3


def test_export_replaces_a_torn_image_in_the_dataset_folder(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO)
    out = tmp_path / "run"
    _build(_config(server.base_url, corpus), out)
    record = next(JsonlStore(out / "images.jsonl").records())
    source, copy = out / record["image"], out / "dataset" / record["image"]
    whole = source.read_bytes()
    copy.unlink()  # a separate file (not a link to the source), cut short as a killed copy leaves it
    copy.write_bytes(whole[:100])
    stats = export_dataset(out)
    assert stats["export"] == {"examples": 2, "pairs": 6}
    assert copy.read_bytes() == whole and len(whole) > 100
    assert sorted(p.name for p in copy.parent.iterdir()) == sorted(
        Path(r["image"]).name for r in JsonlStore(out / "images.jsonl").records()
    )  # no temporary file left behind


def _other_filesystem() -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary folder, so that hard links fail")
    return Path(tempfile.mkdtemp(dir=shm))


def test_merge_across_filesystems_copies_and_replaces_a_torn_image(server, tmp_path):
    shm = _other_filesystem()
    try:
        corpus = write_arxiv(shm / "c.jsonl", TWO)
        config = _config(server.base_url, corpus)
        shards = [shm / f"s{index}" for index in range(2)]
        for index, shard in enumerate(shards):
            _build(config, shard, shard=Shard(index, 2))
        merged = tmp_path / "merged"
        assert merge_shards(shards, merged)["export"] == {"examples": 2, "pairs": 6}
        victim = sorted((merged / "images").glob("*.png"))[0]
        source = next(s / "images" / victim.name for s in shards if (s / "images" / victim.name).is_file())
        assert victim.stat().st_ino != source.stat().st_ino  # copied, since the link failed
        victim.write_bytes(victim.read_bytes()[:100])  # what a kill during the old, in-place copy left
        (merged / "dataset" / "images" / victim.name).unlink()
        assert merge_shards(shards, merged)["export"] == {"examples": 2, "pairs": 6}
        assert victim.read_bytes() == source.read_bytes() and victim.stat().st_size > 100
        assert sorted(p.name for p in (merged / "images").iterdir()) == sorted(
            p.name for s in shards for p in (s / "images").glob("*.png")
        )  # no temporary file left behind
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_merge_keeps_the_good_copy_when_another_shard_holds_a_damaged_one(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", TWO)
    config = _config(server.base_url, corpus)
    shards = [tmp_path / f"s{index}" for index in range(2)]
    for index, shard in enumerate(shards):
        _build(config, shard, shard=Shard(index, 2))
    good = next((shards[1] / "images").glob("*.png"))
    (shards[0] / "images" / good.name).write_bytes(good.read_bytes()[:100])  # a stray torn copy, merged first
    assert merge_shards(shards, tmp_path / "merged")["export"] == {"examples": 2, "pairs": 6}
    assert (tmp_path / "merged" / "images" / good.name).read_bytes() == good.read_bytes()


def test_a_run_where_every_abstract_failed_raises_instead_of_writing_an_empty_set(server, tmp_path):
    corpus = write_arxiv(tmp_path / "c.jsonl", [("a1", "T", "MALFORMED-ALWAYS a robot arm in a lab.", "cs.RO")])
    out = tmp_path / "run"
    with pytest.raises(VisalignError) as refused:
        _build(_config(server.base_url, corpus), out)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{out}: no question-answer pair survived to export (ok: scenes 0 of 1 abstracts, ")
    assert "images 0 of 0, VQA 0 of 0; 0 of 0 pairs rejected by the neutrality filter)" in message
    assert message.endswith("check that the services answer, then run the same command again")
    assert JsonlStore(out / "scenes.jsonl").get("a1")["status"] == "failed"  # the records are kept
    assert not (out / "dataset" / "llava.json").exists()


def test_the_cli_shows_an_empty_export_as_one_line_and_exit_2(server, tmp_path, capsys):
    from cli_in_process import run_in_process

    corpus = write_arxiv(tmp_path / "c.jsonl", [("a1", "T", "MALFORMED-ALWAYS a robot arm in a lab.", "cs.RO")])
    path = write_yaml(tmp_path / "c.yaml", api_config(server.base_url, corpus, scenes={"per_abstract": 1}))
    args = ["vsfa", "data", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"]
    code, out, err = run_in_process(args, capsys)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {tmp_path / 'o'}: no question-answer pair survived to export (ok: scenes 0 ")
