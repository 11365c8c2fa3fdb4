"""Reading a model's JSON answer: find the object in the text, validate it, and say why when it fails."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class MalformedOutput(ValueError):
    """The model's text did not hold a valid object; ``str(exc)`` is the one-line reason kept in records."""


def extract_json_object(text: str) -> dict:
    """Return the first JSON object in ``text`` (code fences and surrounding prose are tolerated).

    Raises:
        MalformedOutput: no ``{`` at all, or no position where a complete JSON object parses.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    if start < 0:
        raise MalformedOutput("no JSON object in the reply")
    last_error = ""
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            last_error = exc.msg
        else:
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    raise MalformedOutput(f"reply is not valid JSON ({last_error or 'no object'})")


def parse_reply(text: str, model: type[ModelT]) -> ModelT:
    """Extract and validate the JSON object in ``text`` as ``model``.

    Raises:
        MalformedOutput: not JSON, or the object does not match the schema (names the first bad field).
    """
    data = extract_json_object(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(object)"
        raise MalformedOutput(f"JSON does not match the schema at '{where}': {first['msg']}") from None


def copies_prompt_example(item: BaseModel, prompt: str, ignore: frozenset[str] = frozenset()) -> bool:
    """True when a string field of ``item`` (outside ``ignore``) is a quoted value of ``prompt``.

    Small models often return the prompt's example shape verbatim (``"title": "short name"``): schema-valid, yet it
    describes nothing. A real answer does not reproduce a quoted string of the prompt exactly.
    """

    def strings(value: object) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [text for entry in value for text in strings(entry)]
        return []

    data = item.model_dump()
    quoted = [json.dumps(text) for field in data if field not in ignore for text in strings(data[field])]
    return any(text != '""' and text in prompt for text in quoted)


def repair_request(reason: str) -> str:
    """The follow-up user message sent after a malformed reply (it also changes the request, so no cache hit)."""
    return (
        f"Your previous reply could not be used: {reason}. Answer again with only the JSON object, in exactly "
        "the shape asked for, and nothing else."
    )
