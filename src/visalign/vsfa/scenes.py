"""Stage 2: an LLM turns each abstract into N concrete, depictable scene descriptions (validated JSON)."""

from __future__ import annotations

from visalign.vsfa.config import ScenesConfig
from visalign.vsfa.fallback import templated_scenes
from visalign.vsfa.llm import ChatBackend, Message
from visalign.vsfa.parsing import MalformedOutput, copies_prompt_example, parse_reply, repair_request
from visalign.vsfa.records import Abstract, Scene, SceneBatch, Usage
from visalign.vsfa.templates import PromptTemplate


def scene_id(abstract_id: str, index: int) -> str:
    """The stable id of scene ``index`` of an abstract."""
    return f"{abstract_id}:s{index}"


def scene_messages(template: PromptTemplate, abstract: Abstract, count: int) -> list[Message]:
    """Build the first request for one abstract."""
    system, user = template.render(count=count, title=abstract.title or "(untitled)", abstract=abstract.abstract)
    return ([Message("system", system)] if system else []) + [Message("user", user)]


def _scene_entries(abstract_id: str, scenes: list[Scene], sources: list[str]) -> list[dict]:
    return [
        {"id": scene_id(abstract_id, index), "index": index, "source": source, **scene.model_dump()}
        for index, (scene, source) in enumerate(zip(scenes, sources, strict=True))
    ]


def _usable_scenes(text: str, prompt: str, count: int) -> list[Scene]:
    """The reply's scenes minus those that copy the prompt's example; at most ``count``."""
    scenes = [scene for scene in parse_reply(text, SceneBatch).scenes if not copies_prompt_example(scene, prompt)]
    if not scenes:
        raise MalformedOutput("every scene copies the example shape of the prompt instead of describing a scene")
    return scenes[:count]


async def generate_scenes(
    abstract: Abstract, backend: ChatBackend, config: ScenesConfig, template: PromptTemplate
) -> dict:
    """Ask ``backend`` for the abstract's scenes, re-asking on malformed or short output; return the stage record.

    A reply with fewer scenes than asked is re-asked for the rest; the best reply is kept. With
    ``template_fallback`` the missing scenes are templated: the record's ``source`` is ``llm``, ``template`` or
    ``llm+template`` and every scene carries its own ``source``. The record has ``status`` ``ok`` or ``failed``
    with the reasons of every attempt, plus the usage of all attempts.

    Raises:
        visalign.clients.ClientError: the service failed after the client's own retries.
    """
    count = config.per_abstract
    messages = scene_messages(template, abstract, count)
    prompt = "\n".join(message.text for message in messages)
    usage, reasons, best = Usage(), [], []
    for attempt in range(1, config.max_attempts + 1):
        reply = await backend.complete(messages, json_mode=True)
        usage = usage.add(reply.usage)
        try:
            scenes = _usable_scenes(reply.text, prompt, count)
        except MalformedOutput as exc:
            reason = str(exc)
        else:
            if len(scenes) == count:
                entries = _scene_entries(abstract.id, scenes, ["llm"] * count)
                return _record(abstract, "ok", "llm", attempt, reasons, entries, backend, template, usage)
            best = max(best, scenes, key=len)
            reason = f"{len(scenes)} usable scene(s) of the {count} asked for"
        reasons.append(reason)
        messages = [*messages, Message("assistant", reply.text[:4000]), Message("user", repair_request(reason))]
    attempts = config.max_attempts
    if config.template_fallback:
        templated = templated_scenes(abstract.id, abstract.title, abstract.abstract, count)[len(best) :]
        sources = ["llm"] * len(best) + ["template"] * len(templated)
        source = "llm+template" if best else "template"
        entries = _scene_entries(abstract.id, [*best, *templated], sources)
        return _record(abstract, "ok", source, attempts, reasons, entries, backend, template, usage)
    if best:
        entries = _scene_entries(abstract.id, best, ["llm"] * len(best))
        return _record(abstract, "ok", "llm", attempts, reasons, entries, backend, template, usage)
    return _record(abstract, "failed", "llm", attempts, reasons, [], backend, template, usage)


def _record(
    abstract: Abstract,
    status: str,
    source: str,
    attempts: int,
    reasons: list[str],
    scenes: list[dict],
    backend: ChatBackend,
    template: PromptTemplate,
    usage: Usage,
) -> dict:
    return {
        "id": abstract.id,
        "status": status,
        "source": source,
        "attempts": attempts,
        "malformed": reasons,
        "reason": f"no valid JSON after {attempts} attempt(s): {reasons[-1]}" if status == "failed" else None,
        "scenes": scenes,
        "backend": backend.name,
        "prompt": template.name,
        "usage": usage.model_dump(),
    }
