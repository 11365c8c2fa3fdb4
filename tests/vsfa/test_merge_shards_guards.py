"""merge-shards refuses a shard whose run has not finished, and names a damaged shard image and how to redraw it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, api_config, run_cli, write_yaml

from visalign.errors import VisalignError
from visalign.runs import JsonlStore
from visalign.testing import IMAGES_PATH, Fault
from visalign.vsfa import Shard, VsfaDataConfig, build_dataset, merge_shards


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _rerun(shard: Path, spec: str) -> str:
    return f"`visalign vsfa data --config <its config> --out {shard} --shard {spec}`"


def _examples(shard: Path) -> int:
    return json.loads((shard / "dataset" / "stats.json").read_text())["export"]["examples"]


def _kill_during_the_image_stage(config: Path, out: Path, spec: str) -> None:
    """Start ``vsfa data`` for a shard and SIGKILL it once its scenes are done and its image requests hang."""
    args = [sys.executable, "-m", "visalign", "vsfa", "data", "--config", str(config), "--out", str(out),
            "--shard", spec, "--no-progress"]  # fmt: skip
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        abstracts = len(_lines(out / "corpus.jsonl"))
        if abstracts and len(_lines(out / "scenes.jsonl")) == abstracts:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()


def test_a_shard_killed_before_it_finished_is_refused_until_its_run_finishes(server, corpus, tmp_path):
    settings = api_config(server.base_url, corpus)
    settings["images"]["generator"]["timeout_s"] = 60  # the hanging image requests outlast the kill
    config = write_yaml(tmp_path / "data.yaml", settings)
    shards = [tmp_path / "s0", tmp_path / "s1"]
    done = run_cli("vsfa", "data", "--config", str(config), "--out", str(shards[0]), "--shard", "0/2", "--no-progress")
    assert done.returncode == 0, done.stderr
    server.inject(Fault("slow", delay_s=30, path=IMAGES_PATH), times=50)
    _kill_during_the_image_stage(config, shards[1], "1/2")
    assert _lines(shards[1] / "scenes.jsonl") and not (shards[1] / "dataset").exists()

    merged = tmp_path / "merged"
    refused = run_cli("vsfa", "merge-shards", str(shards[0]), str(shards[1]), "--out", str(merged))
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr.strip().splitlines() == [
        f"error: merge-shards: shard 1/2 ({shards[1]}) has not finished (no dataset/stats.json: its run stopped "
        f"before the export); run {_rerun(shards[1], '1/2')} again to finish it, then merge-shards again"
    ]
    assert not merged.exists()  # refused before anything was written

    server.clear_faults()  # what the message says: finish the shard's run, then merge
    finished = run_cli("vsfa", "data", "--config", str(config), "--out", str(shards[1]), "--shard", "1/2",
                       "--no-progress")  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    result = run_cli("vsfa", "merge-shards", str(shards[0]), str(shards[1]), "--out", str(merged))
    assert result.returncode == 0, result.stderr
    llava = json.loads((merged / "dataset" / "llava.json").read_text())
    assert len(llava) == _examples(shards[0]) + _examples(shards[1]) > _examples(shards[0]) > 0


def test_a_shard_stopped_by_a_dead_image_service_is_refused(server, corpus, tmp_path):
    config = VsfaDataConfig.model_validate(api_config(server.base_url, corpus))
    shards = [tmp_path / "s0", tmp_path / "s1"]
    build_dataset(config, shards[0], shard=Shard(0, 2), show_progress=False)
    server.inject(Fault("500", path=IMAGES_PATH), times=200)
    with pytest.raises(VisalignError):  # the stage stops after three service errors, before the export
        build_dataset(config, shards[1], shard=Shard(1, 2), show_progress=False)
    with pytest.raises(VisalignError) as refused:
        merge_shards(shards, tmp_path / "merged")
    assert str(refused.value).startswith(f"merge-shards: shard 1/2 ({shards[1]}) has not finished")


def test_a_damaged_shard_image_names_the_shards_file_and_the_run_that_redraws_it(server, corpus, tmp_path):
    config = VsfaDataConfig.model_validate(api_config(server.base_url, corpus))
    shards = [tmp_path / "s0", tmp_path / "s1"]
    for index, shard in enumerate(shards):
        build_dataset(config, shard, shard=Shard(index, 2), show_progress=False)
    record = json.loads((shards[1] / "dataset" / "llava.json").read_text())[0]  # an image the shard exports
    damaged = shards[1] / record["image"]
    whole = damaged.read_bytes()
    damaged.write_bytes(b"")
    merged = tmp_path / "merged"
    for _ in range(2):  # the same advice each time: merging again cannot redraw the image
        with pytest.raises(VisalignError) as refused:
            merge_shards(shards, merged)
        assert str(refused.value) == (
            f"{damaged}: image of {record['id']} in shard 1/2 is missing or damaged; run {_rerun(shards[1], '1/2')} "
            "again to redraw it, then merge-shards again"
        )
    build_dataset(config, shards[1], shard=Shard(1, 2), show_progress=False)  # what the message says to run
    assert damaged.read_bytes() == whole  # drawn again (the image cache serves it)
    stats = merge_shards(shards, merged)
    assert stats["export"]["examples"] == _examples(shards[0]) + _examples(shards[1])
    assert JsonlStore(merged / "images.jsonl").get(record["id"])["image"] == record["image"]
