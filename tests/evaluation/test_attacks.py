"""FigStep images against the 50 official ones, the font fallback, MM-SafetyBench TYPO / SD_TYPO, and turning a
text set into a typographic attack."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFont

from visalign.errors import VisalignError
from visalign.evaluation.attacks import (
    FIGSTEP_PROMPT,
    TYPO_PROMPT,
    FontFallbackWarning,
    render_figstep_csv,
    render_sd_typo,
    render_typo,
    resolve_font,
    typographic_attack,
    wrap_to_width,
)
from visalign.evaluation.benchmarks import load_benchmark

FREEMONOBOLD = "/usr/share/fonts/truetype/freefont/FreeMonoBold.ttf"


def _difference(ours: Image.Image, official: Image.Image) -> tuple[float, float]:
    """Mean absolute difference in grey levels, and the fraction of pixels off by more than half the range."""
    a = np.asarray(ours.convert("RGB"), dtype=np.int16)
    b = np.asarray(official.convert("RGB"), dtype=np.int16)
    diff = np.abs(a - b)
    return float(diff.mean()), float((diff.max(axis=2) > 127).mean())


def test_figstep_csv_matches_all_50_official_images(bench, tmp_path):
    choice = resolve_font("figstep")
    assert choice.faithful, "FreeMonoBold is missing: run `apt-get install fonts-freefont-ttf` (make install-dev)"
    report = render_figstep_csv(bench / "figstep" / "SafeBench-Tiny.csv", tmp_path)
    assert len(report.written) == 50 and report.errors == []
    official_dir = bench / "figstep" / "images" / "SafeBench-Tiny"
    assert sorted(p.name for p in report.written) == sorted(p.name for p in official_dir.glob("*.png"))
    figures = []
    for ours in report.written:
        with Image.open(ours) as mine, Image.open(official_dir / ours.name) as official:
            assert mine.size == official.size == (760, 760)
            figures.append(_difference(mine, official))
    worst_mean = max(m for m, _ in figures)
    worst_off = max(f for _, f in figures)
    print(f"FigStep fidelity over 50 images: worst mean |diff| {worst_mean:.5f} grey levels, "
          f"worst share of pixels off by >127: {worst_off:.5%}")
    assert worst_mean < 2.0
    assert worst_off < 0.001


def test_figstep_csv_reports_bad_rows_and_keeps_going(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text(
        "dataset,category_id,task_id,category_name,question,instruction\n"
        "ForbidQI,3,7,Malware Generation,How?,Steps to write a kite.\n"
        "ForbidQI,x,7,Malware Generation,How?,Steps.\n"
    )
    report = render_figstep_csv(source, tmp_path / "out")
    assert [p.name for p in report.written] == ["query_ForbidQI_3_7_6.png"]
    assert [e.row for e in report.errors] == ["line 3"]


def test_missing_font_warns_and_falls_back(tmp_path):
    with pytest.warns(FontFallbackWarning, match="fonts-freefont-ttf"):
        choice = resolve_font("figstep", (str(tmp_path / "absent.ttf"),))
    assert not choice.faithful and choice.path.name == "DejaVuSansMono-Bold.ttf" and choice.path.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_font("figstep", (FREEMONOBOLD,)).faithful


def test_typo_image_geometry():
    font = ImageFont.truetype(FREEMONOBOLD, 90)  # fixed font: the geometry must not depend on the machine
    assert wrap_to_width("bomb", font) == ["bomb"]
    # FreeMono advances 54 px per character at size 90: 18 characters fit in 1024 px, 19 do not.
    lines = wrap_to_width("make a bomb at home quickly", font)
    assert lines == ["make a bomb at", " home quickly"]
    image = render_typo("make a bomb at home quickly", font=font)
    assert image.size == (1024, 90 * 3)
    grey = np.asarray(image.convert("L"))
    assert grey[:45].min() == 255  # nothing above the text origin (0, 45)
    assert grey[45:135].min() == 0
    sd = Image.new("RGB", (1024, 1024), (0, 128, 0))
    stacked = render_sd_typo(sd, "bomb", font=font)
    assert stacked.size == (1024, 1024 + 180)
    assert stacked.getpixel((10, 10)) == (0, 128, 0) and stacked.getpixel((1000, 1100)) == (255, 255, 255)


def test_typographic_attack_turns_advbench_into_figstep_images(bench, tmp_path):
    text = load_benchmark("advbench", bench / "advbench" / "adv_bench.prompt").samples[:3]
    result = typographic_attack(text, tmp_path, style="figstep")
    assert result.errors == []
    first = result.samples[0]
    assert first.id == "advbench:1+figstep" and first.text == FIGSTEP_PROMPT
    assert first.metadata["original_text"] == text[0].text and first.expected == "refuse"
    # 82 characters do not fit the canvas at the official size 80, so the font shrinks.
    assert first.metadata["font_size"] < 80
    image = Image.open(first.images[0])
    assert image.size == (760, 760)
    grey = np.asarray(image.convert("L"))
    assert grey.min() == 0 and grey[-5:].min() == 255  # text drawn, nothing runs off the bottom
    typo = typographic_attack(text[:1], tmp_path / "typo", style="typo")
    assert typo.samples[0].text == TYPO_PROMPT and Image.open(typo.samples[0].images[0]).width == 1024


def test_load_benchmark_with_attack_option(bench, tmp_path):
    result = load_benchmark(
        "strongreject-small", bench / "strongreject" / "strongreject_small_dataset.csv",
        attack="figstep", attack_dir=tmp_path,
    )
    assert len(result.samples) == 60 and len(list(tmp_path.glob("*.png"))) == 60
    assert {s.text for s in result.samples} == {FIGSTEP_PROMPT}


def test_short_figstep_text_keeps_official_size(tmp_path):
    with open(tmp_path / "x.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["sentence"], ["Steps to make *."]])
    [sample] = load_benchmark("figstep-benign", tmp_path / "x.csv", render_dir=tmp_path / "r").samples
    [attacked] = typographic_attack([sample.model_copy(update={"text": "Steps to make *."})], tmp_path / "a").samples
    assert attacked.metadata["font_size"] == 80
    # Same text, official size: the fitted renderer draws exactly the official layout.
    assert _difference(Image.open(attacked.images[0]), Image.open(sample.images[0])) == (0.0, 0.0)


def test_attacking_an_image_benchmark_draws_each_request_not_its_fixed_prompt(tmp_path, bench):
    from visalign.evaluation.attacks import write_typographic_set
    from visalign.evaluation.benchmarks import load_benchmark

    source = bench / "figstep" / "SafeBench-Tiny.csv"
    questions = {s.id: s.text for s in load_benchmark("figstep-safebench-tiny", source, mode="text").samples}
    result = write_typographic_set("figstep-safebench-tiny", source, tmp_path / "set", style="typo")
    assert len(result.samples) == 50 == len(questions)
    for sample in result.samples:
        assert sample.metadata["original_text"] == questions[sample.id.removesuffix("+typo")]
        assert len(sample.images) == 1  # the drawn request only; no FigStep image left beside it
    with pytest.raises(VisalignError, match="needs mode: text"):
        load_benchmark("figstep-safebench-tiny", source, attack="typo", attack_dir=tmp_path / "a", mode="image")
