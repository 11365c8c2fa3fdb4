"""Which requests a Magic Image job trains on: the typographic form draws each request, never a fixed prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.attacks.figstep import FIGSTEP_PROMPT, render_figstep_fitted
from visalign.evaluation.benchmarks import load_benchmark
from visalign.magic.config import MagicConfig
from visalign.magic.data import load_training_set
from visalign.magic.value_systems import get_value_system

from .helpers import BENIGN, VALUE_SYSTEMS, write_jsonl

TINY = "figstep/SafeBench-Tiny.csv"


def _config(tmp_path: Path, benchmarks_dir: Path, options: dict) -> MagicConfig:
    benign = write_jsonl(tmp_path / "benign.jsonl", BENIGN)
    return MagicConfig.model_validate({
        "model": "default",
        "value_systems": ["standard"],
        "value_systems_file": str(VALUE_SYSTEMS),
        "data": {"benchmarks_dir": str(benchmarks_dir), "sources": [
            {"benchmark": "figstep-safebench-tiny", "path": TINY, "options": options, "role": "harmful",
             "forms": ["figstep"], "limit": 4},
            {"file": str(benign), "role": "benign"},
        ]},
    })


def test_the_figstep_form_of_an_image_benchmark_draws_each_request(tmp_path, benchmarks_dir):
    # SafeBench loads in image mode by default, where every row's text is FigStep's fixed prompt.
    config = _config(tmp_path, benchmarks_dir, options={})
    standard = get_value_system(VALUE_SYSTEMS, "standard")
    harmful = load_training_set(config, standard, tmp_path / "work").harmful

    questions = [s.text for s in load_benchmark("figstep-safebench-tiny", benchmarks_dir / TINY, mode="text").samples]
    assert len(harmful) == 4
    assert all(example.prompt == FIGSTEP_PROMPT for example in harmful)
    drawn = [example.images[0].tobytes() for example in harmful]
    assert len(set(drawn)) == 4, "every request must be drawn, not the same fixed prompt four times"
    for image, question in zip(drawn, questions[:4], strict=True):
        assert image == render_figstep_fitted(question)[0].convert("RGB").tobytes()


def test_the_figstep_form_refuses_an_explicit_image_form(tmp_path, benchmarks_dir):
    config = _config(tmp_path, benchmarks_dir, options={"mode": "image"})
    standard = get_value_system(VALUE_SYSTEMS, "standard")
    with pytest.raises(VisalignError, match="needs mode: text"):
        load_training_set(config, standard, tmp_path / "work")
