import json

import pytest
import yaml
from conftest import REPO, run_cli


@pytest.mark.slow
def test_offline_default_config_end_to_end(default_model_dir, tmp_path):
    """The shipped offline config (embedded model, scene cards), shrunk to one abstract so CI stays fast."""
    config = yaml.safe_load((REPO / "configs/vsfa_data_offline.yaml").read_text())
    config["corpus"]["limit"] = 1
    config["scenes"]["per_abstract"] = 1
    config["vqa"]["per_image"] = 3
    for section in ("scenes", "vqa"):
        config[section]["llm"]["max_new_tokens"] = 8  # too short for valid JSON: exercises the recorded fallback
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = run_cli("vsfa", "data", "--config", str(path), "--out", str(out), "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

    scenes = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(scenes) == 1 and scenes[0]["backend"] == "offline:default"
    assert scenes[0]["status"] == "ok" and scenes[0]["source"] == "template"
    assert scenes[0]["malformed"] and scenes[0]["malformed"][0]  # why the model's reply was not used
    images = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [(r["status"], r["placeholder"], r["width"]) for r in images] == [("ok", True, 448)]
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    assert stats["vqa"]["pairs_generated"] == 3
    assert stats["export"]["examples"] == 1
    llava = json.loads((out / "dataset" / "llava.json").read_text())
    assert (out / "dataset" / llava[0]["image"]).is_file()
    assert "placeholder scene cards" in (out / "dataset" / "README.md").read_text()


def test_template_pairs_never_repeat_when_more_are_asked_than_exist():
    from visalign.vsfa.fallback import grounded_pairs
    from visalign.vsfa.records import Scene

    scene = Scene(title="Pier", description="A grey pier at dusk with orange buoys near a small boat.",
                  setting="a harbour", objects=["pier", "buoy", "boat"], colours=["grey", "orange"])
    pairs = grounded_pairs(scene, ["objects", "colours", "objects"], 8)
    questions = [(p.question, p.answer) for p in pairs]
    assert len(questions) == len(set(questions)) == 4  # two types x two phrasings, then no more
    assert [p.type for p in pairs] == ["objects", "colours", "objects", "colours"]
