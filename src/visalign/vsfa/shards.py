"""Merging the run directories of a sharded job (``--shard i/n`` on several machines) into one dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visalign.errors import VisalignError
from visalign.runs import JsonlStore, RunDir, atomic_write_json, releases_run_locks
from visalign.vsfa.export import (
    CORPUS_STATS,
    DATASET_DIR,
    STATS_FILE,
    STORES,
    export_dataset,
    exported_records,
    link_or_copy,
)
from visalign.vsfa.imagegen import png_intact

_SUMMED = ("in_shard",)


def _read_shard(path: Path) -> dict[str, Any]:
    manifest = RunDir(path).read_manifest()
    if manifest is None:
        raise VisalignError(f"{path}: no manifest.json; is this the --out directory of a shard run?")
    return manifest


def _check_same_inputs(paths: list[Path], manifests: list[dict[str, Any]]) -> None:
    """Refuse shards that read different input files under one config (a corpus file edited between runs)."""
    first = {name: record.get("sha256") for name, record in (manifests[0].get("inputs") or {}).items()}
    for path, manifest in zip(paths[1:], manifests[1:], strict=True):
        inputs = {name: record.get("sha256") for name, record in (manifest.get("inputs") or {}).items()}
        for name in sorted(set(first) | set(inputs)):
            if first.get(name) != inputs.get(name):
                ours, theirs = str(first.get(name))[:12], str(inputs.get(name))[:12]
                raise VisalignError(
                    f"merge-shards: {paths[0]} and {path} read different {name} files (sha256 {ours} != "
                    f"{theirs}); re-run the shards on one {name} file"
                )


def _rerun(path: Path, spec: str) -> str:
    """The command that finishes or repairs the shard run in ``path`` (its config file is not recorded)."""
    return f"`visalign vsfa data --config <its config> --out {path} --shard {spec}`"


def _check_finished(path: Path, spec: str) -> None:
    """Refuse a shard whose ``vsfa data`` run stopped before its stages all finished.

    The run's export, which writes ``dataset/stats.json`` last, runs only after every stage: a shard killed or
    stopped earlier has none, and merging it would leave its share of the corpus out without a word.
    """
    if not (path / DATASET_DIR / STATS_FILE).is_file():
        raise VisalignError(
            f"merge-shards: shard {spec} ({path}) has not finished (no {DATASET_DIR}/{STATS_FILE}: its run stopped "
            f"before the export); run {_rerun(path, spec)} again to finish it, then merge-shards again"
        )


def _check_images(path: Path, spec: str) -> None:
    """Refuse a shard whose exported records point at a missing or damaged image of its own.

    Only ``vsfa data`` draws images (and draws such an image again on a re-run); merge-shards copies them.
    """
    for record in exported_records(path):
        image = path / record["image"]
        if not png_intact(image):
            raise VisalignError(
                f"{image}: image of {record['id']} in shard {spec} is missing or damaged; run {_rerun(path, spec)} "
                "again to redraw it, then merge-shards again"
            )


@releases_run_locks
def merge_shards(shard_dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Merge shard run directories into ``out`` and export the combined dataset.

    The shards must come from the same config (same config hash), have read the same input files (the corpus
    file's sha256 in each manifest), together cover ``0/n`` .. ``n-1/n`` exactly once, and each have finished (its
    own export written) with every image it exports whole. Records are unioned by key, images copied (or
    hard-linked) by content hash.

    Args:
        shard_dirs: the ``--out`` directories of the shard runs.
        out: the merged run directory (created; may be re-run with the same shards).

    Returns:
        The export statistics of the merged dataset.

    Raises:
        VisalignError: a directory is not a shard run, configs or input files differ, shards are missing or
            repeated, a shard's run has not finished, or a shard's image is missing or damaged.
    """
    paths = [Path(p) for p in shard_dirs]
    if not paths:
        raise VisalignError("merge-shards: give at least one shard directory")
    manifests = [_read_shard(p) for p in paths]
    hashes = {m["config_hash"] for m in manifests}
    if len(hashes) != 1:
        raise VisalignError(
            f"merge-shards: the shards were run with {len(hashes)} different configs; merge only shards of one config"
        )
    _check_same_inputs(paths, manifests)
    specs = [str(m.get("extra", {}).get("shard", "0/1")) for m in manifests]
    counts = {int(spec.split("/")[1]) for spec in specs}
    if len(counts) != 1:
        raise VisalignError(f"merge-shards: shards disagree on the shard count: {sorted(specs)}")
    count = counts.pop()
    indices = sorted(int(spec.split("/")[0]) for spec in specs)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise VisalignError(
            f"merge-shards: need each of shards 0..{count - 1} once; missing {missing or 'none'}, "
            f"repeated {repeated or 'none'}"
        )
    for path, spec in zip(paths, specs, strict=True):
        _check_finished(path, spec)
        _check_images(path, spec)
    out = Path(out)
    first = manifests[0]
    RunDir(out).write_manifest(
        first["config"],
        seeds=first.get("seeds"),
        extra={**first.get("extra", {}), "shard": "merged", "merged_from": [str(p) for p in paths]},
    )
    for name in STORES:
        with JsonlStore(out / name) as target:
            for path in paths:
                for record in JsonlStore(path / name).records():
                    if target.get(record["id"]) != record:
                        target.append(record)
    for path in paths:
        for image in sorted((path / "images").glob("*.png")):
            if png_intact(image):  # a damaged shard file must not replace a good copy of the same image
                link_or_copy(image, out / "images" / image.name)
    corpus = [json.loads((p / CORPUS_STATS).read_text()) for p in paths if (p / CORPUS_STATS).is_file()]
    merged = dict(corpus[0]) if corpus else {}
    merged["in_shard"] = sum(c.get("in_shard", 0) for c in corpus)
    merged["shard"] = "merged"
    atomic_write_json(out / CORPUS_STATS, merged)
    return export_dataset(out, backends=first.get("extra", {}).get("backends"))
