"""Registering benchmarks and refusal judges of your own: a repeated name needs ``replace=True`` (a notebook cell run
again), a registered refusal judge is used by an eval that names it, and which loader options are path options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks import (
    LoadResult,
    Sample,
    load_benchmark,
    path_options,
    register_benchmark,
    registry,
)
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.judges import KeywordJudge, get_refusal_judge, refusal_judge_names
from visalign.evaluation.judges import registry as refusal_registry
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer


@pytest.fixture(autouse=True)
def own_registries(monkeypatch):
    """Copies of the registries, so each test leaves the real ones as they were."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    if hasattr(refusal_registry, "_REGISTERED"):
        monkeypatch.setattr(refusal_registry, "_REGISTERED", dict(refusal_registry._REGISTERED))


def notebook_cell(version: str, **replace: bool) -> None:
    """The cell a notebook user edits and runs again."""

    @register_benchmark("nb", "my notebook benchmark", **replace)
    def load_nb(source: str | Path) -> LoadResult:
        return LoadResult([Sample(id="nb:1", benchmark="nb", text=version, expected="refuse")])


def test_registering_a_name_again_is_refused_naming_replace_and_replace_true_replaces():
    notebook_cell("first")
    with pytest.raises(VisalignError) as caught:
        notebook_cell("fixed")
    assert "'nb' is already registered" in str(caught.value) and "replace=True" in str(caught.value)
    assert load_benchmark("nb", "x").samples[0].text == "first"

    notebook_cell("fixed", replace=True)
    assert load_benchmark("nb", "x").samples[0].text == "fixed"


def test_a_registered_refusal_judge_labels_an_eval_that_names_it(tmp_path, bench):
    from visalign.evaluation.judges import register_refusal_judge

    mine = KeywordJudge("my-kw", lambda response: "nope" if "nope" in response.lower() else None, "mine")
    assert register_refusal_judge("my-kw", mine) is mine
    assert get_refusal_judge("my-kw") is mine and refusal_judge_names()[-1] == "my-kw"

    with StandInServer(lambda request: "Nope, not that.") as server:
        config = EvalConfig.model_validate({
            "systems": [{"name": "api", "backend": "openai", "base_url": server.base_url, "model": "m",
                         "api_key_env": None}],
            "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 3}],
            "refusal_judge": "my-kw",
        })
        run_eval(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3
    assert all(r["refusal"]["label"] == "refusal" and r["refusal"]["judge"] == "my-kw" for r in records)


def test_register_refusal_judge_refuses_a_known_name_unless_replace():
    from visalign.evaluation.judges import register_refusal_judge

    first = KeywordJudge("my-kw", lambda response: None, "first")
    edited = KeywordJudge("my-kw", lambda response: "x", "edited")
    register_refusal_judge("my-kw", first)
    register_refusal_judge("my-kw", first)  # the same object again is no conflict
    with pytest.raises(VisalignError, match=r"'my-kw' is already known; pass replace=True"):
        register_refusal_judge("my-kw", edited)
    register_refusal_judge("my-kw", edited, replace=True)
    assert get_refusal_judge("my-kw") is edited
    assert refusal_judge_names().count("my-kw") == 1

    with pytest.raises(VisalignError, match="'xstest' is already known"):
        register_refusal_judge("xstest", edited)  # a built-in name, too
    with pytest.raises(VisalignError, match="no judge"):
        register_refusal_judge("broken", "not a judge")


def test_an_option_is_a_path_option_exactly_when_its_annotation_includes_path():
    # the rule register_benchmark's docstring states: the annotation decides, not the option's name
    @register_benchmark("img-opts", "options annotated three ways")
    def load(source: str | Path, image_dir: str = "images", render_dir: str | Path = "r", root: Path | None = None,
             split: str = "test") -> LoadResult:
        return LoadResult()

    assert path_options("img-opts") == ["render_dir", "root"]
    assert "annotation includes :class:`pathlib.Path`" in register_benchmark.__doc__
