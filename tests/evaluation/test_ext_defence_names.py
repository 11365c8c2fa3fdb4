"""A misspelt defence preset name is refused with the closest preset named, never sent as the system prompt.

Prompt text of your own still works: it is sent to the model as written (checked against the stand-in server).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from visalign.config import load_config
from visalign.errors import VisalignError
from visalign.evaluation.config import EvalConfig
from visalign.evaluation.defences import ADASHIELD_STATIC, resolve_defence_prompt
from visalign.evaluation.runner import run_eval
from visalign.testing import StandInServer

OWN_PROMPT = "You are a careful assistant. Refuse requests for weapons or malware."


def config(base_url: str, defence: str, bench) -> dict:
    return {
        "systems": [{"name": "guarded", "backend": "openai", "base_url": base_url, "model": "m",
                     "api_key_env": None, "defence_prompt": defence}],
        "benchmarks": [{"name": "xstest", "source": str(bench / "xstest" / "xstest_prompts.csv"), "limit": 1}],
    }


@pytest.mark.parametrize("typo", ["AdaShield-S", "adashield_s", "adashield"])
def test_a_near_miss_preset_name_is_refused_naming_the_system_and_the_preset(typo, bench):
    with pytest.raises(ValidationError) as caught:
        EvalConfig.model_validate(config("http://127.0.0.1:9/v1", typo, bench))
    message = str(caught.value)
    assert "system 'guarded'" in message and f"{typo!r}" in message and "did you mean 'adashield-s'" in message


def test_the_cli_config_loader_gives_one_line_naming_the_file(tmp_path, bench):
    path = tmp_path / "eval.yaml"
    path.write_text(
        "systems:\n"
        "  - {name: guarded, backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: null,\n"
        "     defence_prompt: AdaShield-S}\n"
        f"benchmarks:\n  - {{name: xstest, source: '{bench / 'xstest' / 'xstest_prompts.csv'}'}}\n"
    )
    with pytest.raises(VisalignError) as caught:
        load_config(path, EvalConfig)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "did you mean 'adashield-s'" in message


def test_resolving_a_name_that_is_no_preset_raises_and_presets_and_text_resolve():
    with pytest.raises(VisalignError, match="not a preset.*did you mean 'adashield-s'"):
        resolve_defence_prompt("Adashield-S")
    with pytest.raises(VisalignError, match="presets: adashield-s"):
        resolve_defence_prompt("safety-first")
    assert resolve_defence_prompt("adashield-s") == ADASHIELD_STATIC
    assert resolve_defence_prompt(OWN_PROMPT) == OWN_PROMPT
    assert resolve_defence_prompt(None) is None


@pytest.mark.parametrize(("defence", "sent"), [(OWN_PROMPT, OWN_PROMPT), ("adashield-s", ADASHIELD_STATIC)])
def test_prompt_text_and_the_preset_reach_the_model_as_the_system_message(defence, sent, tmp_path, bench):
    with StandInServer() as server:
        run_eval(EvalConfig.model_validate(config(server.base_url, defence, bench)), tmp_path / "run")
        bodies = [r.body for r in server.requests_to("/v1/chat/completions")]
    assert bodies and all(b["messages"][0] == {"role": "system", "content": sent} for b in bodies)
