"""General-capability sets: multiple choice in ScienceQA-IMG or MMBench format, and MM-Vet (open answers).

- ScienceQA: ``problems.json`` keyed by pid (``question, choices, answer`` (index), ``hint, image, split``),
  images at ``images/{split}/{pid}/{image}``. ScienceQA-IMG keeps the items that have an image.
- MMBench: a TSV with ``index, question, hint, A..D, answer, category, image`` (base64).
- MM-Vet: ``mm-vet.json`` keyed by id (``imagename, capability, question, answer``) with ``images/``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from pathlib import Path, PurePath

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import (
    image_under,
    read_csv,
    read_json,
    require_file,
    rows_with_images,
    save_image_bytes,
)
from visalign.evaluation.benchmarks.multiple_choice import LETTERS, format_multiple_choice
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample, claim_id
from visalign.paths import visalign_home


@register_benchmark("scienceqa-img", "ScienceQA-IMG multiple choice (problems.json + images/)")
def load_scienceqa_img(
    source: str | Path,
    *,
    split: str = "test",
    image_root: str | Path | None = None,
    pid_splits: str | Path | None = None,
) -> LoadResult:
    """Load the ScienceQA items of ``split`` that have an image, as multiple-choice samples.

    Args:
        source: ScienceQA's ``problems.json``.
        split: a ``split`` value of ``problems.json`` (``train``, ``val``, ``test``), or a list of ``pid_splits``
            (``minival``, ``minitest``, ...: subsets of those splits).
        image_root: the ``images`` folder; default ``images`` next to the JSON.
        pid_splits: ScienceQA's ``pid_splits.json`` (split name to problem ids); default the file next to the JSON.

    Raises:
        VisalignError: the split is in neither file (the message names the splits there are).
    """
    path = require_file(source, "ScienceQA problems.json")
    data = read_json(path)
    if not isinstance(data, dict):
        raise VisalignError(f"{path}: expected a JSON object keyed by problem id")
    lists = require_file(pid_splits, "ScienceQA pid_splits.json") if pid_splits else path.parent / "pid_splits.json"
    wanted = _scienceqa_split(path, data, split, lists)
    root = Path(image_root) if image_root else path.parent / "images"
    result = LoadResult()
    result.errors.extend(
        RowError(
            benchmark="scienceqa-img",
            source=str(lists),
            row=f"pid {pid}",
            message=f"listed in split {split!r} but not in {path.name}",
            expected="answer",
        )
        for pid in sorted(wanted - data.keys())
    )
    # Two passes keep the rows in file order: the first checks all but the image, the second each image, after
    # every image was decoded at once in threads (one by one, decoding was most of a start's time).
    rows: list[RowError | tuple[str, dict, RowError, Path]] = []
    for pid, item in data.items():
        if pid not in wanted or not isinstance(item, dict) or not item.get("image"):
            continue  # other splits and text-only items are not part of ScienceQA-IMG
        choices, answer = item.get("choices"), item.get("answer")
        where = RowError(benchmark="scienceqa-img", source=str(path), row=f"pid {pid}", message="", expected="answer")
        if (
            not isinstance(choices, list)
            or not 2 <= len(choices) <= len(LETTERS)
            or not isinstance(answer, int)
            or not 0 <= answer < len(choices)
            or not str(item.get("question") or "").strip()
        ):
            rows.append(where.model_copy(update={"message": "malformed question/choices/answer"}))
            continue
        # Images lie under the item's own split: a minival item's image is in images/val.
        try:  # joined as paths: an absolute image path replaces the rest, as it did, so it is caught
            image = image_under(root, str(PurePath(str(item.get("split")), str(pid), str(item["image"]))))
        except VisalignError as exc:
            rows.append(where.model_copy(update={"message": str(exc)}))
            continue
        rows.append((pid, item, where, image))
    usable = rows_with_images(rows, result.errors, lambda row, why: row[2].model_copy(update={"message": why}))
    for pid, item, _where, image in usable:
        choices = [str(c) for c in item["choices"]]
        result.samples.append(
            Sample(
                id=f"scienceqa-img:{pid}",
                benchmark="scienceqa-img",
                text=format_multiple_choice(str(item["question"]), choices, str(item.get("hint") or "")),
                images=[image],
                category=str(item.get("subject") or "unknown"),
                expected="answer",
                choices=choices,
                answer=LETTERS[item["answer"]],
                metadata={
                    "question": item["question"],
                    "grade": item.get("grade"),
                    "topic": item.get("topic"),
                },
            )
        )
    return result


def _scienceqa_split(path: Path, data: dict, split: str, pid_splits: Path) -> set[str]:
    """The problem ids of ``split``: from the items' own ``split`` field, else from ``pid_splits.json``."""
    own = {str(pid) for pid, item in data.items() if isinstance(item, dict) and item.get("split") == split}
    if own:
        return own
    lists = read_json(pid_splits) if pid_splits.is_file() else {}
    if isinstance(lists, dict) and isinstance(lists.get(split), list):
        return {str(pid) for pid in lists[split]}
    known = {str(item.get("split")) for item in data.values() if isinstance(item, dict)}
    if isinstance(lists, dict):
        known |= {name for name, ids in lists.items() if isinstance(ids, list)}
    where = f"{path} or {pid_splits}" if pid_splits.is_file() else f"{path} (and no {pid_splits.name} next to it)"
    raise VisalignError(f"scienceqa-img: no split {split!r} in {where}; use one of {', '.join(sorted(known))}")


