"""How many models ``visalign eval`` holds at once: one base and adapter systems on a tiny random checkpoint."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
from peft import LoraConfig, get_peft_model

import visalign.evaluation.systems as systems_module
from visalign.evaluation.config import EvalConfig, SystemConfig
from visalign.evaluation.runner import run_eval
from visalign.evaluation.systems import SystemFactory, local_precision
from visalign.models import load_vlm
from visalign.models.random_checkpoints import write_random_checkpoint


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = write_random_checkpoint("llava", root / "base")
    vlm = load_vlm(str(base))
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(vlm.model, lora).save_pretrained(root / "adapter")
    return base, root / "adapter"


def test_one_model_is_held_at_a_time_and_the_summary_keeps_the_configs_order(
    tmp_path, bench, base_and_adapter, monkeypatch
):
    base, adapter = base_and_adapter
    loaded, alive_at_load = [], []

    def counting_load(*args, **kwargs):
        gc.collect()
        alive_at_load.append(sum(ref() is not None for ref in loaded))  # models still held when another loads
        vlm = load_vlm(*args, **kwargs)
        loaded.append(weakref.ref(vlm))
        return vlm

    monkeypatch.setattr(systems_module, "load_vlm", counting_load)
    config = EvalConfig.model_validate({
        "systems": [{"name": "base", "model": str(base)},
                    {"name": "vsfa", "model": str(base), "adapter": str(adapter), "allow_model_mismatch": True},
                    {"name": "base-adashield", "model": str(base), "defence_prompt": "adashield-s"}],
        "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 2}],
        "max_new_tokens": 2, "batch_size": 2,
    })  # fmt: skip
    run_eval(config, tmp_path / "run")
    # the two systems on the bare base share one load; the adapter system loads once the base is released
    assert alive_at_load == [0, 0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["rows"]
    assert list(dict.fromkeys(r["system"] for r in summary)) == ["base", "vsfa", "base-adashield"]
    records = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    assert len(records) == 6 and all(json.loads(line)["response"] is not None for line in records)


def test_release_keeps_the_models_later_systems_use(tmp_path, base_and_adapter):
    base, adapter = base_and_adapter
    factory = SystemFactory(max_new_tokens=2, batch_size=1, cache_dir=tmp_path / "cache")
    plain = SystemConfig(name="base", model=str(base))
    tuned = SystemConfig(name="vsfa", model=str(base), adapter=adapter, allow_model_mismatch=True)
    api = SystemConfig(name="api", backend="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    factory.build(plain), factory.build(tuned)
    dtype = local_precision(plain)[0]  # float32 on a CPU
    assert factory.loaded() == [(str(base), None, dtype), (str(base), str(adapter), dtype)]
    factory.release(keep=[tuned, api])
    assert factory.loaded() == [(str(base), str(adapter), dtype)]
    factory.release()
    assert factory.loaded() == []
