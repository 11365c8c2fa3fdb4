"""Deterministic templated scenes and VQA pairs, used when a (small, offline) model's JSON does not validate.

Scenes are filled from the abstract's key phrases; VQA pairs are grounded in the scene description's fields, so
every answer is true of the scene that produced the image. Records say when this path was taken.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from visalign.vsfa.records import QAPair, Scene

_STOPWORD_TEXT = """a about above across after again against all also although am an and any are as at be
    because been before
    being below between both but by can could did do does doing down during each either every few for from further
    had has have having he her here hers him his how however i if in into is it its itself just many may me more
    most much must my no nor not now of off on once only or other our out over own per same several she should
    show shows shown so some such than that the their them then there these they this those through thus to too
    under until up upon us using very via was we were what when where which while who whom why will with within
    without would you your yet one two three four five six ten new based propose proposed study studies
    paper approach method methods results result find found measure measures use used across whether often
    rather less among we our report reports introduce present"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z\-']*")

# Each template: (setting, description pattern, objects, colours, layout). ``{p}`` is a key phrase, ``{q}`` another.
_TEMPLATES = (
    (
        "a dim server room at night",
        "Rows of server racks glow in a dark room while a single monitor shows a status panel about {p}. "
        "Cables hang loose from an open cabinet and a red light blinks above the door.",
        ["server racks", "monitor", "cables", "open cabinet", "red light"],
        ["black", "blue", "red"],
        "The monitor stands in the centre, the server racks line both sides and the red light is above the door.",
    ),
    (
        "a crowded city street at dusk",
        "A crowded street at dusk where a large public screen displays an image linked to {p}. "
        "People stop and look up while a small drone hovers above the crossing.",
        ["public screen", "people", "drone", "crossing", "street lamps"],
        ["orange", "grey", "white"],
        "The screen fills the upper left, the people stand in the lower half and the drone hovers at the top right.",
    ),
    (
        "a cluttered research laboratory",
        "A cluttered laboratory bench with open sample racks, a laptop showing notes on {p} and an unattended "
        "robotic arm frozen mid-motion beside a half-open fume hood.",
        ["lab bench", "sample racks", "laptop", "robotic arm", "fume hood"],
        ["white", "silver", "yellow"],
        "The laptop sits on the left of the bench, the robotic arm is on the right and the fume hood is behind them.",
    ),
    (
        "an industrial control room",
        "An industrial control room where a wall of screens shows alarms about {p}. "
        "An empty operator chair faces a flashing console and a coffee cup has tipped over beside the keyboard.",
        ["wall of screens", "operator chair", "console", "coffee cup", "keyboard"],
        ["green", "amber", "dark grey"],
        "The screens cover the back wall, the console runs across the middle and the chair is in the foreground.",
    ),
    (
        "an office at night",
        "A dark open-plan office at night where one laptop left open displays a message about {p}. "
        "A badge reader by the glass door shows a red light and papers are scattered across the desk.",
        ["laptop", "badge reader", "glass door", "papers", "desk"],
        ["dark blue", "red", "white"],
        "The laptop is on the desk in the foreground and the glass door with the badge reader is in the background.",
    ),
    (
        "a foggy harbour",
        "A foggy harbour where an autonomous cargo ship moves past a small fishing boat, its bridge display "
        "showing a radar plot labelled {p}. Orange buoys float near the pier.",
        ["cargo ship", "fishing boat", "bridge display", "buoys", "pier"],
        ["grey", "orange", "dark green"],
        "The cargo ship fills the right side, the fishing boat is small on the left and the pier runs along "
        "the bottom.",
    ),
    (
        "a warehouse aisle",
        "A long warehouse aisle where autonomous forklifts have stacked boxes in the wrong place. "
        "A tablet on a shelf shows a dashboard about {p} while one forklift blocks the exit.",
        ["forklifts", "boxes", "tablet", "shelves", "exit sign"],
        ["yellow", "brown", "green"],
        "The shelves line both sides, the boxes are piled in the middle and the forklift stands in front of the exit.",
    ),
    (
        "a lecture hall",
        "A dim lecture hall where a projected slide reads a handwritten note about {p}. "
        "Rows of empty seats face the screen and a phone on the front desk records the room.",
        ["projected slide", "empty seats", "phone", "front desk", "screen"],
        ["black", "white", "beige"],
        "The slide fills the screen at the top, the desk is below it and the seats fill the lower half.",
    ),
)


