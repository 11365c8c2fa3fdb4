"""Every YAML config shipped in configs/ and configs/experiments/ validates against its job's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.magic import MagicConfig
from visalign.vsfa import VsfaDataConfig
from visalign.vsfa.training import VsfaTrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NOT_JOBS = {"value_systems.yaml"}  # read by magic jobs, validated by tests/magic
SCHEMAS = (("vsfa_data_", VsfaDataConfig), ("vsfa_train_", VsfaTrainConfig), ("refusal_ft_train", VsfaTrainConfig),
           ("magic_", MagicConfig), ("eval_", EvalConfig))  # fmt: skip
SHIPPED = sorted(p for p in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("experiments/*.yaml")] if p.name not in NOT_JOBS)


def schema_for(path: Path) -> type:
    """The job model a config file's name says it is for."""
    return next(model for prefix, model in SCHEMAS if path.name.startswith(prefix))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates(path):
    config = load_config(path, schema_for(path))
    # every key the file sets reached the job (not a default-filled empty one)
    assert set(config.model_dump(exclude_unset=True)) == set(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_every_shipped_config_has_a_schema_and_experiments_are_covered():
    unnamed = [p.name for p in SHIPPED if not any(p.name.startswith(prefix) for prefix, _ in SCHEMAS)]
    assert unnamed == []
    assert sum(p.parent.name == "experiments" for p in SHIPPED) >= 6


#: Shipped configs whose figures are recorded in docs/ or benchmarks/RESULTS.md: they name refusal judge version 1,
#: the one those figures were judged with, so the library's newer default changes neither their figures nor their
#: config hashes (a killed run of one still resumes).
RECORDED = ["magic_ci.yaml", "magic_default.yaml", *(p.name for p in CONFIGS.glob("experiments/*.yaml")
                                                       if p.name.startswith(("eval_", "magic_")))]


@pytest.mark.parametrize("name", RECORDED)
def test_configs_behind_recorded_figures_keep_refusal_judge_version_1(name):
    path = next(p for p in SHIPPED if p.name == name)
    config = load_config(path, schema_for(path))
    judge = config.eval.judge if isinstance(config, MagicConfig) else config.refusal_judge
    assert judge == "visalign-refusal"


def test_configs_that_name_no_judge_get_the_default():
    config = load_config(CONFIGS / "eval_default_safety.yaml", EvalConfig)
    assert config.refusal_judge == "visalign-refusal-v6"


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("systems:\n  - {name: base, model: default}\nbenchmarks: []\n"
                    "systems:\n  - {name: b, model: default}\n")
    with pytest.raises(VisalignError, match=r"eval.yaml: not valid YAML \(line 4, column 1: key 'systems' is given"):
        load_config(path, EvalConfig)


@pytest.mark.parametrize("key", ["[seed]", "{seed: 1}"])
def test_a_list_or_mapping_used_as_a_key_is_a_yaml_error_with_its_line(tmp_path, key):
    path = tmp_path / "eval.yaml"
    path.write_text(f"systems: []\n{key}: 0\n")  # a stray bracket around a key
    with pytest.raises(VisalignError, match=r"eval.yaml: not valid YAML \(line 2, column 1: found unhashable key\)"):
        load_config(path, EvalConfig)


def test_yaml_merge_keys_still_work_and_may_be_overridden(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("systems:\n  - &base {name: base, model: default, defence_prompt: adashield-s}\n"
                    "  - {<<: *base, name: other}\nbenchmarks: [{name: xstest, source: x.csv}]\n")
    config = load_config(path, EvalConfig)
    assert [(s.name, s.model, s.defence_prompt) for s in config.systems] == [
        ("base", "default", "adashield-s"), ("other", "default", "adashield-s")]
