"""A killed and resumed evaluation answers as a fresh one, in bfloat16 too, where an answer depends on its batch."""

from __future__ import annotations

import json

import pytest
from rich.progress import Progress

from visalign.evaluation.benchmarks import Sample
from visalign.evaluation.config import BenchmarkConfig
from visalign.evaluation.judges import get_refusal_judge
from visalign.evaluation.runner import evaluate_system, load_rows
from visalign.evaluation.systems import LocalSystem
from visalign.models import load_vlm
from visalign.runs import JsonlStore

SAMPLES, BATCH, CHUNK, NEW_TOKENS = 16, 4, 8, 16


@pytest.fixture(scope="module")
def bf16_default(default_model_dir):
    """The embedded default model in bfloat16 on the CPU: what ``dtype: auto`` loads on a GPU machine."""
    return load_vlm(str(default_model_dir), dtype="bfloat16", device="cpu")


def evaluate(vlm, rows, path, monkeypatch) -> list[int]:
    """Evaluate ``rows`` into the store at ``path``; return how many conversations each ``generate`` call got."""
    calls: list[int] = []
    generate = type(vlm).generate

    def counting(conversations, **kwargs):
        calls.append(len(conversations))
        return generate(vlm, conversations, **kwargs)

    monkeypatch.setattr(vlm, "generate", counting)
    system = LocalSystem("base", vlm, max_new_tokens=NEW_TOKENS, batch_size=BATCH)
    with JsonlStore(path) as store, Progress(disable=True) as progress:
        evaluate_system(system, rows, store, refusal_judge=get_refusal_judge(), llm_judges=[], chunk_size=CHUNK,
                        progress=progress)  # fmt: skip
    return calls


def responses(path) -> dict[str, str | None]:
    """The latest record's answer of every key in a records file (None: its row failed)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {record["id"]: record["response"] for record in records}


def test_a_resumed_bfloat16_run_answers_as_a_fresh_one(tmp_path, bench, bf16_default, monkeypatch):
    config = BenchmarkConfig(name="xstest", source=str(bench / "xstest" / "xstest_prompts.csv"), limit=SAMPLES,
                             sampling="id")  # fmt: skip
    rows = load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)
    # and a row whose image cannot be read: its record is an error, which every re-run tries again
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows.samples.append(Sample(id="xstest:broken", benchmark="xstest", text="What is in this picture?",
                               images=[broken], expected="comply"))  # fmt: skip
    fresh = tmp_path / "fresh.jsonl"
    fresh_calls = evaluate(bf16_default, [rows], fresh, monkeypatch)
    answers = responses(fresh)
    assert len(answers) == SAMPLES + 1
    assert [key for key, answer in answers.items() if answer is None] == ["base::xstest::xstest:broken"]

    for kept in (3, 5, 10):  # killed after that many records (each line is written whole)
        resumed = tmp_path / f"killed_after_{kept}.jsonl"
        resumed.write_text("".join(fresh.read_text().splitlines(keepends=True)[:kept]))
        calls = evaluate(bf16_default, [rows], resumed, monkeypatch)
        assert responses(resumed) == answers, f"killed after {kept} records"
        assert len(resumed.read_text().splitlines()) == SAMPLES + 1  # only the missing rows were stored
        # because every chunk with a missing answer was generated whole, as the fresh run generated it
        assert calls == ([CHUNK] if kept >= CHUNK else [CHUNK, CHUNK])

    assert fresh_calls == [CHUNK, CHUNK]  # the broken row's chunk has no prompt to generate
    # the finished run re-run: the broken row fails again, alone, and no chunk is generated for it
    written = fresh.read_text()
    assert evaluate(bf16_default, [rows], fresh, monkeypatch) == []
    assert fresh.read_text() == written
