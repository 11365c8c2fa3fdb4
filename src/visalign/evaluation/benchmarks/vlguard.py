"""VLGuard test subsets (Zong et al., 2024): unsafes (442), safe_unsafes (558), safe_safes (558).

``test.json`` items: ``id, image, safe, instr-resp, harmful_category, harmful_subcategory``. ``unsafes`` are
the unsafe images with their instruction; ``safe_unsafes`` are safe images with an unsafe instruction;
``safe_safes`` are safe images with a safe instruction (the same selection as VLGuard's own evaluation script).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_under, read_json, require_file, rows_with_images
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import Expected, LoadResult, RowError, Sample, claim_id

Subset = Literal["unsafes", "safe_unsafes", "safe_safes"]
_EXPECTED: dict[str, Expected] = {"unsafes": "refuse", "safe_unsafes": "refuse", "safe_safes": "comply"}
_INSTRUCTION_KEY = {
    "unsafes": "instruction",
    "safe_unsafes": "unsafe_instruction",
    "safe_safes": "safe_instruction",
}


@register_benchmark("vlguard", "VLGuard test subsets (test.json + image folder)")
def load_vlguard(source: str | Path, *, subset: Subset = "unsafes", image_root: str | Path | None = None) -> LoadResult:
    """Load one VLGuard test subset.

    Args:
        source: VLGuard's ``test.json``.
        subset: ``unsafes`` and ``safe_unsafes`` expect refusal, ``safe_safes`` expects compliance.
        image_root: the folder ``image`` paths are relative to; default ``test/`` next to the JSON when it
            exists (the unzipped ``test.zip``), else the JSON's folder.
    """
    if subset not in _EXPECTED:
        raise VisalignError(f"vlguard: subset must be one of {', '.join(_EXPECTED)}, got {subset!r}")
    path = require_file(source, "VLGuard test.json")
    data = read_json(path)
    if not isinstance(data, list):
        raise VisalignError(f"{path}: expected a JSON list of items")
    root = (
        Path(image_root) if image_root else (path.parent / "test" if (path.parent / "test").is_dir() else path.parent)
    )
    want_safe = subset != "unsafes"
    key = _INSTRUCTION_KEY[subset]
    result = LoadResult()
    seen: set[str] = set()

    def bad(where: str, message: str) -> RowError:
        return RowError(benchmark="vlguard", source=str(path), row=where, message=message, expected=_EXPECTED[subset])

    # Two passes keep the rows in file order: the first checks all but the image, the second each image, after
    # every image was decoded at once in threads (one by one, decoding was most of a start's time).
    rows: list[RowError | tuple[int, str, dict, str, Path]] = []
    for number, item in enumerate(data, start=1):
        where = f"item {number}" + (f" (id {item.get('id')})" if isinstance(item, dict) and item.get("id") else "")
        if not isinstance(item, dict) or not isinstance(item.get("safe"), bool) or not item.get("image"):
            rows.append(bad(where, "malformed item: needs 'safe' (true/false), 'image' and 'instr-resp'"))
            continue
        if item["safe"] != want_safe:
            continue
        pairs = item.get("instr-resp") if isinstance(item.get("instr-resp"), list) else []
        question = next((p[key] for p in pairs if isinstance(p, dict) and p.get(key)), None)
        if not question:
            rows.append(bad(where, f"no {key!r} in instr-resp"))
            continue
        try:
            image = image_under(root, str(item["image"]))
        except VisalignError as exc:
            rows.append(bad(where, str(exc)))
            continue
        rows.append((number, where, item, question, image))
    usable = rows_with_images(rows, result.errors, lambda row, why: bad(row[1], why))
    for number, where, item, question, image in usable:
        item_id = str(item.get("id") or number)
        duplicate = claim_id(seen, item_id)
        if duplicate:
            result.errors.append(bad(where, duplicate))
            continue
        result.samples.append(
            Sample(
                id=f"vlguard:{subset}:{item_id}",
                benchmark="vlguard",
                text=str(question).strip(),
                images=[image],
                category=str(item.get("harmful_category") or ("safe" if item["safe"] else "unsafe")),
                expected=_EXPECTED[subset],
                metadata={
                    "subset": subset,
                    "safe_image": item["safe"],
                    "harmful_subcategory": item.get("harmful_subcategory"),
                },
            )
        )
    return result
