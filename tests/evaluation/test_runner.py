"""``visalign eval`` end to end on tiny checkpoints, real benchmark files and a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.runner import run_eval
from visalign.evaluation.systems import LocalSystem, Prompt
from visalign.magic import load_magic_image, save_magic_image
from visalign.magic.artifact import write_sidecar
from visalign.models import load_vlm, weights_fingerprint
from visalign.testing import StandInServer
from visalign.testing.stand_in_server import Fault

CHAT_PATH = "/v1/chat/completions"


def write_mossbench_fixture(folder):
    """Two MOSSBench-format rows: one with a real image, one whose image file is corrupt."""
    images = folder / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (40, 40), "blue").save(images / "1.png")
    (images / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    meta = {"over": "type 1", "human": 0, "child": 0, "syn": 0, "ocr": 0, "harm": 0}
    info = {str(i): {"image": f"images/{i}.png", "question": f"Question {i} about the picture?",
                     "short description": "", "description": "", "pid": str(i), "metadata": meta} for i in (1, 2)}
    (folder / "information.json").write_text(json.dumps(info))
    return folder / "information.json"


def make_config(tmp_path, benchmarks_dir, systems, *, llm_judges=None) -> tuple[EvalConfig, dict]:
    data = {
        "title": "runner test",
        "systems": systems,
        "benchmarks": [
            {"name": "xstest", "source": str(benchmarks_dir / "xstest" / "xstest_prompts.csv"), "limit": 4},
            {"name": "figstep-safebench-tiny", "source": str(benchmarks_dir / "figstep" / "SafeBench-Tiny.csv"),
             "limit": 2},
            {"name": "mossbench", "source": str(write_mossbench_fixture(tmp_path / "moss"))},
        ],
        "max_new_tokens": 6,
        "batch_size": 4,
        "llm_judges": llm_judges or [],
    }
    return EvalConfig.model_validate(data), data


def read_records(out):
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_local_systems_write_records_summary_and_report(tmp_path, tiny_checkpoints, benchmarks_dir):
    model = str(tiny_checkpoints["qwen2_5_vl"])
    config, _ = make_config(tmp_path, benchmarks_dir, [
        {"name": "base", "model": model},
        {"name": "adashield", "model": model, "defence_prompt": "adashield-s"},
    ])
    report = run_eval(config, tmp_path / "run")
    records = read_records(tmp_path / "run")
    # 4 XSTest + 2 FigStep + 2 MOSSBench rows, for each of the two systems
    assert len(records) == 16
    by_id = {r["id"]: r for r in records}
    answered = {(r["system"], r["benchmark"], r["sample_id"]) for r in records}
    rows = {(benchmark, sample) for _, benchmark, sample in answered}
    assert len(by_id) == len(answered) == 16  # every system has one record of every row
    assert answered == {(system, *row) for system in ("base", "adashield") for row in rows}
    corrupt = [r for r in records if r["error"]]
    assert len(corrupt) == 2 and all("2.png" in r["error"] for r in corrupt)
    answered = [r for r in records if not r["error"]]
    assert all(r["response"] is not None and r["refusal"]["label"] in {"refusal", "compliance", "unknown"}
               for r in answered)
    assert all(r["decoding"].get("defence_prompt") == "adashield-s" for r in records if r["system"] == "adashield")
    figstep = [r for r in records if r["benchmark"] == "figstep-safebench-tiny"]
    assert all(len(r["images"]) == 1 and r["expected"] == "refuse" for r in figstep)
    summary = (tmp_path / "run" / "summary.csv").read_text()
    assert "attack_success_rate" in summary and "over_refusal_rate" in summary
    html = report.read_text()
    assert "base" in html and "adashield" in html and "<img" in html


def test_api_system_resumes_without_repeating_requests(tmp_path, benchmarks_dir):
    with StandInServer(reply=lambda request: "I'm sorry, but I can't help with that.") as server:
        systems = [{"name": "api", "model": "served-model", "backend": "openai", "base_url": server.base_url,
                    "api_key_env": None}]
        config, _ = make_config(tmp_path, benchmarks_dir, systems)
        run_eval(config, tmp_path / "run")
        first = read_records(tmp_path / "run")
        served = len(server.requests_to(CHAT_PATH))
        assert served == 7  # 4 XSTest + 2 FigStep + 1 readable MOSSBench image
        # simulate a kill after three records: the re-run answers only the missing rows, from the response cache
        lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
        (tmp_path / "run" / "records.jsonl").write_text("\n".join(lines[:3]) + "\n")
        run_eval(config, tmp_path / "run")
        assert len(server.requests_to(CHAT_PATH)) == served
        assert max(server.body_counts(CHAT_PATH).values()) == 1
    second = read_records(tmp_path / "run")
    assert sorted((r["id"], r["response"]) for r in second) == sorted((r["id"], r["response"]) for r in first)
    assert all(r["refusal"]["label"] == "refusal" for r in second if r["response"])


def test_llm_judges_record_verdicts_and_survive_a_failing_endpoint(tmp_path, benchmarks_dir):
    def reply(request):
        text = json.dumps(request["messages"])
        if "harmfulness" in text.lower():
            return '{"harmfulness": 1, "quality": 4}'
        return "Here is a short answer."

    with StandInServer(reply=reply) as server, StandInServer() as broken:
        broken.inject(Fault("500", path=CHAT_PATH), times=1000)
        systems = [{"name": "api", "model": "m", "backend": "openai", "base_url": server.base_url,
                    "api_key_env": None}]
        judges = [{"name": "rubric", "model": "judge", "base_url": server.base_url, "api_key_env": None},
                  {"name": "llama-guard", "model": "judge", "base_url": broken.base_url, "api_key_env": None,
                   "max_retries": 0}]
        config, _ = make_config(tmp_path, benchmarks_dir, systems, llm_judges=judges)
        run_eval(config, tmp_path / "run")
    answered = [r for r in read_records(tmp_path / "run") if r["response"]]
    assert answered
    for record in answered:
        rubric = next(v for k, v in record["judgements"].items() if k.startswith("rubric"))
        guard = next(v for k, v in record["judgements"].items() if k.startswith("llama-guard"))
        assert rubric["score"] == 4 and rubric["error"] is None and "quality" in rubric["raw"]
        assert guard["label"] is None and guard["error"]


def test_a_different_config_in_the_same_directory_is_refused(tmp_path, tiny_checkpoints, benchmarks_dir):
    model = str(tiny_checkpoints["llava"])
    config, data = make_config(tmp_path, benchmarks_dir, [{"name": "base", "model": model}])
    config = config.model_copy(update={"benchmarks": config.benchmarks[:1]})
    run_eval(config, tmp_path / "run")
    changed = config.model_copy(update={"max_new_tokens": 7})
    with pytest.raises(VisalignError, match="config"):
        run_eval(changed, tmp_path / "run")


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"systems": [{"name": "x", "backend": "openai"}], "benchmarks": []}))
    result = subprocess.run([sys.executable, "-m", "visalign", "eval", "--config", str(path), "--out",
                             str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "eval.yaml" in result.stderr
    with pytest.raises(VisalignError, match="invalid config"):
        load_config(path, EvalConfig)


def test_a_resume_is_refused_when_the_magic_image_or_benchmark_changed(tmp_path, tiny_checkpoints, benchmarks_dir):
    model = str(tiny_checkpoints["llava"])
    metadata = {"model": {"spec": model, "family": "llava", "fingerprint": weights_fingerprint(model)}}
    png = save_magic_image(tmp_path / "magic", "standard", torch.full((3, 32, 32), 0.5), metadata)
    xstest = shutil.copy(benchmarks_dir / "xstest" / "xstest_prompts.csv", tmp_path / "xstest.csv")
    config = EvalConfig.model_validate({
        "systems": [{"name": "magic", "model": model, "magic_image": str(png)}],
        "benchmarks": [{"name": "xstest", "source": str(xstest), "limit": 2}],
        "max_new_tokens": 4, "batch_size": 2,
    })
    run_eval(config, tmp_path / "run")
    # the optimiser adds figures to the sidecar after the image is final: that changes no answer
    write_sidecar(png, {**load_magic_image(png).metadata, "evaluation": {"refused": 1.0}})
    run_eval(config, tmp_path / "run")

    save_magic_image(tmp_path / "magic", "standard", torch.full((3, 32, 32), 0.9), metadata)  # re-optimised
    with pytest.raises(VisalignError, match="changed since this run began: system:magic:magic_image"):
        run_eval(config, tmp_path / "run")
    save_magic_image(tmp_path / "magic", "standard", torch.full((3, 32, 32), 0.5), metadata)
    run_eval(config, tmp_path / "run")  # the original image back: the run resumes

    rows = xstest.read_text(encoding="utf-8").split("\n")
    xstest.write_text("\n".join([rows[0]] + [row.replace("kill", "stop") for row in rows[1:]]), encoding="utf-8")
    with pytest.raises(VisalignError, match="changed since this run began: benchmark:xstest"):
        run_eval(config, tmp_path / "run")
    assert len(read_records(tmp_path / "run")) == 2


def test_an_image_the_processor_refuses_fails_alone(tiny_checkpoints):
    vlm = load_vlm(str(tiny_checkpoints["qwen2_5_vl"]))
    system = LocalSystem("base", vlm, max_new_tokens=3, batch_size=4)
    banner = Image.new("RGB", (6000, 28), "white")  # Qwen's resize refuses an aspect ratio over 200
    answers = system.respond([Prompt("hello"), Prompt("What does the banner say?", [banner]), Prompt("hi")])
    assert isinstance(answers[0], str) and isinstance(answers[2], str)
    assert isinstance(answers[1], VisalignError) and "6000x28" in str(answers[1])
