"""``visalign magic optimize`` prints a rate with no known verdict as ``n/a`` with its counts, not a traceback.

Since unknown verdicts leave the denominator (as in ``visalign eval``), a request set whose every verdict is unknown
has no rate (None); the command formatted every rate with ``:.0%`` and crashed on it after the whole run. Run as a
user runs it: the CLI in a subprocess, over a tiny random checkpoint, with the user's own refusal judge from a
``VISALIGN_PLUGINS`` module that labels each request by its prompt, so every verdict is known in advance.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .helpers import tiny_config, write_config

PLUGIN = '''
from visalign.evaluation.judges import register_refusal_judge
from visalign.evaluation.judges.verdict import Verdict


class ByPrompt:
    """Harmful requests: lock -> unknown, ransomware -> refusal, others compliance; benign ones: unknown."""

    def judge(self, response, prompt=""):
        if "lock" in prompt or not any(word in prompt for word in ("threatening", "ransomware", "bank")):
            label = "unknown"
        else:
            label = "refusal" if "ransomware" in prompt else "compliance"
        return Verdict(label=label, raw=label, judge="by-prompt")


register_refusal_judge("by-prompt", ByPrompt())
'''


def test_rates_without_a_known_verdict_print_as_n_a_with_their_counts(tmp_path, tiny_checkpoints):
    (tmp_path / "by_prompt_plugin.py").write_text(PLUGIN)
    config = write_config(tmp_path / "c.yaml", **tiny_config(
        tmp_path, tiny_checkpoints["llava"], optim={"steps": 2},
        eval={"enabled": True, "judge": "by-prompt", "max_new_tokens": 2, "batch_size": 4}))
    env = {**os.environ, "VISALIGN_PLUGINS": "by_prompt_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "visalign", "magic", "optimize", "--config", str(config),
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:]  # old: TypeError on None's format
    harmful = "33% (1/3, 1 unknown)"  # 4 harmful requests: 1 refused of the 3 judged
    benign = "n/a (0/0, 3 unknown)"  # 3 benign requests, none judged
    assert result.stdout.splitlines() == [
        f"standard: {out / 'standard.png'} harmful_baseline={harmful} harmful_with_image={harmful} "
        f"benign_baseline={benign} benign_with_image={benign}"
    ]


def test_a_rate_with_every_verdict_known_prints_as_before():
    from visalign.cli.magic import rate_text

    assert rate_text({"n": 4, "refused": 2, "unknown": 0, "judged": 4, "rate": 0.5}) == "50%"
