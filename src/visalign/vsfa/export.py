"""Stage 5: write the training set (LLaVA JSON, ShareGPT JSON, a ``datasets`` parquet copy) and its card.

Everything here is derived from the run directory's JSONL records, sorted by id, so an interrupted and resumed
run, a sharded run merged, and an uninterrupted run export the same files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visalign.errors import VisalignError
from visalign.llava_format import IMAGE_MARKER, holds_image_marker
from visalign.runs import JsonlStore, atomic_write_bytes, atomic_write_json, atomic_write_text
from visalign.vsfa.imagegen import png_intact
from visalign.vsfa.vqa import IMAGE_MARKER_REASON

if TYPE_CHECKING:  # imported where used: datasets is slow to import
    from datasets import Features

DATASET_DIR = "dataset"
IMAGE_TOKEN = IMAGE_MARKER
STORES = ("corpus.jsonl", "scenes.jsonl", "images.jsonl", "vqa.jsonl")
CORPUS_STATS = "corpus_stats.json"
#: Written last by :func:`export_dataset`, under ``dataset/``: its presence says that a run's stages all finished.
STATS_FILE = "stats.json"


def _order(record: dict) -> tuple[str, int]:
    return (str(record.get("abstract_id", record["id"])), int(record.get("index", 0)))


def current_images(image_records: Iterable[dict]) -> dict[str, str]:
    """Map each scene id to the image of its ``ok`` images record: the one image its VQA record may describe."""
    return {r["id"]: r["image"] for r in image_records if r["status"] == "ok"}


def describes_current_image(vqa_record: dict, current: Mapping[str, str]) -> bool:
    """Whether a VQA record still holds: its scene has an ``ok`` image and the record was written about that image.

    A record without an image (a failed request) holds while its scene's image does. Pairs about an image since
    redrawn differently, or whose redraw finally failed, describe no image of the dataset: the VQA stage writes
    them again for a new image, and the export leaves them out.
    """
    scene = vqa_record["id"]
    return scene in current and vqa_record.get("image") in (None, current[scene])


def has_image_marker(pair: Mapping[str, Any]) -> bool:
    """Whether a pair's question or answer holds ``<image>``: exported as is, its row would mark two images for one.

    Trainers (LLaMA-Factory, ms-swift, ``vsfa train``) match each marker to an image and refuse such a row.
    """
    return holds_image_marker(*(str(pair.get(field, "")) for field in ("question", "answer")))


def screen_image_markers(vqa_record: dict) -> dict:
    """Return ``vqa_record`` with kept pairs that hold ``<image>`` moved to ``rejected`` with their reason.

    The VQA stage rejects such pairs itself; records written before it did are screened here on export.
    """
    marked = [pair for pair in vqa_record.get("pairs", []) if has_image_marker(pair)]
    if not marked:
        return vqa_record
    moved = [{**pair, "terms": [], "reason": IMAGE_MARKER_REASON} for pair in marked]
    kept = [pair for pair in vqa_record["pairs"] if not has_image_marker(pair)]
    return {**vqa_record, "pairs": kept, "rejected": [*vqa_record.get("rejected", []), *moved]}


def _marker_rejected(pair: Mapping[str, Any]) -> bool:
    return pair.get("reason") == IMAGE_MARKER_REASON


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s PNG: a hard link, else an atomic copy; a complete ``target`` is kept.

    Args:
        source: a complete PNG file.
        target: where it goes (named by content hash, so an intact file of the same size is the same image).
    """
    if target.is_file():
        if target.stat().st_size == source.stat().st_size and png_intact(target):
            return
        target.unlink()  # torn by a kill during an older, non-atomic copy: never keep it
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        # temporary file + rename: a kill mid-copy leaves no partial file under the final name
        atomic_write_bytes(target, source.read_bytes())


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
    stored_vqa = list(stores["vqa.jsonl"].records())
    # pairs about an image that is no longer the scene's (redrawn, or its redraw finally failed) are not in the set
    current = current_images(images)
    vqa = [screen_image_markers(r) for r in stored_vqa if describes_current_image(r, current)]
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
    marker = sum(_marker_rejected(pair) for r in vqa for pair in r.get("rejected", []))
    rejected = sum(len(r.get("rejected", [])) for r in vqa) - marker
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
            "without_current_image": len(stored_vqa) - len(vqa),
            "malformed_replies": malformed["vqa"],
            "pairs_generated": generated,
            "pairs_rejected_by_neutrality": rejected,
            "neutrality_rejection_rate": _rate(rejected, generated),
            "pairs_rejected_image_marker": marker,
            "rejected_terms": dict(sorted(term_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "usage": _usage_sum(vqa),
        },
    }


