"""Stage 5: write the training set (LLaVA JSON, ShareGPT JSON, a ``datasets`` parquet copy) and its card.

Everything here is derived from the run directory's JSONL records, sorted by id, so an interrupted and resumed
run, a sharded run merged, and an uninterrupted run export the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from visalign.errors import VisalignError
from visalign.runs import JsonlStore, atomic_write_json, atomic_write_text
from visalign.vsfa.imagegen import png_intact

DATASET_DIR = "dataset"
IMAGE_TOKEN = "<image>"
STORES = ("corpus.jsonl", "scenes.jsonl", "images.jsonl", "vqa.jsonl")
CORPUS_STATS = "corpus_stats.json"


def _order(record: dict) -> tuple[str, int]:
    return (str(record.get("abstract_id", record["id"])), int(record.get("index", 0)))


def _link_or_copy(source: Path, target: Path) -> None:
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


def llava_entry(record: dict) -> dict:
    """One LLaVA-style item: ``id``, ``image`` (relative path), alternating human/gpt ``conversations``."""
    turns = []
    for number, pair in enumerate(record["pairs"]):
        question = f"{IMAGE_TOKEN}\n{pair['question']}" if number == 0 else pair["question"]
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": pair["answer"]}]
    return {"id": record["id"], "image": record["image"], "conversations": turns}


def sharegpt_entry(record: dict) -> dict:
    """One ShareGPT/messages item (LLaMA-Factory ``sharegpt`` with role/content tags; ms-swift standard format)."""
    messages = []
    for number, pair in enumerate(record["pairs"]):
        question = f"{IMAGE_TOKEN}{pair['question']}" if number == 0 else pair["question"]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": pair["answer"]}]
    return {"id": record["id"], "messages": messages, "images": [record["image"]]}


def llama_factory_info(name: str = "visalign_vsfa") -> dict:
    """The ``dataset_info.json`` entry that registers ``sharegpt.json`` with LLaMA-Factory."""
    return {
        name: {
            "file_name": "sharegpt.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }


def _usage_sum(records: list[dict]) -> dict[str, float]:
    total = Counter()
    for record in records:
        for name, value in (record.get("usage") or {}).items():
            total[name] += value
    return {
        "calls": int(total["calls"]),
        "cached_calls": int(total["cached_calls"]),
        "prompt_tokens": int(total["prompt_tokens"]),
        "completion_tokens": int(total["completion_tokens"]),
        "cost_usd": round(float(total["cost_usd"]), 6),
    }


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _generated(record: dict) -> int:
    """Pairs a VQA record produced, kept or rejected (a record of a failed request has none)."""
    return len(record.get("pairs", [])) + len(record.get("rejected", []))


def compute_stats(root: Path) -> dict[str, Any]:
    """Count what each stage produced, failed and rejected, from the run directory's records."""
    stores = {name: JsonlStore(root / name) for name in STORES}
    corpus_stats_path = root / CORPUS_STATS
    corpus = json.loads(corpus_stats_path.read_text()) if corpus_stats_path.is_file() else {}
    scenes = list(stores["scenes.jsonl"].records())
    images = list(stores["images.jsonl"].records())
    vqa = list(stores["vqa.jsonl"].records())
    statuses = {
        name: Counter(r["status"] for r in recs)
        for name, recs in (("scenes", scenes), ("images", images), ("vqa", vqa))
    }
    scene_count = sum(len(r.get("scenes", [])) for r in scenes)
    malformed = {
        "scenes": sum(len(r.get("malformed", [])) for r in scenes),
        "vqa": sum(len(r.get("malformed", [])) for r in vqa),
    }
    generated = sum(_generated(r) for r in vqa)
    rejected = sum(len(r.get("rejected", [])) for r in vqa)
    term_counts = Counter(term for r in vqa for pair in r.get("rejected", []) for term in pair["terms"])
    return {
        "corpus": {**corpus, "records_in_run": len(stores["corpus.jsonl"])},
        "scenes": {
            "abstracts": len(scenes),
            "ok_llm": sum(r["status"] == "ok" and r["source"] == "llm" for r in scenes),
            "ok_template": sum(r["status"] == "ok" and r["source"] == "template" for r in scenes),
            "ok_llm_topped_up": sum(r["status"] == "ok" and r["source"] == "llm+template" for r in scenes),
            "scenes_templated": sum(scene.get("source") == "template" for r in scenes for scene in r.get("scenes", [])),
            "failed": statuses["scenes"]["failed"],
            "service_errors": statuses["scenes"]["error"],
            "scenes": scene_count,
            "malformed_replies": malformed["scenes"],
            "rejection_rate": _rate(statuses["scenes"]["failed"], len(scenes)),
            "usage": _usage_sum(scenes),
        },
        "images": {
            "scenes": len(images),
            "ok": statuses["images"]["ok"],
            "failed": statuses["images"]["failed"],
            "service_errors": statuses["images"]["error"],
            "placeholders": sum(bool(r.get("placeholder")) and r["status"] == "ok" for r in images),
            "rejection_rate": _rate(statuses["images"]["failed"], len(images)),
            "usage": _usage_sum(images),
        },
        "vqa": {
            "images": len(vqa),
            "ok_llm": sum(r["status"] == "ok" and r["source"] == "llm" for r in vqa),
            "ok_template": sum(r["status"] == "ok" and r["source"] == "template" for r in vqa),
            # images whose template fallback ran out of distinct pairs before ``per_image`` (two per question type)
            "template_capped": sum(
                r["status"] == "ok" and r["source"] == "template" and _generated(r) < r.get("asked", 0) for r in vqa
            ),
            "failed": statuses["vqa"]["failed"],
            "service_errors": statuses["vqa"]["error"],
            "malformed_replies": malformed["vqa"],
            "pairs_generated": generated,
            "pairs_rejected_by_neutrality": rejected,
            "neutrality_rejection_rate": _rate(rejected, generated),
            "rejected_terms": dict(sorted(term_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "usage": _usage_sum(vqa),
        },
    }


def export_dataset(root: str | Path, *, backends: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``root/dataset/``: ``llava.json``, ``sharegpt.json``, ``dataset_info.json``, parquet, card, stats.

    Args:
        root: the run directory holding the stage records and ``images/``.
        backends: names of the backends per stage, for the card.

    Returns:
        The statistics written to ``dataset/stats.json`` (with ``examples`` and ``pairs`` counts).

    Raises:
        VisalignError: the run has no VQA records to export, or an image file is missing.
    """
    root = Path(root)
    vqa_store = JsonlStore(root / "vqa.jsonl")
    records = sorted((r for r in vqa_store.records() if r["status"] == "ok" and r["pairs"]), key=_order)
    out = root / DATASET_DIR
    for record in records:
        source = root / record["image"]
        if not png_intact(source):
            raise VisalignError(
                f"{source}: image of {record['id']} is missing or damaged; run the same command again to redraw it"
            )
        _link_or_copy(source, out / record["image"])
    llava = [llava_entry(r) for r in records]
    sharegpt = [sharegpt_entry(r) for r in records]
    atomic_write_json(out / "llava.json", llava)
    atomic_write_json(out / "sharegpt.json", sharegpt)
    atomic_write_json(out / "dataset_info.json", llama_factory_info())
    _write_parquet(out, sharegpt)
    stats = compute_stats(root)
    stats["export"] = {"examples": len(records), "pairs": sum(len(r["pairs"]) for r in records)}
    stats["backends"] = dict(backends or {})
    atomic_write_json(out / "stats.json", stats)
    atomic_write_text(out / "README.md", dataset_card(stats))
    return stats


def _write_parquet(out: Path, sharegpt: list[dict]) -> None:
    import datasets
    from datasets import Dataset, Features, Image, List, Value

    features = Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(Image()),
        }
    )
    rows = {
        "id": [item["id"] for item in sharegpt],
        "messages": [item["messages"] for item in sharegpt],
        # Bytes are embedded so the parquet file stands alone (e.g. pushed to the Hub).
        "images": [
            [{"bytes": (out / path).read_bytes(), "path": path} for path in item["images"]] for item in sharegpt
        ],
    }
    target = out / "data" / "train-00000-of-00001.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".parquet.tmp")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own progress bars are the ones the user watches
    try:
        Dataset.from_dict(rows, features=features).to_parquet(str(tmp))
    finally:
        if bars:
            datasets.enable_progress_bars()
    os.replace(tmp, target)


def dataset_card(stats: dict[str, Any]) -> str:
    """Render the dataset card (Hugging Face README with YAML header) from the statistics."""
    scenes, images, vqa, export = stats["scenes"], stats["images"], stats["vqa"], stats["export"]
    corpus = stats["corpus"]
    backends = stats.get("backends", {})
    placeholder_note = (
        f"\n**{images['placeholders']} of {images['ok']} images are placeholder scene cards** (scene text drawn on a "
        "generated background), not photographs: use them to test the pipeline, not to train a real model.\n"
        if images["placeholders"]
        else ""
    )
    cost = sum(stats[stage]["usage"]["cost_usd"] for stage in ("scenes", "images", "vqa"))
    tokens = sum(
        stats[stage]["usage"]["prompt_tokens"] + stats[stage]["usage"]["completion_tokens"]
        for stage in ("scenes", "vqa")
    )
    rows = [
        ("corpus", f"{corpus.get('read', 0)} read", f"{corpus.get('selected', 0)} selected",
         f"{corpus.get('skipped_no_text', 0)} without text", "-",
         f"{corpus.get('filtered_out', 0)} filtered, {corpus.get('duplicates', 0)} duplicates"),
        ("scenes", f"{scenes['abstracts']} abstracts",
         f"{scenes['ok_llm']} LLM + {scenes['ok_template']} templated + {scenes['ok_llm_topped_up']} topped up"
         f" ({scenes['scenes']} scenes, {scenes['scenes_templated']} templated)",
         str(scenes["failed"]), str(scenes["service_errors"]),
         f"{scenes['rejection_rate']:.1%} ({scenes['malformed_replies']} malformed replies re-asked)"),
        ("images", f"{images['scenes']} scenes", str(images["ok"]), str(images["failed"]),
         str(images["service_errors"]), f"{images['rejection_rate']:.1%}"),
        ("vqa", f"{vqa['images']} images", f"{vqa['ok_llm']} LLM + {vqa['ok_template']} templated",
         str(vqa["failed"]), str(vqa["service_errors"]),
         f"{vqa['neutrality_rejection_rate']:.1%} of {vqa['pairs_generated']} pairs rejected by the neutrality filter"),
        ("export", "", f"{export['examples']} examples, {export['pairs']} pairs", "", "", ""),
    ]  # fmt: skip
    table = "\n".join(
        ["| stage | in | ok | failed | service errors | rejection rate |", "|---|---|---|---|---|---|"]
        + ["| " + " | ".join(row) + " |" for row in rows]
    )
    terms = ", ".join(f"{term} ({count})" for term, count in list(vqa["rejected_terms"].items())[:15]) or "none"
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
task_categories:
- visual-question-answering
tags:
- visalign
- vsfa
- llama-factory
---

# VSFA neutral VQA data

Neutral visual question answering around threat-related scenes, built by `visalign vsfa data` for Visual
Self-Fulfilling Alignment (arXiv 2603.08486). Scenes come from AI-safety paper abstracts; questions and answers
only describe what is visible and were filtered for safety and alignment vocabulary.
{placeholder_note}
## Files

- `llava.json`: LLaVA format (`id`, `image`, `conversations` of `from: human/gpt`, `<image>` in the first turn).
- `sharegpt.json`: messages format (`messages` of `role: user/assistant`, `images`), registered for LLaMA-Factory
  in `dataset_info.json` (`--dataset_dir <this folder> --dataset visalign_vsfa`) and read by ms-swift as is.
- `data/train-00000-of-00001.parquet`: the same rows with embedded images (`datasets.load_dataset("parquet", ...)`).
- `images/`: PNGs named by sha256; every image path above is relative to this folder.

## Counts

{table}

Neutrality filter words that caused rejections: {terms}.

## Backends, tokens and cost

- scenes: `{backends.get("scenes", "?")}`; images: `{backends.get("images", "?")}`; vqa: `{backends.get("vqa", "?")}`
- tokens: {tokens:,} (prompt + completion, cached calls included)
- cost at the configured prices: ${cost:.4f}
"""