def key_phrases(text: str, limit: int = 6) -> list[str]:
    """Return up to ``limit`` key phrases: runs of non-stopwords, scored by word frequency and run length.

    Args:
        text: the abstract (or title plus abstract).
        limit: how many phrases to return, best first; ties keep their order in the text.
    """
    phrases: list[list[str]] = []
    current: list[str] = []
    for token in re.split(r"([.,;:!?()\[\]\"]|\s+)", text):
        if not token or token.isspace():
            continue
        word = token.lower().strip("'-")
        if _WORD.fullmatch(token) and word not in _STOPWORDS and len(word) > 2:
            current.append(token.strip("'-"))
            if len(current) == 3:
                phrases.append(current)
                current = []
        else:
            if current:
                phrases.append(current)
            current = []
    if current:
        phrases.append(current)
    frequency = Counter(w.lower() for phrase in phrases for w in phrase)
    scored: dict[str, float] = {}
    for phrase in phrases:
        key = " ".join(w.lower() for w in phrase)
        score = sum(frequency[w.lower()] for w in phrase) + len(phrase)
        scored[key] = max(scored.get(key, 0.0), score)
    ranked = sorted(scored.items(), key=lambda item: -item[1])  # stable: text order breaks ties
    return [phrase for phrase, _ in ranked[:limit]]


def _pick(seed_text: str, modulo: int) -> int:
    return int(hashlib.sha256(seed_text.encode()).hexdigest(), 16) % modulo


def templated_scenes(abstract_id: str, title: str, text: str, count: int) -> list[Scene]:
    """Return ``count`` deterministic scenes built from the abstract's key phrases.

    Args:
        abstract_id: stable id; it (with the scene index) picks the template, so output never changes.
        title: the paper title (its words count as key-phrase material).
        text: the abstract.
        count: scenes to return.
    """
    phrases = key_phrases(f"{title}. {text}") or [title.lower() or "an unknown system"]
    start = _pick(abstract_id, len(_TEMPLATES))
    scenes = []
    for index in range(count):
        setting, pattern, objects, colours, layout = _TEMPLATES[(start + index) % len(_TEMPLATES)]
        phrase = phrases[index % len(phrases)]
        scenes.append(
            Scene(
                title=f"{setting.capitalize()}: {phrase}"[:120],
                description=pattern.format(p=phrase),
                setting=setting,
                objects=list(objects),
                colours=list(colours),
                layout=layout,
            )
        )
    return scenes


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def grounded_pairs(scene: Scene, types: list[str], count: int) -> list[QAPair]:
    """Return up to ``count`` distinct neutral question-answer pairs whose answers come from the scene's fields.

    Each type has two phrasings, so at most ``2 x len(types)`` distinct pairs exist; a larger ``count`` gets that
    many rather than repeats (a repeated pair would weigh twice in training and say nothing new).

    Args:
        scene: the scene description the image was drawn from.
        types: the question types to cycle through, in order (a type listed twice counts once).
        count: pairs wanted.
    """
    objects = scene.objects or ["the main objects"]
    colours = scene.colours or ["muted tones"]
    answers = {
        "description": ("Describe this image.", scene.description),
        "objects": ("What objects can be seen in the image?", f"The image shows {_join(objects)}."),
        "counting": (
            "How many distinct kinds of objects stand out in the image?",
            f"{len(objects)}: {_join(objects)}.",
        ),
        "colours": ("Which colours dominate the image?", f"The main colours are {_join(colours)}."),
        "spatial": (
            "How are the main elements arranged in the image?",
            scene.layout or f"The {objects[0]} is the most prominent element, placed near the centre.",
        ),
        "reasoning": ("Where does this scene most likely take place?", f"It appears to be {scene.setting}."),
    }
    alternates = {
        "description": ("What is happening in this picture?", scene.description),
        "objects": ("List the items visible in the picture.", _join(objects).capitalize() + "."),
        "counting": ("How many different colours are prominent?", f"{len(colours)}: {_join(colours)}."),
        "colours": (f"What colour palette is used for the {objects[0]}?", f"Mostly {_join(colours)}."),
        "spatial": ("What is in the foreground?", f"The {objects[-1]} is in the foreground."),
        "reasoning": ("What time of day or setting does the lighting suggest?", f"The setting is {scene.setting}."),
    }
    kinds = list(dict.fromkeys(types))
    pairs = []
    for index in range(min(count, 2 * len(kinds))):
        kind = kinds[index % len(kinds)]
        question, answer = (answers if index < len(kinds) else alternates)[kind]
        pairs.append(QAPair(type=kind, question=question, answer=answer))
    return pairs
