"""The VSFA data job end to end: corpus -> scenes -> images -> neutral VQA -> export, resumable and shardable."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from visalign.errors import VisalignError
from visalign.runs import JsonlStore, RunDir, atomic_write_json, releases_run_locks, sha256_file
from visalign.vsfa.config import OpenAIChatConfig, OpenAIImagesConfig, VsfaDataConfig
from visalign.vsfa.corpus import load_corpus
from visalign.vsfa.export import CORPUS_STATS, describes_current_image, export_dataset
from visalign.vsfa.imagegen import make_image_backend, png_intact
from visalign.vsfa.images_stage import draw_scene
from visalign.vsfa.llm import make_chat_backend
from visalign.vsfa.neutrality import NeutralityFilter
from visalign.vsfa.records import Abstract
from visalign.vsfa.scenes import generate_scenes
from visalign.vsfa.stage import StageReport, run_stage
from visalign.vsfa.templates import load_template
from visalign.vsfa.vqa import generate_pairs


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0/1`` is the whole job)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``i/n`` (0-based ``i``).

        Raises:
            VisalignError: not of the form ``i/n`` with ``0 <= i < n``.
        """
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
            raise VisalignError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, items: list) -> list:
        """Return this shard's items: every ``count``-th, starting at ``index`` (balanced, deterministic)."""
        return items[self.index :: self.count]


def _select(config: VsfaDataConfig, shard: Shard) -> tuple[list[Abstract], dict[str, Any]]:
    corpus = load_corpus(config.corpus, seed=config.seed)
    # The selection is deterministic for a config, so positions are stable across machines.
    mine = shard.take(corpus.abstracts)
    return mine, {**corpus.stats(), "shard": str(shard), "in_shard": len(mine)}


def estimate(config: VsfaDataConfig, abstracts: list[Abstract], out: Path | None = None) -> dict[str, Any]:
    """Return the plan of a run: how many calls each stage makes, how many are already done, and the cost.

    Token counts are estimated from the rendered prompts (about 4 characters a token) and the configured
    image token price; only calls not already recorded under ``out`` are counted as remaining.
    """
    n_abstracts = len(abstracts)
    n_scenes = n_abstracts * config.scenes.per_abstract
    done = {"scenes": 0, "images": 0, "vqa": 0}
    if out is not None:
        for stage in done:
            path = out / f"{stage}.jsonl"
            if path.is_file():
                done[stage] = sum(r.get("status") in ("ok", "failed") for r in JsonlStore(path).records())
    template = load_template(config.scenes.prompt)
    scene_prompt_chars = sum(
        len(template.system) + len(template.user) + len(a.abstract) + len(a.title) for a in abstracts
    )
    plan: dict[str, Any] = {"abstracts": n_abstracts, "scenes": n_scenes, "stages": {}}
    for stage, calls, chars_in, tokens_out, section in (
        ("scenes", n_abstracts, scene_prompt_chars, 150 * config.scenes.per_abstract, config.scenes.llm),
        ("vqa", n_scenes, n_scenes * 1600, 70 * config.vqa.per_image, config.vqa.llm),
    ):
        remaining = max(0, calls - done[stage])
        entry = {"calls": calls, "done": done[stage], "remaining": remaining, "backend": section.backend}
        if isinstance(section, OpenAIChatConfig):
            per_call_in = (chars_in / max(calls, 1)) / 4 + (section.image_prompt_tokens if stage == "vqa" else 0)
            tokens_in, tokens_gen = remaining * per_call_in, remaining * tokens_out
            entry["est_prompt_tokens"] = int(tokens_in)
            entry["est_completion_tokens"] = int(tokens_gen)
            entry["est_cost_usd"] = round(
                (tokens_in * section.input_usd_per_mtok + tokens_gen * section.output_usd_per_mtok) / 1e6, 4
            )
        else:
            entry["est_cost_usd"] = 0.0
        plan["stages"][stage] = entry
    generator = config.images.generator
    remaining_images = max(0, n_scenes - done["images"])
    plan["stages"]["images"] = {
        "calls": n_scenes,
        "done": done["images"],
        "remaining": remaining_images,
        "backend": generator.backend,
        "est_cost_usd": round(remaining_images * generator.usd_per_image, 4)
        if isinstance(generator, OpenAIImagesConfig)
        else 0.0,
    }
    plan["est_cost_usd"] = round(sum(s["est_cost_usd"] for s in plan["stages"].values()), 4)
    plan["note"] = "estimates assume one attempt per call; malformed replies that are re-asked cost extra"
    return plan


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


