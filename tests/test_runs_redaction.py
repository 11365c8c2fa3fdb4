"""A run's redacted settings are checked from its very first resume, and a refusal names what differs, briefly."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from visalign.errors import VisalignError
from visalign.runs import RunDir, config_differences

CHANGED = [
    ("base_url", "https://x.openai.azure.com/openai/v1?api-version=2024-02-01",
     "https://x.openai.azure.com/openai/v1?api-version=2025-04-01"),  # a query string is hidden as a whole
    ("api_key", "plain-secret-value-42", "plain-secret-value-43"),  # a value under a secret-looking name
]  # fmt: skip


@pytest.mark.parametrize(("field", "old", "new"), CHANGED)
def test_the_first_resume_of_a_new_run_is_refused_when_a_redacted_setting_changed(tmp_path, field, old, new):
    run = RunDir(tmp_path / "run")
    first = run.write_manifest({field: old, "seed": 0})
    key_file = tmp_path / "run" / ".redaction-key"
    assert key_file.is_file()  # made with the run, not at its first resume
    key = bytes.fromhex(key_file.read_text().strip())
    # HMAC-SHA256 of the value under the run's key, 32 hex digits: what every later resume recomputes
    assert first["redacted"] == {field: hmac.new(key, old.encode(), hashlib.sha256).hexdigest()[:32]}
    with pytest.raises(VisalignError, match=rf"redacted setting\(s\) {field} had another value"):
        run.write_manifest({field: new, "seed": 0})  # no resume in between
    assert run.write_manifest({field: old, "seed": 0})["resumed"]  # the original config still resumes


def test_a_refusal_shows_three_differing_settings_then_says_there_are_more(tmp_path):
    old = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}
    assert config_differences(old, {**old, "a": 2, "b": 2, "c": 2}) == "a: 1 -> 2; b: 1 -> 2; c: 1 -> 2"
    assert config_differences(old, {**old, "a": 2, "b": 2, "c": 2, "d": 2}) == (
        "a: 1 -> 2; b: 1 -> 2; c: 1 -> 2; ..."  # a fourth difference is not shown, but announced
    )
    run = RunDir(tmp_path / "run")
    run.write_manifest(old)
    with pytest.raises(VisalignError) as refused:
        run.write_manifest({**old, "b": 2, "c": 2, "d": 2, "e": 2})
    assert "different config (hash " in str(refused.value)
    assert "): b: 1 -> 2; c: 1 -> 2; d: 1 -> 2; ...; resuming requires the same config" in str(refused.value)
