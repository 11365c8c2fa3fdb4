"""Stage 1: read abstracts (arXiv JSON lines, CSV/JSONL tables, the shipped starter corpus); filter, dedupe, sample."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from visalign.errors import VisalignError
from visalign.vsfa.config import CorpusConfig
from visalign.vsfa.records import Abstract

STARTER_CORPUS = "starter_corpus_v1.json"
_TEXT_KEYS = ("abstract", "summary", "text")
_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w\s]")


@dataclass
class CorpusResult:
    """The selected abstracts plus what was dropped and why (counts feed the dataset card)."""

    abstracts: list[Abstract]
    read: int = 0
    skipped: list[dict] = field(default_factory=list)
    filtered_out: int = 0
    duplicates: int = 0
    sampled_out: int = 0

    def stats(self) -> dict:
        """Return the counts as a plain dict."""
        return {
            "read": self.read,
            "skipped_no_text": len(self.skipped),
            "filtered_out": self.filtered_out,
            "duplicates": self.duplicates,
            "sampled_out": self.sampled_out,
            "selected": len(self.abstracts),
        }


def normalise_text(text: str) -> str:
    """Lower-case, drop punctuation and collapse whitespace (the dedupe key)."""
    return _WS.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def detect_format(path: Path) -> str:
    """Guess a corpus file's format from its suffix: ``csv`` or ``jsonl`` (arXiv snapshots are JSON lines).

    Raises:
        VisalignError: the suffix is not one we read.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise VisalignError(
        f"{path}: unknown corpus format '{suffix or '(no suffix)'}'; use .jsonl (arXiv metadata or title/abstract "
        "records) or .csv with title and abstract columns, or set corpus.format"
    )


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    # utf-8-sig: files saved by Excel or Notepad start with a byte-order mark, which is not part of the data
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VisalignError(
                    f"{path}:{number}: not a JSON object ({exc.msg}); each line must be one JSON record"
                ) from None
            if not isinstance(row, dict):
                raise VisalignError(f"{path}:{number}: expected a JSON object with title and abstract fields")
            yield number, row


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8-sig", newline="") as handle:  # a leading BOM would join the first header
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if not columns & set(_TEXT_KEYS):
            raise VisalignError(
                f"{path}: no abstract column (found {sorted(columns) or 'no header'}); add a column named "
                "'abstract' (and optionally 'title', 'id', 'categories')"
            )
        for number, row in enumerate(reader, 2):
            yield number, {(k or "").strip().lower(): v for k, v in row.items()}


def _read_starter() -> list[tuple[int, dict]]:
    payload = json.loads(resources.files("visalign.vsfa").joinpath("data").joinpath(STARTER_CORPUS).read_text("utf-8"))
    return list(enumerate(payload["records"], 1))


