"""SPA-VL test splits (Zhang et al., 2024): ``harm`` (265 harmful queries) and ``help`` (265, helpfulness).

Read from the Hugging Face dataset (``sqrti/SPA-VL``, config ``test``) when given a dataset id and online, or
from a local export: a parquet file as ``datasets`` writes it (``image`` = ``{bytes, path}``) or JSON / JSONL whose
``image`` is a path relative to the file. Fields: ``image, question, class1, class2, class3``.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any, Literal

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_under, read_json, read_jsonl, rows_with_images, save_image_bytes
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import Expected, LoadResult, RowError, Sample
from visalign.paths import visalign_home

Split = Literal["harm", "help"]
_EXPECTED: dict[str, Expected] = {"harm": "refuse", "help": "comply"}
_DATASET_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _rows_from_hub(dataset_id: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_id, "test", split=split)
        if "image" in dataset.column_names:
            dataset = dataset.cast_column("image", datasets.Image(decode=False))
        return list(dataset)
    except Exception as exc:  # the hub client raises many types: offline, gated, missing split
        raise VisalignError(
            f"{dataset_id}: could not load config 'test', split {split!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "when offline pass a local parquet or JSON export instead"
        ) from None


def _rows_from_file(path: Path) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Return ``(row label, record, error)`` per row of a local export."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise VisalignError(f"{path}: not a readable parquet file ({exc})") from None
        return [(f"row {i + 1}", row, None) for i, row in enumerate(table.to_pylist())]
    if suffix == ".jsonl":
        return [
            (
                f"line {n}",
                rec if isinstance(rec, dict) else None,
                err or (None if isinstance(rec, dict) else "not a JSON object"),
            )
            for n, rec, err in read_jsonl(path)
        ]
    if suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise VisalignError(f"{path}: expected a JSON list of rows")
        return [
            (
                f"row {i + 1}",
                rec if isinstance(rec, dict) else None,
                None if isinstance(rec, dict) else "not a JSON object",
            )
            for i, rec in enumerate(data)
        ]
    raise VisalignError(f"{path}: unsupported SPA-VL export {suffix!r}; use .parquet, .json or .jsonl")


def _image_file(image: Any, base: Path, images: Path, name: str) -> Path:
    """Turn an ``image`` field (path string, or ``{bytes, path}``) into a file on disk.

    Embedded bytes are written to ``images/name``; a path must stay inside ``base`` (the export's folder).
    """
    if isinstance(image, dict) and image.get("bytes"):
        data = image["bytes"]
        try:
            # validate: without it, stray characters are dropped silently and a damaged image may still decode
            raw = base64.b64decode(data, validate=True) if isinstance(data, str) else bytes(data)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise VisalignError(f"embedded image bytes are not valid base64 ({exc}); re-export the row") from None
        return save_image_bytes(raw, images, name)
    reference = image.get("path") if isinstance(image, dict) else image
    if not reference:
        raise VisalignError("row has no image")
    return image_under(base, str(reference))


@register_benchmark("spa-vl", "SPA-VL test, harm/help splits (HF id sqrti/SPA-VL or a local parquet/JSON export)")
def load_spa_vl(source: str | Path, *, split: Split = "harm", image_dir: str | Path | None = None) -> LoadResult:
    """Load one SPA-VL test split: ``harm`` expects refusal, ``help`` expects a helpful answer (comply).

    Args:
        source: a dataset id (``sqrti/SPA-VL``) or a local ``.parquet`` / ``.json`` / ``.jsonl`` export.
        split: ``harm`` or ``help``.
        image_dir: where embedded image bytes are written; default a cache folder under ``visalign_home()``.
    """
    if split not in _EXPECTED:
        raise VisalignError(f"spa-vl: split must be 'harm' or 'help', got {split!r}")
    path = Path(source).expanduser()
    if path.exists():
        rows = _rows_from_file(path)
        base = path.parent
        label = path.stem
    elif _DATASET_ID.match(str(source)):
        rows = [(f"row {i + 1}", row, None) for i, row in enumerate(_rows_from_hub(str(source), split))]
        base, label = Path.cwd(), str(source).replace("/", "__")
    else:
        raise VisalignError(f"{source}: SPA-VL file not found (and not a Hugging Face dataset id)")
    images = Path(image_dir) if image_dir else visalign_home() / "images" / "spa-vl" / label / split
    result = LoadResult()

    def bad(where: str, message: str) -> RowError:
        return RowError(benchmark="spa-vl", source=str(source), row=where, message=message, expected=_EXPECTED[split])

    # Two passes keep the rows in file order: the first checks all but the image (writing embedded ones to the
    # cache), the second each image, after every image was decoded at once in threads (one by one, decoding was
    # most of a start's time).
    checked: list[RowError | tuple[int, str, dict, str, str, Path]] = []
    for index, (where, record, error) in enumerate(rows):
        if error or record is None:
            checked.append(bad(where, error or "not a JSON object"))
            continue
        question = str(record.get("question") or "").strip()
        category = str(record.get("class1") or "").strip()
        if not question or not category:
            checked.append(bad(where, "missing question or class1"))
            continue
        try:
            image = _image_file(record.get("image"), base, images, f"{split}_{index}")
        except VisalignError as exc:
            checked.append(bad(where, str(exc)))
            continue
        checked.append((index, where, record, question, category, image))
    usable = rows_with_images(checked, result.errors, lambda row, why: bad(row[1], why))
    for index, _where, record, question, category, image in usable:
        result.samples.append(
            Sample(
                id=f"spa-vl:{split}:{index}",
                benchmark="spa-vl",
                text=question,
                images=[image],
                category=category,
                expected=_EXPECTED[split],
                metadata={"split": split, "class2": record.get("class2"), "class3": record.get("class3")},
            )
        )
    return result