def exported_records(root: Path) -> list[dict]:
    """The VQA records the export writes, sorted by abstract and scene: ``ok`` ones with pairs left after screening.

    Only records about their scene's current ``ok`` image count (see :func:`describes_current_image`), and pairs
    that hold the ``<image>`` marker are left out (see :func:`screen_image_markers`).
    """
    current = current_images(JsonlStore(root / "images.jsonl").records())
    vqa_store = JsonlStore(root / "vqa.jsonl")
    screened = (screen_image_markers(r) for r in vqa_store.records() if describes_current_image(r, current))
    return sorted((r for r in screened if r["status"] == "ok" and r["pairs"]), key=_order)


def export_dataset(root: str | Path, *, backends: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``root/dataset/``: ``llava.json``, ``sharegpt.json``, ``dataset_info.json``, parquet, card, stats.

    Args:
        root: the run directory holding the stage records and ``images/``.
        backends: names of the backends per stage, for the card.

    Returns:
        The statistics written to ``dataset/stats.json`` (with ``examples`` and ``pairs`` counts).

    Only VQA records about their scene's current ``ok`` image are exported (see :func:`describes_current_image`):
    a scene whose image was lost and then failed to redraw is left out, counted in ``vqa.without_current_image``.
    Pairs that hold the ``<image>`` marker are left out too (see :func:`screen_image_markers`).

    Raises:
        VisalignError: no question-answer pair survived from the run's abstracts (every item failed, or the filter
            rejected all pairs), or an exported image file is missing or damaged.
    """
    root = Path(root)
    records = exported_records(root)
    if not records and (stats := compute_stats(root))["scenes"]["abstracts"]:  # (a shard given no abstracts is fine)
        raise VisalignError(_nothing_to_export(root, stats))
    out = root / DATASET_DIR
    for record in records:
        source = root / record["image"]
        if not png_intact(source):
            raise VisalignError(
                f"{source}: image of {record['id']} is missing or damaged; run the same command again to redraw it"
            )
        link_or_copy(source, out / record["image"])
    llava = [llava_entry(r) for r in records]
    sharegpt = [sharegpt_entry(r) for r in records]
    atomic_write_json(out / "llava.json", llava)
    atomic_write_json(out / "sharegpt.json", sharegpt)
    atomic_write_json(out / "dataset_info.json", llama_factory_info())
    _write_parquet(out, sharegpt)
    stats = compute_stats(root)
    stats["export"] = {"examples": len(records), "pairs": sum(len(r["pairs"]) for r in records)}
    stats["backends"] = dict(backends or {})
    atomic_write_json(out / STATS_FILE, stats)
    atomic_write_text(out / "README.md", dataset_card(stats))
    return stats


def _nothing_to_export(root: Path, stats: dict[str, Any]) -> str:
    scenes, images, vqa = stats["scenes"], stats["images"], stats["vqa"]
    scenes_ok = scenes["ok_llm"] + scenes["ok_template"] + scenes["ok_llm_topped_up"]
    return (
        f"{root}: no question-answer pair survived to export (ok: scenes {scenes_ok} of {scenes['abstracts']} "
        f"abstracts, images {images['ok']} of {images['scenes']}, VQA {vqa['ok_llm'] + vqa['ok_template']} of "
        f"{vqa['images']}; {vqa['pairs_rejected_by_neutrality']} of {vqa['pairs_generated']} pairs rejected by the "
        "neutrality filter); read the 'reason' of the failed and error records in scenes.jsonl, images.jsonl and "
        "vqa.jsonl there and check that the services answer, then run the same command again"
    )


#: The parquet copy, under ``dataset/``; the card's ``data/train-*`` pattern finds it.
PARQUET_FILE = "data/train-00000-of-00001.parquet"
#: Rows per parquet row group, and per batch of image files read: the export holds this many images at a time
#: (about 130 MB of 2 MB PNGs), however many the run made.
PARQUET_ROWS_PER_GROUP = 64


def _parquet_features() -> Features:
    """The ``datasets.Features`` of the parquet copy: ``id``, ``messages`` (role/content) and ``images`` (Image).

    Its arrow schema carries these features in the file's metadata, so ``datasets.load_dataset("parquet", ...)``
    decodes ``images`` as PIL images.
    """
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(Image()),
        }
    )


def _write_parquet(out: Path, sharegpt: list[dict]) -> None:
    """Write ``out/data/train-00000-of-00001.parquet``: the ShareGPT rows with each image's bytes embedded.

    Streamed a row group at a time, reading only that group's image files: building the whole table at once
    (``datasets.Dataset.from_dict``) held every image several times over, about 6x the images' size, which ran
    out of memory for a few thousand 2 MB images. The file is written under a hidden temporary name (which the
    card's ``data/train-*`` pattern does not match) and renamed into place, so a kill leaves the old file or none.
    An existing file that already holds exactly these rows is kept (a resume with nothing new rewrites nothing).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = _parquet_features()
    schema = features.arrow_schema
    target = out / PARQUET_FILE
    if _parquet_holds(target, features, sharegpt):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: two exports of one folder at once (a re-run beside a live one) must not share it
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            with pq.ParquetWriter(handle, schema) as writer:
                for start in range(0, len(sharegpt), PARQUET_ROWS_PER_GROUP):
                    part = sharegpt[start : start + PARQUET_ROWS_PER_GROUP]
                    rows = {
                        "id": [item["id"] for item in part],
                        "messages": [item["messages"] for item in part],
                        # Bytes are embedded so the parquet file stands alone (e.g. pushed to the Hub).
                        "images": [
                            [{"bytes": (out / path).read_bytes(), "path": path} for path in item["images"]]
                            for item in part
                        ],
                    }
                    writer.write_table(pa.Table.from_pydict(rows, schema=schema))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parquet_holds(target: Path, features: Features, sharegpt: list[dict]) -> bool:
    """Whether ``target`` is a parquet copy with ``features`` whose rows are ``sharegpt``'s, images included.

    Reads the footer and the ``id``, ``messages`` and image ``path`` columns, never the image bytes. Image files
    are named by the sha256 of their bytes (see :func:`visalign.vsfa.imagegen.store_png`), so equal paths mean
    equal embedded images. Anything unreadable counts as not holding them: the file is written again.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    if not target.is_file():
        return False
    try:
        with pq.ParquetFile(target) as parquet:
            same_features = Features.from_arrow_schema(parquet.schema_arrow) == features
            if not same_features or parquet.metadata.num_rows != len(sharegpt):
                return False
            stored = parquet.read(columns=["id", "messages", "images.list.element.path"]).to_pylist()
    except (OSError, ValueError, pa.ArrowException):  # torn, not parquet, or other columns
        return False
    wanted = [
        {"id": item["id"], "messages": item["messages"], "images": [{"path": path} for path in item["images"]]}
        for item in sharegpt
    ]
    return stored == wanted


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
    marker = vqa.get("pairs_rejected_image_marker", 0)
    marker_note = f", {marker} for an '<image>' marker in their text" if marker else ""
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
         f"{vqa['neutrality_rejection_rate']:.1%} of {vqa['pairs_generated']} pairs rejected by the neutrality filter"
         f"{marker_note}"),
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
