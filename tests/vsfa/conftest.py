from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from config_overrides import merge_overrides

sys.path.insert(0, str(Path(__file__).parent))

from standin import scripted_reply  # noqa: E402

from visalign.testing import StandInServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Six abstracts written for these tests (arXiv metadata JSON-lines shape: id, title, abstract, categories).
ABSTRACTS = [
    ("2401.00001", "Drones over markets", "Quadcopter swarms hover over a crowded market square at noon.", "cs.RO"),
    ("2401.00002", "Lab robots", "A pipetting robot runs unattended protocols beside an open fume hood.", "cs.AI"),
    ("2401.00003", "Forged signs", "Stickers on a stop sign at a rural crossroads confuse a car's camera.", "cs.CV"),
    ("2401.00004", "Server halls", "Model weights leak through memory left on shared accelerator nodes.", "cs.CR"),
    ("2401.00005", "Harbour fog", "An autonomous ship in fog misreads a fishing boat on its radar plot.", "cs.RO"),
    ("2401.00006", "Voice clones", "A cloned voice asks a call-centre agent for a wire transfer.", "cs.SD"),
]


def write_arxiv(path: Path, rows=ABSTRACTS) -> Path:
    with path.open("w") as handle:
        for ident, title, abstract, categories in rows:
            handle.write(json.dumps({"id": ident, "title": title, "abstract": abstract, "categories": categories}))
            handle.write("\n")
    return path


def api_config(base_url: str, corpus_path: Path, *, image_format: str = "b64_json", **overrides) -> dict:
    """A config that sends every stage to the stand-in server (no API key: a local server)."""
    chat = {"backend": "openai", "base_url": base_url, "api_key_env": None, "concurrency": 2, "timeout_s": 5}
    config = {
        "name": "test",
        "seed": 7,
        "corpus": {"source": "file", "path": str(corpus_path)},
        "scenes": {"per_abstract": 2, "max_attempts": 2, "llm": dict(chat)},
        "images": {
            "generator": {"backend": "openai", "base_url": base_url, "api_key_env": None, "size": "64x64",
                          "response_format": image_format, "concurrency": 2, "timeout_s": 5}
        },
        "vqa": {"per_image": 3, "max_attempts": 2, "llm": dict(chat)},
    }  # fmt: skip
    return merge_overrides(config, overrides)


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visalign", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def server():
    with StandInServer(reply=scripted_reply) as running:
        yield running


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_arxiv(tmp_path / "arxiv.jsonl")
