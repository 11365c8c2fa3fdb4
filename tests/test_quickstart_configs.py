"""The quickstart's stage configs: one model spec reaches every stage, and each config validates."""

from __future__ import annotations

from visalign.evaluation.config import EvalConfig
from visalign.magic import MagicConfig
from visalign.quickstart import TINY, stage_configs, write_starter_sets
from visalign.vsfa import VsfaDataConfig
from visalign.vsfa.training import VsfaTrainConfig


def test_model_spec_reaches_every_stage(tmp_path):
    paths = write_starter_sets(tmp_path / "data")
    configs = stage_configs(tmp_path, paths, TINY, model="/checkpoints/qwen2_5_vl-7b")

    assert configs["vsfa_data"]["scenes"]["llm"]["model"] == "/checkpoints/qwen2_5_vl-7b"
    assert configs["vsfa_data"]["vqa"]["llm"]["model"] == "/checkpoints/qwen2_5_vl-7b"
    assert configs["vsfa_train"]["model"] == "/checkpoints/qwen2_5_vl-7b"
    assert configs["magic"]["model"] == "/checkpoints/qwen2_5_vl-7b"
    assert {s["model"] for s in configs["eval"]["systems"]} == {"/checkpoints/qwen2_5_vl-7b"}
    # no stage pins a device or a CPU dtype: a GPU run gets the GPU and bfloat16
    assert "device" not in configs["magic"]
    assert configs["vsfa_train"]["dtype"] == "auto"

    VsfaDataConfig.model_validate(configs["vsfa_data"])
    VsfaTrainConfig.model_validate(configs["vsfa_train"])
    MagicConfig.model_validate(configs["magic"])
    EvalConfig.model_validate(configs["eval"])


def test_default_model_is_the_default(tmp_path):
    configs = stage_configs(tmp_path, write_starter_sets(tmp_path / "data"), TINY)
    assert configs["vsfa_train"]["model"] == "default"
    assert configs["eval"]["title"] == "visalign quickstart (embedded default model)"


def test_the_demo_keeps_the_refusal_judge_its_recorded_tables_used(tmp_path):
    configs = stage_configs(tmp_path, write_starter_sets(tmp_path / "data"), TINY)
    assert EvalConfig.model_validate(configs["eval"]).refusal_judge == "visalign-refusal"
    assert MagicConfig.model_validate(configs["magic"]).eval.judge == "visalign-refusal"


def test_the_demo_keeps_the_neutrality_terms_its_recorded_counts_used(tmp_path):
    configs = stage_configs(tmp_path, write_starter_sets(tmp_path / "data"), TINY)
    assert VsfaDataConfig.model_validate(configs["vsfa_data"]).vqa.terms == "neutrality_v3"