@register_benchmark("mmbench", "MMBench-format multiple choice (TSV with base64 images)")
def load_mmbench(source: str | Path, *, image_dir: str | Path | None = None) -> LoadResult:
    """Load an MMBench-format TSV as multiple-choice samples; rows without an answer are error records.

    An ``image`` cell may hold another row's ``index`` instead of the base64 data (VLMEvalKit's format does this
    for repeated images); it is resolved to that row's image.

    Args:
        source: the TSV (``index, question, hint, A, B, C, D, answer, category, image``).
        image_dir: where the decoded images are written; default a cache folder under ``visalign_home()``.
    """
    path = require_file(source, "MMBench TSV")
    images = Path(image_dir) if image_dir else visalign_home() / "images" / "mmbench" / path.stem
    result = LoadResult()
    rows = list(read_csv(path, ("index", "question", "answer", "image", "A", "B"), delimiter="\t"))
    # VLMEvalKit saves space by writing another row's index in place of a repeated image
    by_index = {(row["index"] or "").strip(): row["image"] or "" for _, row, _ in rows if row}
    seen: set[str] = set()

    def bad(line: int, message: str) -> RowError:
        return RowError(benchmark="mmbench", source=str(path), row=f"line {line}", message=message, expected="answer")

    # Two passes keep the rows in file order: the first checks all but the image (writing it to the cache), the
    # second each image, after every image was decoded at once in threads (one by one, decoding was most of a
    # start's time).
    checked: list[RowError | tuple[int, dict, list[str], str, str, Path]] = []
    for line, row, error in rows:
        if error or row is None:
            checked.append(bad(line, error or "unreadable row"))
            continue
        choices = []
        for letter in "ABCDEFGH":
            value = (row.get(letter) or "").strip()
            if not value or value.lower() == "nan":
                break
            choices.append(value)
        answer = (row.get("answer") or "").strip().upper()
        valid_answer = len(answer) == 1 and answer in LETTERS[: len(choices)]
        if len(choices) < 2 or not valid_answer or not (row["question"] or "").strip():
            message = f"malformed row: needs a question, options A and B, and an answer among them (got {answer!r})"
            checked.append(bad(line, message))
            continue
        index = row["index"].strip()
        if not index or any(unicodedata.category(char) == "Cc" for char in index):
            message = f"index {index!r} is empty or holds control characters; give the row a plain index"
            checked.append(bad(line, message))
            continue
        # before the image is saved: it is named by the index, so a repeat would overwrite the first row's
        duplicate = claim_id(seen, index)
        if duplicate:
            checked.append(bad(line, duplicate))
            continue
        cell = (row["image"] or "").strip()
        if len(cell) <= 64 and len(by_index.get(cell, "")) > 64:
            cell = by_index[cell].strip()
        try:
            image = save_image_bytes(base64.b64decode(cell, validate=True), images, _cache_name(index))
        except binascii.Error as exc:
            checked.append(bad(line, f"image is not valid base64 image data ({exc})"))
            continue
        except VisalignError as exc:  # bytes that are no image, or a link planted in the cache folder
            checked.append(bad(line, str(exc)))
            continue
        checked.append((line, row, choices, answer, index, image))
    usable = rows_with_images(checked, result.errors, lambda entry, why: bad(entry[0], why))
    for _line, row, choices, answer, index, image in usable:
        hint = (row.get("hint") or "").strip()
        result.samples.append(
            Sample(
                id=f"mmbench:{index}",
                benchmark="mmbench",
                text=format_multiple_choice(row["question"], choices, "" if hint.lower() == "nan" else hint),
                images=[image],
                category=(row.get("category") or "unknown").strip(),
                expected="answer",
                choices=choices,
                answer=answer,
                metadata={"question": row["question"], "l2_category": row.get("l2-category")},
            )
        )
    return result


