"""Deterministic replies for the stand-in server: valid scene and VQA JSON derived from the request text.

Scripted misbehaviour keyed by words in the abstract: "MALFORMED-ONCE" gets prose first and JSON after the repair
turn; "MALFORMED-ALWAYS" never gets JSON; "UNSAFE-WORDS" gets pairs that use safety vocabulary; "ECHO-EXAMPLE"
gets the prompt's own example shape back (as small models do), for scenes and, via "ECHO-PAIRS", for VQA pairs;
"SHORT-ONCE" gets one scene first and all after the repair turn; "SHORT-ALWAYS" always gets one scene.
"""

from __future__ import annotations

import hashlib
import json
import re

COLOURS = ["red", "blue", "green", "grey", "amber", "white", "black", "orange"]
OBJECTS = ["monitor", "drone", "cable", "door", "desk", "robot arm", "screen", "lamp", "truck", "camera"]


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def _pick(seed: str, items: list[str], n: int) -> list[str]:
    digest = hashlib.sha256(seed.encode()).digest()
    return [items[b % len(items)] for b in digest[:n]]


def scenes_json(abstract: str, count: int) -> str:
    scenes = []
    for i in range(count):
        seed = f"{abstract}:{i}"
        objects = sorted(set(_pick(seed, OBJECTS, 3)))
        scenes.append(
            {
                "title": f"Scene {i} {hashlib.sha256(seed.encode()).hexdigest()[:6]}",
                "description": f"A dim room where a {objects[0]} stands next to a {objects[-1]}, scene {i} of "
                f"{' '.join(abstract.split()[:4]).lower()}." + (" UNSAFE" if "UNSAFE-WORDS" in abstract else "")
                + (" ECHO" if "ECHO-PAIRS" in abstract else ""),
                "setting": "a dim room",
                "objects": objects,
                "colours": sorted(set(_pick(seed + "c", COLOURS, 2))),
                "layout": f"The {objects[0]} is left of the {objects[-1]}.",
            }
        )
    return json.dumps({"scenes": scenes})


def pairs_json(scene: str, count: int, unsafe: bool) -> str:
    types = ["description", "objects", "counting", "colours", "spatial", "reasoning"]
    pairs = []
    for i in range(count):
        answer = f"It shows {scene[:60].lower()} (pair {i})."
        if unsafe and i % 2 == 0:
            answer = "This looks dangerous and harmful; it may violate safety policies."
        pairs.append({"type": types[i % len(types)], "question": f"Question {i} about the image?", "answer": answer})
    return json.dumps({"pairs": pairs})


def example_shape(prompt: str) -> str:
    """The JSON example the prompt asks for, copied verbatim (what a small model often answers)."""
    return prompt.split("Return exactly this JSON shape:", 1)[1].strip()


def scripted_reply(request: dict) -> str:
    messages = request["messages"]
    first_user = next(_text(m) for m in messages if m["role"] == "user")
    repaired = messages[-1]["role"] == "user" and "could not be used" in _text(messages[-1])
    if "scenes that show" in first_user:
        count = int(re.search(r"write (\d+) distinct scenes", first_user).group(1))
        abstract = first_user.split("Abstract:", 1)[1].split("\n", 1)[0]
        if "MALFORMED-ALWAYS" in abstract or ("MALFORMED-ONCE" in abstract and not repaired):
            return "Sure! Here are some scenes: a room, a drone."
        if "ECHO-EXAMPLE" in abstract:
            return example_shape(first_user)
        if "SHORT-ALWAYS" in abstract or ("SHORT-ONCE" in abstract and not repaired):
            count = 1
        return scenes_json(abstract, count)
    count = int(re.search(r"Write (\d+) question-answer pairs", first_user).group(1))
    scene = first_user.split("scene description:", 1)[1].split("\n", 1)[0].strip()
    if scene.endswith("ECHO"):
        return example_shape(first_user)
    return pairs_json(scene, count, unsafe="UNSAFE" in scene)