def _categories(value: object, where: str) -> list[str]:
    """Read a row's ``categories``: an arXiv-style string (``"cs.AI cs.LG"``, commas too) or a list of them.

    Raises:
        VisalignError: any other shape (a number, a boolean, a nested list), which no category filter could match.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list) and all(isinstance(c, str | int | float) and not isinstance(c, bool) for c in value):
        return [str(c) for c in value]
    raise VisalignError(
        f"{where}: 'categories' must be a string (\"cs.AI cs.LG\") or a list of strings, "
        f"not {type(value).__name__} {str(value)[:40]}; fix that record"
    )


def _to_abstract(row: dict, where: str) -> Abstract | str:
    """Turn one raw row into an :class:`Abstract`, or return the reason it has no usable text.

    Raises:
        VisalignError: the row's ``categories`` has a shape no filter can read (see :func:`_categories`).
    """
    text = next((row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
    if text is None:
        return f"{where}: no abstract text (fields {_TEXT_KEYS})"
    text = _WS.sub(" ", text).strip()
    title = _WS.sub(" ", str(row.get("title") or "")).strip()
    categories = _categories(row.get("categories"), where)
    raw_id = row.get("id")
    ident = str(raw_id).strip() if raw_id not in (None, "") else ""
    if not ident:
        ident = "h" + hashlib.sha256(normalise_text(title + " " + text).encode()).hexdigest()[:12]
    return Abstract(id=ident, title=title, abstract=text, categories=categories)


def _category_match(categories: list[str], wanted: list[str]) -> bool:
    return any(c == w or c.startswith(w.rstrip(".") + ".") for c in categories for w in wanted)


def _keyword_match(abstract: Abstract, keywords: list[str]) -> bool:
    haystack = f"{abstract.title} {abstract.abstract}".lower()
    return any(re.search(rf"\b{re.escape(k.lower())}", haystack) for k in keywords)


def sample_key(seed: int, ident: str) -> str:
    """Return the sort key used for seeded sampling (stable when the corpus grows)."""
    return hashlib.sha256(f"{seed}:{ident}".encode()).hexdigest()


def load_corpus(config: CorpusConfig, *, seed: int = 0) -> CorpusResult:
    """Read, filter, dedupe and sample the corpus that ``config`` names.

    Args:
        config: the corpus section of the job config.
        seed: sampling seed; the same seed and corpus always select the same abstracts, in file order.

    Raises:
        VisalignError: the file is missing, unreadable, of unknown format, holds a row whose ``categories`` is
            neither a string nor a list, or leaves no abstract with text.
    """
    if config.source == "starter":
        where_name, rows = f"starter corpus ({STARTER_CORPUS})", _read_starter()
    else:
        path = Path(config.path)  # validated non-None by CorpusConfig
        if not path.is_file():
            raise VisalignError(f"{path}: corpus file not found; check corpus.path")
        fmt = detect_format(path) if config.format == "auto" else config.format
        where_name = str(path)
        rows = _read_csv(path) if fmt == "csv" else _read_jsonl(path)
    result = CorpusResult(abstracts=[])
    try:
        # one row at a time: an arXiv snapshot (GBs of JSON with authors and versions) never sits in memory whole
        kept = _select_rows(rows, config, where_name, result)
    except UnicodeDecodeError:
        raise VisalignError(f"{where_name}: not UTF-8 text; re-encode the corpus as UTF-8") from None
    if not result.read:
        raise VisalignError(f"{where_name}: the corpus is empty; give it at least one record with an abstract")
    if not kept:
        raise VisalignError(
            f"{where_name}: no abstract left after reading {result.read} record(s) "
            f"({len(result.skipped)} without text, {result.filtered_out} filtered out); check the file and filters"
        )
    if config.limit is not None and len(kept) > config.limit:
        chosen = {a.id for a in sorted(kept, key=lambda a: sample_key(seed, a.id))[: config.limit]}
        result.sampled_out = len(kept) - len(chosen)
        kept = [a for a in kept if a.id in chosen]
    result.abstracts = kept
    return result


def _select_rows(rows: Iterable[tuple[int, dict]], config: CorpusConfig, where_name: str,
                 result: CorpusResult) -> list[Abstract]:
    """Parse, filter and dedupe ``rows``; count what was read and dropped in ``result``; return what is kept."""
    seen_text: set[str] = set()
    seen_ids: set[str] = set()
    kept: list[Abstract] = []
    for number, row in rows:
        result.read += 1
        parsed = _to_abstract(row, f"{where_name}:{number}")
        if isinstance(parsed, str):
            result.skipped.append({"where": parsed.split(": ", 1)[0], "reason": parsed.split(": ", 1)[1]})
            continue
        if (config.categories and not _category_match(parsed.categories, config.categories)) or (
            config.keywords and not _keyword_match(parsed, config.keywords)
        ):
            result.filtered_out += 1
            continue
        key = normalise_text(parsed.abstract)
        if key in seen_text or parsed.id in seen_ids:
            result.duplicates += 1
            continue
        seen_text.add(key)
        seen_ids.add(parsed.id)
        kept.append(parsed)
    return kept
