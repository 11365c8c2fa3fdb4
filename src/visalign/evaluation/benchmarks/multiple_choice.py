"""Multiple-choice prompts and exact-match scoring (ScienceQA-IMG and MMBench style)."""

from __future__ import annotations

import re
import string

LETTERS = string.ascii_uppercase

#: The instruction LLaVA-style evaluations append to multiple-choice prompts.
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def format_multiple_choice(question: str, choices: list[str], hint: str = "") -> str:
    """Return the prompt: optional ``Hint:`` line, question, lettered options, answer instruction."""
    lines = [f"Hint: {hint.strip()}"] if hint and hint.strip() else []
    lines.append(question.strip())
    lines.extend(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    lines.append(ANSWER_INSTRUCTION)
    return "\n".join(lines)


def _normalise(text: str) -> str:
    return re.sub(r"[\s\W_]+", " ", text.lower()).strip()


_STATED = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|:)?\s*(?P<open>\()?(?P<letter>[A-Z])(?P<close>\))?(?![A-Za-z])",
    re.IGNORECASE,
)


#: Markdown emphasis and code marks around a token ("**B**", "*B*", "__B__", "`B`"): a run of them not between two
#: word characters, so "snake_case" and "a*b" inside an option's text are kept.
_MARKUP = re.compile(r"(?<!\w)[*_`]+|[*_`]+(?!\w)")


def _strip_markup(text: str) -> str:
    """Return ``text`` without Markdown emphasis or code marks around its tokens."""
    return _MARKUP.sub("", text)


def _is_a_word(match: re.Match[str], text: str) -> bool:
    """Whether a stated lower-case ``a``/``i`` is the article or pronoun ("the answer is a fish"), not a letter.

    Unbracketed and followed by a word, it is English; before punctuation or the end of text it is an option.
    """
    if match["letter"] not in "ai" or match["open"] or match["close"]:
        return False
    return re.match(r"\s*\w", text[match.end():]) is not None


def parse_choice(response: str, choices: list[str]) -> str | None:
    """Return the option letter a response picks, or None when it picks none or several.

    Markdown emphasis and code marks around a token are read through (``**B**``, ``The answer is *B*``, a
    back-quoted letter).
    Recognised, in order: a leading letter (``B``, ``(B)``, ``B.``, ``B) text``); ``answer is B`` /
    ``Answer: B`` / ``option B`` (a lower-case ``a`` or ``i`` there only before punctuation or the end: "the answer
    is a fish" names no option); a response equal to one option's text; a response that contains exactly one
    option's text.

    Args:
        response: the model's answer.
        choices: the options in order (``A`` is the first).
    """
    valid = LETTERS[: len(choices)]
    text = _strip_markup(response).strip()
    lead = re.match(r"^\(?([A-Z])\)?(?=$|[\s.:,)])", text)
    # a bare "A" or "I" before a lowercase word opens an English sentence ("A dog is shown..."), not an option
    if lead and lead.group(1) in valid and not re.match(r"[AI]\s+[a-z]", text):
        return lead.group(1)
    picked = {
        match["letter"].upper()
        for match in _STATED.finditer(text)
        if match["letter"].upper() in valid and not _is_a_word(match, text)
    }
    if len(picked) == 1:
        return picked.pop()
    normal = _normalise(text)
    options = [_normalise(choice) for choice in choices]
    for letter, option in zip(valid, options, strict=True):
        if option and normal == option:
            return letter
    contained = [
        letter
        for letter, option in zip(valid, options, strict=True)
        if option and re.search(rf"\b{re.escape(option)}\b", normal)
    ]
    return contained[0] if len(contained) == 1 else None


def score_multiple_choice(response: str, answer: str, choices: list[str]) -> bool | None:
    """Exact-match score: True when the parsed letter equals ``answer``, None when no letter can be parsed.

    Args:
        response: the model's answer.
        answer: the correct letter (``"A"``...).
        choices: the options in order.
    """
    picked = parse_choice(response, choices)
    return None if picked is None else picked == answer.strip().upper()
