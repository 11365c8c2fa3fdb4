"""Stage 4: neutral question-answer pairs for each image, then the neutrality filter."""

from __future__ import annotations

import re
from pathlib import Path

from visalign.llava_format import holds_image_marker
from visalign.vsfa.config import VqaConfig
from visalign.vsfa.fallback import grounded_pairs
from visalign.vsfa.llm import ChatBackend, Message
from visalign.vsfa.neutrality import NeutralityFilter
from visalign.vsfa.parsing import MalformedOutput, copies_prompt_example, parse_reply, repair_request
from visalign.vsfa.records import QABatch, QAPair, Scene, Usage
from visalign.vsfa.templates import PromptTemplate

#: Why a pair that types ``<image>`` was rejected: the export puts one marker per image (and screens on this reason).
IMAGE_MARKER_REASON = "the text holds the '<image>' marker (the export puts one per image, before the first question)"


# Names models use for our question types.
_TYPE_ALIASES = {
    "description": "description", "describe": "description", "caption": "description",
    "objects": "objects", "object": "objects", "object recognition": "objects",
    "counting": "counting", "count": "counting",
    "colours": "colours", "colour": "colours", "colors": "colours", "color": "colours",
    "spatial": "spatial", "spatial relations": "spatial", "spatial relation": "spatial", "position": "spatial",
    "reasoning": "reasoning", "scene reasoning": "reasoning", "scene": "reasoning",
}  # fmt: skip


def normalise_type(name: str) -> str | None:
    """Map a model's question-type label to one of ours, or None when unknown."""
    return _TYPE_ALIASES.get(re.sub(r"[\s_\-]+", " ", name.strip().lower()))


def vqa_messages(template: PromptTemplate, scene: Scene, png: bytes, config: VqaConfig) -> list[Message]:
    """Build the first request for one image: the prompt plus the image as an image part."""
    system, user = template.render(count=config.per_image, types=", ".join(config.types), scene=scene.description)
    return ([Message("system", system)] if system else []) + [Message("user", user, images=[png])]


def _usable_pairs(batch: QABatch, config: VqaConfig, prompt: str) -> list[QAPair]:
    """The pairs with a known question type that do not copy the prompt's example (``"..."``)."""
    pairs = []
    for pair in batch.pairs:
        if copies_prompt_example(pair, prompt, ignore=frozenset({"type"})):
            continue
        kind = normalise_type(pair.type)
        if kind is not None and kind in config.types:
            pairs.append(pair.model_copy(update={"type": kind}))
    if not pairs:
        raise MalformedOutput(f"no pair has a question type among {config.types} and its own question and answer")
    return pairs[: config.per_image]


async def generate_pairs(
    entry: dict,
    root: Path,
    backend: ChatBackend,
    config: VqaConfig,
    template: PromptTemplate,
    neutrality: NeutralityFilter,
) -> dict:
    """Ask ``backend`` for neutral pairs about one image, filter them, and return the stage record.

    Args:
        entry: ``{"id", "abstract_id", "index", "image", "scene": {...}}`` for one stored image.
        root: the run directory the image path is relative to.
        backend: a vision-capable chat backend.
        config: the VQA section of the job config.
        template: the VQA prompt template.
        neutrality: the term filter; pairs it flags go to ``rejected`` with the words that matched. A pair that
            writes the ``<image>`` marker goes there too, with a ``reason``: the export puts one marker per image.

    Raises:
        visalign.clients.ClientError: the service failed after the client's own retries.
    """
    scene = Scene.model_validate(entry["scene"])
    png = (root / entry["image"]).read_bytes()
    messages = vqa_messages(template, scene, png, config)
    prompt = "\n".join(message.text for message in messages)
    usage, reasons, pairs, source, attempts = Usage(), [], None, "llm", 0
    for attempt in range(1, config.max_attempts + 1):
        attempts = attempt
        reply = await backend.complete(messages, json_mode=True)
        usage = usage.add(reply.usage)
        try:
            pairs = _usable_pairs(parse_reply(reply.text, QABatch), config, prompt)
            break
        except MalformedOutput as exc:
            reasons.append(str(exc))
            # The image is sent once; the repair turn is text only.
            messages = [*messages, Message("assistant", reply.text[:4000]), Message("user", repair_request(str(exc)))]
    if pairs is None and config.template_fallback:
        pairs, source = grounded_pairs(scene, list(config.types), config.per_image), "template"
    record = {
        "id": entry["id"],
        "abstract_id": entry["abstract_id"],
        "index": entry["index"],
        "image": entry["image"],
        "backend": backend.name,
        "prompt": template.name,
        "attempts": attempts,
        "malformed": reasons,
        "usage": usage.model_dump(),
        "terms_version": neutrality.version,
        "asked": config.per_image,  # the template fallback may give fewer: it never repeats a pair
    }
    if pairs is None:
        reason = f"no valid JSON after {attempts} attempt(s): {reasons[-1]}"
        return {**record, "status": "failed", "source": source, "reason": reason, "pairs": [], "rejected": []}
    kept, rejected = [], []
    for number, pair in enumerate(pairs):
        item = {"id": f"{entry['id']}:q{number}", **pair.model_dump()}
        if holds_image_marker(pair.question, pair.answer):  # counted apart from the filter's rejections: no terms
            rejected.append({**item, "terms": [], "reason": IMAGE_MARKER_REASON})
        elif hits := neutrality.find(f"{pair.question}\n{pair.answer}"):
            rejected.append({**item, "terms": sorted({hit.word.lower() for hit in hits})})
        else:
            kept.append(item)
    return {**record, "status": "ok", "source": source, "reason": None, "pairs": kept, "rejected": rejected}
