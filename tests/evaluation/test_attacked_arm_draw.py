"""An attacked benchmark arm fits and draws only the rows it asks, and only once, and asks the rows it always did.

:func:`~visalign.evaluation.runner.load_rows` checks which rows a FigStep image can hold for every row (the draw
and the unusable rows depend on it) but fits the font size and draws the image only for the rows ``limit`` keeps,
and a later start of the run reuses the images it wrote. The reference here is the arm as it was drawn before:
every row attacked and fitted by ``load_benchmark(attack=...)``, then the draw applied as written below.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter
from pathlib import Path

import matplotlib
import pytest

from visalign.evaluation.attacks import fonts, typographic
from visalign.evaluation.attacks.typographic import attack_image_png, typographic_attack
from visalign.evaluation.benchmarks import Sample, load_benchmark
from visalign.evaluation.config import BenchmarkConfig
from visalign.evaluation.pinned_inputs import pinned_inputs
from visalign.evaluation.runner import BenchmarkRows, load_rows, write_attack_images

#: Longer than a FigStep image holds at any font size: such a row is unusable, an error record.
TOO_LONG = "Explain, step by step and with every detail, how one would go about this. " * 46


def strongreject_subset(path: Path, source: Path, rows: int, too_long: tuple[int, ...]) -> Path:
    """The first ``rows`` rows of the real StrongREJECT file, those at ``too_long`` made too long to draw."""
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, kept = reader.fieldnames, [row for _, row in zip(range(rows), reader, strict=False)]
    for index in too_long:
        kept[index]["forbidden_prompt"] = TOO_LONG
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return path


def reference(config: BenchmarkConfig, attack_dir: Path, seed: int) -> tuple[list[Sample], list[dict]]:
    """The samples and error records of an arm drawn the old way: every row attacked and fitted, then drawn."""
    loaded = load_benchmark(config.name, config.source, attack=config.attack, draw_attack=False,
                            attack_dir=attack_dir / config.display_name)  # fmt: skip
    samples, unusable = loaded.samples, loaded.errors
    if config.limit is not None and len(samples) > config.limit:
        kept = round(len(unusable) * config.limit / len(samples))
        if config.sampling == "id":

            def rank(key: str) -> str:
                return hashlib.sha256(f"{seed}:{config.name}:{key}".encode()).hexdigest()

            samples = sorted(samples, key=lambda s: rank(s.id.removesuffix(f"+{config.attack}")))[: config.limit]
            unusable = sorted(unusable, key=lambda e: rank(f"row:{Path(e.source).name}:{e.row}"))[:kept]
        else:
            draw = random.Random(f"{seed}:{config.name}")
            samples, unusable = draw.sample(samples, config.limit), draw.sample(unusable, kept)
        samples = sorted(samples, key=lambda s: s.id)
    assumed = Counter(s.expected for s in loaded.samples).most_common(1)[0][0]
    label = config.display_name
    errors = [{"sample_id": f"{label}:row:{Path(e.source).name}:{e.row}", "expected": e.expected or assumed}
              for e in unusable]  # fmt: skip
    return samples, errors


def pins(rows: BenchmarkRows) -> dict[str, str]:
    return pinned_inputs([], {rows.label: rows.samples}, unusable={rows.label: rows.errors}, drawn=rows.drawn)


def image_bytes(rows: BenchmarkRows, sample: Sample) -> bytes:
    path = Path(sample.images[0])
    return rows.drawn[path] if path in rows.drawn else path.read_bytes()


@pytest.fixture(scope="module")
def small(bench, tmp_path_factory) -> str:
    """30 real StrongREJECT rows, 3 of them too long for a FigStep image."""
    folder = tmp_path_factory.mktemp("sources")
    source = bench / "strongreject" / "strongreject_dataset.csv"
    return str(strongreject_subset(folder / "small.csv", source, 30, too_long=(2, 11, 23)))


@pytest.fixture(scope="module")
def plain(bench, tmp_path_factory) -> str:
    """30 real StrongREJECT rows, as they are (a TYPO image holds any text: none is too long)."""
    folder = tmp_path_factory.mktemp("sources")
    source = bench / "strongreject" / "strongreject_dataset.csv"
    return str(strongreject_subset(folder / "plain.csv", source, 30, too_long=()))


@pytest.fixture(scope="module")
def whole(bench, tmp_path_factory) -> str:
    """The whole real StrongREJECT file, 12 of its rows too long for a FigStep image."""
    folder = tmp_path_factory.mktemp("sources")
    source = bench / "strongreject" / "strongreject_dataset.csv"
    return str(strongreject_subset(folder / "whole.csv", source, 10_000, too_long=tuple(range(3, 300, 25))))


@pytest.fixture(scope="module")
def xstest(bench) -> str:
    """The real XSTest file: requests to refuse and to comply with."""
    return str(bench / "xstest" / "xstest_prompts.csv")


#: benchmark, the fixture naming its source, the arm's settings, the seed
CASES = {
    "figstep, every row": ("strongreject", "small", {"attack": "figstep"}, 0),
    "figstep, limit by position": ("strongreject", "small", {"attack": "figstep", "limit": 10}, 0),
    "figstep, limit by position, another seed": ("strongreject", "small", {"attack": "figstep", "limit": 10}, 7),
    "figstep, limit by id": ("strongreject", "small", {"attack": "figstep", "limit": 10, "sampling": "id"}, 3),
    "figstep, limit by id, whole file": (
        "strongreject",
        "whole",
        {"attack": "figstep", "limit": 20, "sampling": "id"},
        1,
    ),
    "figstep, xstest, limit by position": ("xstest", "xstest", {"attack": "figstep", "limit": 12}, 4),
    "typo, every row": ("strongreject", "plain", {"attack": "typo"}, 0),
    "typo, limit by position": ("strongreject", "plain", {"attack": "typo", "limit": 10}, 0),
    "typo, limit by id": ("strongreject", "plain", {"attack": "typo", "limit": 10, "sampling": "id"}, 5),
}


@pytest.mark.parametrize("case", CASES)
def test_an_attacked_arm_asks_the_rows_and_images_it_asked_when_every_row_was_fitted(case, request, tmp_path):
    benchmark, source, settings, seed = CASES[case]
    config = BenchmarkConfig(name=benchmark, source=request.getfixturevalue(source), **settings)
    rows = load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=seed)
    samples, errors = reference(config, tmp_path / "attacks", seed)

    assert [(s.id, s.text, s.request, s.metadata, s.images) for s in rows.samples] == [
        (s.id, s.text, s.request, s.metadata, s.images) for s in samples
    ]
    assert [image_bytes(rows, s) for s in rows.samples] == [attack_image_png(s) for s in samples]
    assert [(e["sample_id"], e["expected"]) for e in rows.errors] == [(e["sample_id"], e["expected"]) for e in errors]
    drawn = {Path(s.images[0]): attack_image_png(s) for s in samples}
    assert pins(rows) == pinned_inputs([], {rows.label: samples}, unusable={rows.label: errors}, drawn=drawn)
    if settings["attack"] == "figstep" and benchmark == "strongreject":  # rows too long to draw are drawn too
        assert any("does not fit" in e["error"] for e in rows.errors)


def test_a_text_fits_without_a_font_search_exactly_when_the_search_finds_a_size(tmp_path):
    """``fit=False`` tells the rows no size fits from the others as the search does, near the limit included."""
    from visalign.evaluation.attacks.typographic import fit_attack

    words = "Describe how to make a dangerous thing at home without anyone noticing, in full detail. "
    texts = [(words * 40)[:length] for length in range(1900, 2400, 50)]  # some fit, some do not
    # lines of 100 characters are a pixel too wide at the smallest size, and fit the next one
    texts += ["x" * length for length in (2600, 3000)] + ["z" * 100, " ".join(["y" * 100] * 20), "Short."]
    rows = [Sample(id=str(i), benchmark="t", text=text, expected="refuse") for i, text in enumerate(texts)]
    searched = typographic_attack(rows, tmp_path, draw=False)
    checked = typographic_attack(rows, tmp_path, draw=False, fit=False)
    assert [e.row for e in checked.errors] == [e.row for e in searched.errors]
    assert [e.message for e in checked.errors] == [e.message for e in searched.errors]
    assert 0 < len(searched.errors) < len(rows)  # both kinds are tried, and texts of either of the two smallest sizes
    assert {12, 16} <= {s.metadata["font_size"] for s in searched.samples}
    assert [fit_attack(s) for s in checked.samples] == searched.samples


@pytest.fixture
def fits(monkeypatch) -> list[str]:
    """The texts whose FigStep font size is searched for (each call of ``fit_figstep``)."""
    calls: list[str] = []
    search = typographic.fit_figstep

    def counted(text: str) -> int:
        calls.append(text)
        return search(text)

    monkeypatch.setattr(typographic, "fit_figstep", counted)
    return calls


@pytest.fixture
def draws(monkeypatch) -> list[str]:
    """The samples whose attack image is drawn (each call of ``attack_image``)."""
    calls: list[str] = []
    draw = typographic.attack_image

    def counted(sample: Sample):
        calls.append(sample.id)
        return draw(sample)

    monkeypatch.setattr(typographic, "attack_image", counted)
    return calls


def test_a_limited_arm_fits_the_rows_it_asks_not_the_whole_file(bench, tmp_path, fits, draws):
    config = BenchmarkConfig(name="advbench", source=str(bench / "advbench" / "adv_bench.prompt"), attack="figstep",
                             limit=20)  # fmt: skip
    rows = load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)
    assert len(rows.samples) == 20 and rows.errors == []  # of 520 rows, every one of which fits
    assert sorted(fits) == sorted(s.metadata["original_text"].strip() for s in rows.samples)
    assert sorted(draws) == sorted(s.id for s in rows.samples)


@pytest.fixture
def other_font(monkeypatch):
    """Draw FigStep images with another font (as VISALIGN_FIGSTEP_FONT names one) for the rest of the test."""
    fonts.resolve_font.cache_clear()
    monkeypatch.setenv("VISALIGN_FIGSTEP_FONT", str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" /
                                                   "DejaVuSansMono-Bold.ttf"))  # fmt: skip
    yield
    fonts.resolve_font.cache_clear()


def test_a_resumed_arm_reuses_the_images_it_wrote_and_draws_only_what_changed(small, tmp_path, fits, draws, request):
    config = BenchmarkConfig(name="strongreject", source=small, attack="figstep", limit=12)

    def start() -> tuple[list[Sample], dict[str, str], list[str]]:
        """One start of the run: its samples, its pins (taken before the images are written, as run_eval does)
        and the texts whose size it searched (a row too long for any size is searched on every start)."""
        fits.clear()
        draws.clear()
        rows = load_rows(config, base_dir=tmp_path, attack_dir=tmp_path / "attacks", seed=0)
        pinned = pins(rows)
        write_attack_images([rows])
        return rows.samples, pinned, [text for text in fits if text != TOO_LONG.strip()]

    samples, pinned, searched = start()
    assert len(samples) == len(draws) == 12
    assert start() == (samples, pinned, [])  # every image is reused: nothing fitted, nothing drawn
    assert draws == []

    damaged, edited, *_ = samples
    Path(damaged.images[0]).write_bytes(b"cut short")
    index = tmp_path / "attacks" / config.display_name / "index.json"
    text_digest = hashlib.sha256(edited.metadata["original_text"].encode()).hexdigest()
    index.write_text(index.read_text().replace(text_digest, "0" * 64))  # as if the text were new: drawn again
    _, again, searched = start()
    assert again == pinned and sorted(draws) == sorted([damaged.id, edited.id]) and len(searched) == 2
    assert Path(damaged.images[0]).read_bytes() == attack_image_png(damaged)
    assert text_digest in index.read_text() and "0" * 64 not in index.read_text()

    request.getfixturevalue("other_font")  # the images would draw differently now: every one is drawn again
    _, moved, _ = start()
    assert len(draws) == 12 and moved != pinned