#: An MMBench index that names its cached image as it stands (official indexes are integers).
_PLAIN_INDEX = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _cache_name(index: str) -> str:
    """The file name (no extension) of an MMBench row's cached image: the index itself when it is a plain name.

    Any other index (a ``/``, ``..``, an absolute path, a dot that the extension would replace, 200 characters)
    gets a sanitised readable part plus a hash of the whole index, as typographic attack images do: it can neither
    leave the cache folder nor share a file with another row, and the ``~`` keeps it apart from every plain index.
    """
    if _PLAIN_INDEX.fullmatch(index):
        return index  # the name earlier versions wrote: a cache already filled is used as it is
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", index)[:60]
    return f"{readable}~{hashlib.sha256(index.encode()).hexdigest()[:16]}"


@register_benchmark("mm-vet", "MM-Vet open-ended capability questions (mm-vet.json + images/)")
def load_mm_vet(source: str | Path, *, image_root: str | Path | None = None) -> LoadResult:
    """Load MM-Vet: open answers graded against ``answer`` by the ``mm-vet`` LLM judge (configure it in the job).

    Args:
        source: ``mm-vet.json`` keyed by id (``imagename, capability, question, answer``).
        image_root: the images folder; default ``images`` next to the JSON.
    """
    path = require_file(source, "MM-Vet JSON")
    data = read_json(path)
    if not isinstance(data, dict):
        raise VisalignError(f"{path}: expected a JSON object keyed by question id")
    root = Path(image_root) if image_root else path.parent / "images"
    result = LoadResult()
    # Two passes keep the rows in file order: the first checks all but the image, the second each image, after
    # every image was decoded at once in threads (one by one, decoding was most of a start's time).
    rows: list[RowError | tuple[str, dict, RowError, Path]] = []
    for key, item in data.items():
        where = RowError(benchmark="mm-vet", source=str(path), row=f"id {key}", message="", expected="answer")
        capabilities = item.get("capability") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or not str(item.get("question") or "").strip()
            or "answer" not in item
            or not isinstance(capabilities, list)
            or not capabilities
            or not item.get("imagename")
        ):
            rows.append(
                where.model_copy(
                    update={"message": "malformed item: needs imagename, capability (list), question and answer"}
                )
            )
            continue
        try:
            image = image_under(root, str(item["imagename"]))
        except VisalignError as exc:
            rows.append(where.model_copy(update={"message": str(exc)}))
            continue
        rows.append((key, item, where, image))
    usable = rows_with_images(rows, result.errors, lambda row, why: row[2].model_copy(update={"message": why}))
    for key, item, _where, image in usable:
        capabilities = item["capability"]
        result.samples.append(
            Sample(
                id=f"mm-vet:{key}",
                benchmark="mm-vet",
                text=str(item["question"]).strip(),
                images=[image],
                category="+".join(sorted(str(c) for c in capabilities)),
                expected="answer",
                answer=str(item["answer"]),
                metadata={"capabilities": [str(c) for c in capabilities]},
            )
        )
    return result