@releases_run_locks
def build_dataset(
    config: VsfaDataConfig,
    out: str | Path,
    *,
    shard: Shard | None = None,
    dry_run: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run (or plan) the VSFA data job into ``out``; a re-run with the same config resumes.

    Args:
        config: the job config.
        out: the run directory (``manifest.json``, stage JSONL records, ``images/``, ``dataset/``).
        shard: process only this shard's abstracts (merge shard directories with :func:`merge_shards`).
        dry_run: only return the plan and estimated cost; nothing is written or called.
        show_progress: draw rich progress bars on stderr.

    Returns:
        ``{"plan": ...}`` for a dry run; otherwise the export statistics plus per-stage session reports.

    Raises:
        VisalignError: bad corpus or config, a missing API key (named), a dead endpoint, ``out`` holding a
            different config or shard, or no question-answer pair surviving to export (the records are kept).
    """
    out = Path(out)
    shard = shard or Shard()
    abstracts, corpus_stats = _select(config, shard)
    if dry_run:
        return {"plan": estimate(config, abstracts, out if out.exists() else None), "corpus": corpus_stats}
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    # Backends first: a missing API key fails before anything is written.
    scene_llm = make_chat_backend(config.scenes.llm, cache_dir / "chat")
    same_llm = config.vqa.llm == config.scenes.llm
    vqa_llm = scene_llm if same_llm else make_chat_backend(config.vqa.llm, cache_dir / "chat")
    painter = make_image_backend(config.images.generator, cache_dir / "images")
    templates = {
        "scenes": load_template(config.scenes.prompt),
        "images": load_template(config.images.prompt),
        "vqa": load_template(config.vqa.prompt),
    }
    neutrality = NeutralityFilter.load(config.vqa.terms)
    backends = {"scenes": scene_llm.name, "images": painter.name, "vqa": vqa_llm.name}

    run = RunDir(out)
    run.lock()  # before the manifest's shard is read: the check and write_manifest are one step for this job
    existing = run.read_manifest()
    if existing is not None and existing.get("extra", {}).get("shard", "0/1") != str(shard):
        raise VisalignError(f"{out}: holds shard {existing['extra'].get('shard')}, not {shard}; use its own --out")
    inputs = {"corpus": config.corpus.path} if config.corpus.source == "file" else None
    run.write_manifest(
        config,
        seeds={"seed": config.seed},
        inputs=inputs,
        # an edited or replaced corpus would mix two corpora's records in one run (merge-shards refuses it too)
        pinned={"corpus": sha256_file(Path(config.corpus.path))} if inputs else None,
        extra={
            "shard": str(shard),
            "backends": backends,
            "prompts": {k: t.name for k, t in templates.items()},
            "neutrality_terms": neutrality.version,
        },
    )
    atomic_write_json(out / CORPUS_STATS, corpus_stats)
    corpus_store = run.store("corpus.jsonl")
    for abstract in abstracts:
        if abstract.id not in corpus_store:
            corpus_store.append(abstract.model_dump())

    reports = asyncio.run(
        _run_stages(config, out, abstracts, scene_llm, painter, vqa_llm, templates, neutrality, show_progress)
    )
    stats = export_dataset(out, backends=backends)
    stats["session"] = {name: report.__dict__ for name, report in reports.items()}
    return stats


async def _run_stages(config, out, abstracts, scene_llm, painter, vqa_llm, templates, neutrality, show_progress):
    reports: dict[str, StageReport] = {}
    stores = {name: JsonlStore(out / f"{name}.jsonl") for name in ("scenes", "images", "vqa")}
    try:
        with _progress(show_progress) as progress:
            reports["scenes"] = await run_stage(
                "scenes",
                [(a.id, a) for a in abstracts],
                lambda a: generate_scenes(a, scene_llm, config.scenes, templates["scenes"]),
                stores["scenes"],
                concurrency=scene_llm.concurrency * 2,
                progress=progress,
            )
            scene_entries = [
                {**entry, "abstract_id": a.id}
                for a in abstracts
                if (record := stores["scenes"].get(a.id)) and record["status"] == "ok"
                for entry in record["scenes"]
            ]
            reports["images"] = await run_stage(
                "images",
                [(e["id"], e) for e in scene_entries],
                lambda e: draw_scene(e, painter, out, templates["images"], config.seed),
                stores["images"],
                concurrency=painter.concurrency * 2,
                progress=progress,
                # an image file deleted, truncated or damaged (in a copy) since it was drawn is drawn again
                still_valid=lambda r: r["status"] != "ok" or png_intact(out / r["image"]),
            )
            by_id = {e["id"]: e for e in scene_entries}
            image_entries = [
                {
                    "id": e["id"],
                    "abstract_id": e["abstract_id"],
                    "index": e["index"],
                    "image": record["image"],
                    "scene": by_id[e["id"]],
                }
                for e in scene_entries
                if (record := stores["images"].get(e["id"])) and record["status"] == "ok"
            ]
            current_image = {e["id"]: e["image"] for e in image_entries}
            reports["vqa"] = await run_stage(
                "vqa",
                [(e["id"], e) for e in image_entries],
                lambda e: generate_pairs(e, out, vqa_llm, config.vqa, templates["vqa"], neutrality),
                stores["vqa"],
                concurrency=vqa_llm.concurrency * 2,
                progress=progress,
                # pairs written about an image that has since been redrawn differently are written again
                still_valid=lambda r: describes_current_image(r, current_image),
            )
    finally:
        for store in stores.values():
            store.close()
        for backend in {id(b): b for b in (scene_llm, vqa_llm, painter)}.values():
            await backend.aclose()
    return reports
