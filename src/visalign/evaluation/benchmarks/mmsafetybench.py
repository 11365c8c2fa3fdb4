"""MM-SafetyBench (Liu et al., 2024): 1,680 questions in 13 scenarios, as SD, TYPO, SD_TYPO images or text.

Layout: ``data/processed_questions/{NN-Scenario}.json`` keyed by question id (fields ``Question, Changed
Question, Key Phrase, Phrase Type, Rephrased Question, Rephrased Question(SD)``) and images
``imgs/{scenario}/{SD,SD_TYPO,TYPO}/{id}.jpg``. The SD image pairs with ``Rephrased Question(SD)``; TYPO and
SD_TYPO pair with ``Rephrased Question``; ``text`` sends the original ``Question`` with no image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks._io import image_under, read_json, rows_with_images
from visalign.evaluation.benchmarks.registry import register_benchmark
from visalign.evaluation.benchmarks.sample import LoadResult, RowError, Sample

#: The 13 scenario files, spelled as in the official repository (including its "Activitiy").
SCENARIOS = (
    "01-Illegal_Activitiy",
    "02-HateSpeech",
    "03-Malware_Generation",
    "04-Physical_Harm",
    "05-EconomicHarm",
    "06-Fraud",
    "07-Sex",
    "08-Political_Lobbying",
    "09-Privacy_Violence",
    "10-Legal_Opinion",
    "11-Financial_Advice",
    "12-Health_Consultation",
    "13-Gov_Decision",
)
#: Which question field pairs with each variant.
QUESTION_FIELD = {
    "SD": "Rephrased Question(SD)",
    "TYPO": "Rephrased Question",
    "SD_TYPO": "Rephrased Question",
    "text": "Question",
}

Variant = Literal["SD", "TYPO", "SD_TYPO", "text"]


def _questions_dir(root: Path) -> Path:
    for candidate in (root / "data" / "processed_questions", root / "processed_questions", root):
        if any(candidate.glob("[0-9][0-9]-*.json")):
            return candidate
    raise VisalignError(
        f"{root}: no MM-SafetyBench processed_questions/NN-Scenario.json files found; pass the "
        "repository root (with data/processed_questions and imgs)"
    )


def _images_dir(root: Path, questions_dir: Path) -> Path | None:
    """The ``imgs`` folder: under the source or, when the source is the questions folder, beside it or above it."""
    # A few levels only: an unrelated "imgs" folder far up the tree must not be taken for the benchmark's.
    bases = dict.fromkeys([root, questions_dir.parent, questions_dir.parent.parent])
    return next((base / sub for base in bases for sub in ("imgs", "data/imgs") if (base / sub).is_dir()), None)


def _image_path(images_root: Path, scenario: str, variant: str, key: str) -> Path:
    # Releases name the image folders with or without the "NN-" prefix; accept both.
    for folder in (scenario, scenario.split("-", 1)[1]):
        candidate = images_root / folder / variant / f"{key}.jpg"
        if candidate.exists():
            return candidate
    return images_root / scenario / variant / f"{key}.jpg"


@register_benchmark("mm-safetybench", "MM-SafetyBench, 13 scenarios (repository root with processed_questions/imgs)")
def load_mm_safetybench(
    source: str | Path,
    *,
    variant: Variant = "SD_TYPO",
    scenarios: list[str] | None = None,
    images_root: str | Path | None = None,
) -> LoadResult:
    """Load MM-SafetyBench in one variant; every question expects refusal.

    Args:
        source: the repository root (or the ``processed_questions`` folder itself).
        variant: ``SD``, ``TYPO``, ``SD_TYPO`` (the paper's main setting) or ``text``.
        scenarios: the scenario names to load (``"01-Illegal_Activitiy"``); default all 13.
        images_root: the ``imgs`` folder; default ``imgs`` (or ``data/imgs``) under ``source``, or next to or
            above the ``processed_questions`` folder.

    Raises:
        VisalignError: an unknown variant or scenario, no question files, or (image variants) no ``imgs`` folder.
    """
    if variant not in QUESTION_FIELD:
        raise VisalignError(f"mm-safetybench: variant must be one of {', '.join(QUESTION_FIELD)}, got {variant!r}")
    unknown = sorted(set(scenarios or ()) - set(SCENARIOS))
    if unknown:
        raise VisalignError(f"mm-safetybench: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise VisalignError(f"{root}: MM-SafetyBench folder not found")
    questions_dir = _questions_dir(root)
    images = Path(images_root) if images_root else _images_dir(root, questions_dir)
    field = QUESTION_FIELD[variant]
    result = LoadResult()

    def bad(file: Path, key: str, message: str) -> RowError:
        return RowError(benchmark="mm-safetybench", source=str(file), row=key, message=message, expected="refuse")

    # Two passes keep the rows in file order: the first checks all but the image, the second each image, after
    # every image was decoded at once in threads (one by one, decoding was most of a start's time).
    rows: list[RowError | tuple[Path, str, str, dict, str, Path | None]] = []
    for file in sorted(questions_dir.glob("*.json")):
        scenario = file.stem
        if scenario not in SCENARIOS:
            rows.append(bad(file, "(file)", f"unknown scenario {scenario!r}; file skipped"))
            continue
        if scenarios and scenario not in scenarios:
            continue
        data = read_json(file)
        if not isinstance(data, dict):
            raise VisalignError(f"{file}: expected a JSON object keyed by question id")
        for key, item in data.items():
            text = str(item.get(field) or "").strip() if isinstance(item, dict) else ""
            if not text:
                rows.append(bad(file, f"id {key}", f"missing {field!r}"))
                continue
            image: Path | None = None
            if variant != "text":
                if images is None:  # asked only once a row needs an image: a text-only load has no imgs folder
                    raise VisalignError(
                        f"{root}: no MM-SafetyBench imgs folder found in {root} or above {questions_dir}; "
                        f"pass images_root (the imgs folder) or use variant 'text'"
                    )
                try:  # the question id names the image file: one that climbs out of imgs/ is no official id
                    image_under(images, f"{scenario}/{variant}/{key}.jpg")
                except VisalignError as exc:
                    rows.append(bad(file, f"id {key}", str(exc)))
                    continue
                image = _image_path(images, scenario, variant, key)
            rows.append((file, scenario, key, item, text, image))
    usable = rows_with_images(rows, result.errors, lambda row, why: bad(row[0], f"id {row[2]}", why))
    for _file, scenario, key, item, text, image in usable:
        result.samples.append(
            Sample(
                id=f"mm-safetybench:{scenario}:{key}:{variant}",
                benchmark="mm-safetybench",
                text=text,
                images=[image] if image is not None else [],
                category=scenario,
                expected="refuse",
                # the image variants draw the key phrase and ask about "the activity in the image"
                request=None if variant == "text" else str(item.get("Question") or "").strip() or None,
                metadata={
                    "variant": variant,
                    "question": item.get("Question", ""),
                    "key_phrase": item.get("Key Phrase", ""),
                    "phrase_type": item.get("Phrase Type", ""),
                },
            )
        )
    return result
