"""Explicit refusal fine-tuning data in the VLGuard style, built from the requests a Magic Image job trains on.

VLGuard's own training set is gated. This builds the same kind of data from open sets, from a Magic Image config:
harmful requests (as text and as typographic images) answered with the job's refusal templates, benign ones
answered with the model's own greedy answer, so fine-tuning teaches when to refuse rather than new content. The
output is LLaVA JSON for ``visalign vsfa train``, so the baseline and the magic image differ in method, not data.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from visalign.errors import VisalignError
from visalign.images import png_bytes
from visalign.llava_format import IMAGE_MARKER, holds_image_marker
from visalign.magic import Example, MagicConfig, fill_benign_targets, get_value_system, load_training_set
from visalign.models import load_vlm, weights_fingerprint
from visalign.runs import RunDir, atomic_write_json, releases_run_locks
from visalign.vsfa.imagegen import store_png


def has_words(text: str) -> bool:
    """True when ``text`` has a letter or digit: an answer worth training on."""
    return re.search(r"\w", text) is not None


def llava_record(example: Example, out_dir: Path) -> dict:
    """One LLaVA conversation: the request (images marked in the text) and its target answer.

    Raises:
        VisalignError: the request or answer holds ``<image>`` (see :mod:`visalign.llava_format`).
    """
    if holds_image_marker(example.prompt, example.target):
        raise VisalignError(f"request {example.id}: its text holds '{IMAGE_MARKER}', which would mark an extra image")
    images = [store_png(png_bytes(image), out_dir, origin=f"request {example.id}").path for image in example.images]
    record = {
        "id": example.id,
        "kind": example.kind,
        "category": example.category,
        "conversations": [
            {"from": "human", "value": IMAGE_MARKER * len(images) + ("\n" if images else "") + example.prompt},
            {"from": "gpt", "value": example.target},
        ],
    }
    if images:
        record["image"] = images if len(images) > 1 else images[0]
    return record


@releases_run_locks
def build_refusal_dataset(config: MagicConfig, value_system: str, out_dir: str | Path, *,
                          batch_size: int = 16, max_answer_tokens: int = 256) -> dict:
    """Write ``out_dir/llava.json`` (+ ``images/``, ``stats.json``, ``manifest.json``) for one value system.

    Benign answers are the model's own, generated once with ``max_answer_tokens`` (not the Magic Image job's short
    ``targets.benign_max_new_tokens``, which is a scoring prefix) and cached in ``out_dir/work/benign_targets.jsonl``
    under the model's identity (weights, chat template, dtype, device) and the batch each answer was generated in
    (:func:`visalign.magic.fill_benign_targets`); a re-run resumes from there, and a cache written under other keys
    (by a visalign before 2026-11-24, or with another ``batch_size``) is generated again. Two kinds of benign answer are
    left out and counted: one with no words (the model stopped at once) teaches nothing, and one cut at the budget
    would teach the model to stop mid-sentence, since the end-of-turn token is trained right after it. A request
    or answer that types ``<image>`` is left out too (counted in ``dropped_image_marker``): trainers refuse a
    record whose markers outnumber its images.

    Args:
        config: a Magic Image job config; its ``data`` and ``targets`` sections decide the requests and answers.
        value_system: decides which requests are harmful for ``by_value_system`` sources.
        out_dir: the output folder.
        batch_size: generation batch for the benign answers.
        max_answer_tokens: token budget of one benign answer.

    Returns:
        The statistics written to ``stats.json``.

    Raises:
        VisalignError: unknown value system, unreadable sources, an empty harmful or benign side, or an output
            folder that holds a run of another config.
    """
    out = Path(out_dir)
    system = get_value_system(config.value_systems_file, value_system)
    # the weights, not only the path: a checkpoint rebuilt or retrained in place must not resume the old answers
    job = {"builder": "refusal-data", "value_system": value_system, "magic_config": config.model_dump(mode="json"),
           "weights": weights_fingerprint(config.model), "max_answer_tokens": max_answer_tokens}
    run = RunDir(out)
    run.lock()  # before the manifest is read and the work folder written: one job in this folder at a time
    resuming = run.read_manifest() is not None
    if resuming:  # another config's run is refused before its work files are touched
        run.write_manifest(job, seeds=config.seed)
    data = load_training_set(config, system, out / "work")
    if not resuming:  # after the sources are read: a mistyped path leaves no run that refuses the corrected config
        run.write_manifest(job, seeds=config.seed)
    vlm = load_vlm(config.model, dtype=config.dtype, device=config.device)
    answers = config.targets.model_copy(update={"benign_max_new_tokens": max_answer_tokens})
    # a request that types the marker is left out before its answer is generated: its record could not be used
    benign = [e for e in data.benign if not holds_image_marker(e.prompt, e.target)]
    generated = fill_benign_targets(vlm, benign, answers, out / "work" / "benign_targets.jsonl",
                                    batch_size=batch_size)
    marked = [e for e in data.harmful + data.benign if holds_image_marker(e.prompt, e.target)]
    usable = [e for e in data.harmful + benign
              if has_words(e.target) and e.complete and not holds_image_marker(e.prompt, e.target)]
    if not any(e.kind == "benign" for e in usable):  # a refusal-only set would teach refusing everything
        empty = sum(not has_words(e.target) for e in benign)
        cut = sum(has_words(e.target) and not e.complete for e in benign)
        typed = sum(e.kind == "benign" for e in marked)
        typed_note = f", {typed} with {IMAGE_MARKER} in their text" if typed else ""
        raise VisalignError(
            f"{out}: none of the {len(data.benign)} benign answers is usable ({empty} empty, {cut} cut at "
            f"--max-answer-tokens {max_answer_tokens}{typed_note}); raise --max-answer-tokens, or check the "
            f"model's answers in {out / 'work' / 'benign_targets.jsonl'}"
        )
    records = [llava_record(example, out) for example in usable]
    atomic_write_json(out / "llava.json", records)
    if data.errors:
        atomic_write_json(out / "errors.json", [error.model_dump() for error in data.errors])
    stats = {
        "value_system": value_system,
        "model": config.model,
        "examples": len(records),
        "by_kind": dict(Counter(record["kind"] for record in records)),
        "with_image": dict(Counter(record["kind"] for record in records if "image" in record)),
        "benign_answers_generated": generated,
        "benign_dropped_empty_answer": sum(not has_words(example.target) for example in benign),
        "benign_dropped_cut_answer": sum(has_words(e.target) and not e.complete for e in benign),
        "dropped_image_marker": len(marked),
        "max_answer_tokens": max_answer_tokens,
        "source_errors": len(data.errors),
        "refusal_templates": list(config.targets.refusal_templates),
    }
    atomic_write_json(out / "stats.json", stats)
    return stats
