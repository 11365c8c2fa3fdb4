"""The neutrality filter: reject VQA pairs that use safety or alignment vocabulary (versioned term lists)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from visalign.errors import VisalignError

_SUFFIX = (
    r"(?:s|es|d|ed|ing|ings|er|ers|est|ly|ful|fully|fulness|less|lessly|lessness|ous|ously|ousness|y|ty|ties|ity"
    r"|ities|al|als|ally|ic|ics|ical|ically|ist|ists|ment|ments|ness|ise|ize|ised|ized|ising|izing|ation|ations"
    r"|able|ably|ier|iest|ily|iness|en|ens|ened|ening)"
)
# Suffixes that follow a stem whose final "e" was dropped (refuse -> refusal) or "y" became "i" (policy -> policies).
_AFTER_E = r"(?:ing|ings|ed|er|ers|est|al|als|ous|ously|ation|ations|able|ably|ity|ities|ist|ists|y)"
_AFTER_Y = r"(?:es|ed|er|ers|est|ly|ness|ful|fully)"
_PREFIX = r"(?:un|non-?|mis|im|in|ir|il)?"


@dataclass(frozen=True)
class Match:
    """One hit: the word as it appears in the text and the list term it matched."""

    word: str
    term: str


def _pattern_for(term: str) -> str:
    if term.startswith("="):
        words = r"\s+".join(re.escape(part) for part in term[1:].split())
        return rf"\b{words}\b"
    stem = re.escape(term)
    options = [rf"{stem}{_SUFFIX}*"]
    if term.endswith("e"):
        options.append(rf"{re.escape(term[:-1])}{_AFTER_E}{_SUFFIX}*")
    if term.endswith("y"):
        options.append(rf"{re.escape(term[:-1])}i{_AFTER_Y}")
    return rf"\b{_PREFIX}(?:{'|'.join(options)})\b"


class NeutralityFilter:
    """A compiled term list; ``version`` names the package-data file it came from."""

    def __init__(self, terms: list[str], version: str = "custom") -> None:
        """Compile ``terms`` (stems, or ``=exact`` words) into one matcher per term.

        Args:
            terms: the term list, in the format documented in ``vsfa/data/neutrality_v1.txt``.
            version: a name recorded in records and the dataset card.
        """
        if not terms:
            raise VisalignError("neutrality term list is empty; give at least one term")
        self.version = version
        self.terms = list(terms)
        self._compiled = [(t.lstrip("="), re.compile(_pattern_for(t), re.IGNORECASE)) for t in self.terms]

    @classmethod
    def load(cls, version: str = "neutrality_v4") -> NeutralityFilter:
        """Load a shipped term list by name (``vsfa/data/<version>.txt``).

        The default is ``neutrality_v4``; configs whose recorded data used an older list pin it (the quickstart
        ``neutrality_v3``, experiment 2 ``neutrality_v1``), so their hashes and data stay as recorded.

        Raises:
            VisalignError: no such list ships with the package.
        """
        resource = resources.files("visalign.vsfa").joinpath("data").joinpath(f"{version}.txt")
        if not resource.is_file():
            raise VisalignError(
                f"neutrality term list '{version}' not found in visalign/vsfa/data/; use neutrality_v4 (the "
                "default), v3, v2 or v1"
            )
        lines = [line.strip() for line in resource.read_text("utf-8").splitlines()]
        return cls([line for line in lines if line and not line.startswith("#")], version=version)

    def find(self, text: str) -> list[Match]:
        """Return every listed word found in ``text`` (empty when the text is neutral)."""
        by_span: dict[tuple[int, int], Match] = {}
        for term, pattern in self._compiled:
            for m in pattern.finditer(text):
                by_span.setdefault(m.span(), Match(word=m.group(0), term=term))
        return [by_span[span] for span in sorted(by_span)]

    def is_neutral(self, text: str) -> bool:
        """Return True when ``text`` contains no listed word."""
        return not any(pattern.search(text) for _, pattern in self._compiled)
