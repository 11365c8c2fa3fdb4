import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib
import pytest
from PIL import Image

from visalign.errors import VisalignError
from visalign.evaluation.report import write_report
from visalign.evaluation.summary import summarize

HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)> & done'
SYSTEMS = ["baseline", "adashield <prompt>", "vsfa"]
SECRET = "sk-live-0123456789abcdefSECRET"


def record(system, sid, benchmark, category, expected, *, label=None, correct=None, error=None, judgements=None,
           response=None):
    return {
        "id": f"{system}::{sid}", "system": system, "sample_id": sid, "benchmark": benchmark,
        "category": category, "expected": expected, "prompt": f"Prompt for {sid}", "images": [],
        "response": None if error else (response or f"Response of {system} to {sid}"), "error": error,
        "decoding": {"max_new_tokens": 64, "temperature": 0.0, "backend": "local", "model": "tiny"},
        "refusal": None if label is None else {"label": label, "raw": "", "judge": "visalign-refusal"},
        "correct": correct, "judgements": judgements or {},
    }


def build_records():
    """Hand-set outcomes. figstep (9 harmful, 3 categories): complied 6 / 3 / 1 times per system.
    xstest (4 benign in 2 categories + 2 harmful): refused 0 / 3 / 1 benign. mmbench (10 items): right 6 / 5 / 7."""
    complied = {"baseline": 6, "adashield <prompt>": 3, "vsfa": 1}
    benign_refused = {"baseline": 0, "adashield <prompt>": 3, "vsfa": 1}
    right = {"baseline": 6, "adashield <prompt>": 5, "vsfa": 7}
    records = []
    for system in SYSTEMS:
        for i in range(9):
            label = "compliance" if i < complied[system] else "refusal"
            rubric = {"label": "unsafe" if label == "compliance" else "safe",
                      "score": 2.0 if label == "compliance" else 4.0, "raw": "{}", "error": None}
            response = HOSTILE if (system == "baseline" and i == 0) else None
            records.append(record(system, f"fs{i}", "figstep", f"topic-{i % 3}", "refuse", label=label,
                                  judgements={"rubric": rubric}, response=response))
        for i in range(4):
            label = "refusal" if i < benign_refused[system] else "compliance"
            records.append(record(system, f"xs{i}", "xstest", "homonyms" if i % 2 else "safe_contexts", "comply",
                                  label=label))
        records.append(record(system, "xs-c0", "xstest", "contrast_homonyms", "refuse", label="refusal"))
        records.append(record(system, "xs-c1", "xstest", "contrast_homonyms", "refuse", label="compliance"))
        for i in range(10):
            records.append(record(system, f"mc{i}", "mmbench", "", "answer", correct=i < right[system]))
    records.append(record("vsfa", "broken", "mmbench", "", "answer", error="image missing: /data/x.png <corrupt>"))
    return records


class Page(HTMLParser):
    """Collects tags, table cell texts by table id, image attributes and the visible text."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.tables, self.text = [], [], {}, []
        self._table, self._cell = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs)
        if tag == "table":
            self._table = attrs.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self.tables[self._table].append([])
        if tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(html):
    page = Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    records = build_records()
    path = out / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"systems": SYSTEMS, "judge": {"base_url": "http://127.0.0.1:8000/v1", "api_key": SECRET}}
    html_path = write_report(path, summarize(records), out / "report.html", title="Run <A&B>", config=config,
                             samples_per_system=40)
    return html_path


def overview_cell(page, system, benchmark, column):
    header, *rows = page.tables["overview-table"]
    [row] = [r for r in rows if r[0] == system and r[1] == benchmark]
    return row[header.index(column)]


def test_overview_shows_rates_with_intervals_and_denominators(report):
    page = parse(report.read_text())
    header = page.tables["overview-table"][0]
    assert header == ["System", "Benchmark", "ASR", "Harmful refusal", "Over-refusal", "Capability",
                      "Quality (rubric)", "Rows"]
    assert overview_cell(page, "baseline", "figstep", "ASR").startswith("66.7% 95% CI ")
    assert overview_cell(page, "baseline", "figstep", "ASR").endswith(" · 6/9")
    assert overview_cell(page, "adashield <prompt>", "figstep", "Harmful refusal").endswith(" · 6/9")
    assert overview_cell(page, "adashield <prompt>", "xstest", "Over-refusal").startswith("75.0%")
    assert overview_cell(page, "vsfa", "mmbench", "Capability").startswith("70.0%")
    assert overview_cell(page, "vsfa", "mmbench", "Capability").endswith("7/10 1 failed")
    # pooled ASR: figstep + the two contrast prompts, one complied each: (6+1)/11
    assert overview_cell(page, "baseline", "all (pooled)", "ASR").startswith("63.6%")
    assert overview_cell(page, "baseline", "all (pooled)", "ASR").endswith(" · 7/11")
    # rubric quality on figstep/baseline: 6 x 2 + 3 x 4 over 9
    assert overview_cell(page, "baseline", "figstep", "Quality (rubric)").startswith("2.67 95% CI ")
    assert overview_cell(page, "vsfa", "mmbench", "Rows") == "11 (1 failed)"
    assert overview_cell(page, "baseline", "mmbench", "ASR") == "–"


def test_capability_deltas_against_the_first_system(report):
    page = parse(report.read_text())
    header, *rows = page.tables["capability-table"]
    assert header[3] == "Δ vs baseline (points)"
    assert [(r[1], r[3]) for r in rows] == [("baseline", "baseline"), ("adashield <prompt>", "-10.0"),
                                            ("vsfa", "+10.0")]


def test_errors_table_and_judges_table(report):
    page = parse(report.read_text())
    header, *rows = page.tables["errors-table"]
    assert header == ["System", "Benchmark", "Rows", "Generation / input errors", "Refusal verdict unknown",
                      "Unparsed choice answers (counted wrong)", "rubric errors"]
    # the failed mmbench row has no rubric verdict: a failed rubric judgement, as in the summary's judge metrics
    assert ["vsfa", "mmbench", "11", "1", "0", "0", "1"] in rows
    assert ["baseline", "figstep", "9", "0", "0", "0", "0"] in rows
    judges = {tuple(r[:4]): r[4] for r in page.tables["judges-table"][1:]}
    assert judges[("baseline", "figstep", "rubric", "unsafe rate")].startswith("66.7% 95% CI ")
    assert judges[("vsfa", "figstep", "rubric", "unsafe rate")].endswith(" · 1/9")
    assert judges[("baseline", "figstep", "rubric", "mean score")].startswith("2.67 95% CI ")


def test_model_text_is_escaped_and_secrets_scrubbed(report):
    html = report.read_text()
    page = parse(html)
    assert "<script" not in html.lower()
    assert not [tag for tag, _ in page.tags if tag in ("script", "iframe", "object", "link")]
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    text = "".join(page.text)
    assert HOSTILE in text  # shown as text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; done" in html
    assert "image missing: /data/x.png <corrupt>" in text
    assert "<title>Run &lt;A&amp;B&gt;</title>" in html
    assert SECRET not in html and '"api_key": "<redacted>"' in text
    assert "http://127.0.0.1:8000/v1" in text  # the config is shown


def test_plots_are_inline_pngs_of_the_stated_size(report):
    page = parse(report.read_text())
    srcs = [tag_attrs.get("src", "") for tag, tag_attrs in page.tags if "src" in tag_attrs]
    hrefs = [tag_attrs["href"] for tag, tag_attrs in page.tags if "href" in tag_attrs]
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)  # nothing to fetch
    alts = [img["alt"] for img in page.images]
    assert alts == ["figstep attack success rate per category", "xstest over-refusal rate per category",
                    "safety vs over-refusal trade-off", "capability deltas vs the baseline"]
    for img in page.images:
        data = base64.b64decode(img["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert image.size == (int(img["width"]), int(img["height"]))
            assert image.width > 300 and image.height > 150
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # a drawing, not a blank canvas


def test_report_from_records_in_memory_without_summary_and_without_tradeoff(tmp_path):
    records = [record("only", f"mc{i}", "mmbench", "", "answer", correct=i < 3) for i in range(4)]
    path = write_report(records, None, tmp_path / "sub" / "r.html", title="capability only")
    page = parse(path.read_text())
    assert "No system has both judged harmful and judged benign requests" in "".join(page.text)
    assert [img["alt"] for img in page.images] == []
    assert page.tables["overview-table"][1][:2] == ["only", "all (pooled)"]
    assert page.tables["overview-table"][1][5].startswith("75.0%")


def test_names_with_dollar_signs_are_drawn_literally_not_as_mathtext(tmp_path):
    """A "$" pair in a system, benchmark or category name would be mathtext; an invalid formula must not raise."""
    systems, benchmark = ["tier $\\alpha_$", "cost $5 vs $10"], "bench $\\frac{$"
    records = []
    for system in systems:
        for i in range(4):
            category, complied = ("cat $x^$" if i % 2 else "plain"), i > 0
            records.append(record(system, f"h{i}", benchmark, category, "refuse",
                                  label="compliance" if complied else "refusal"))
            records.append(record(system, f"b{i}", benchmark, category, "comply",
                                  label="refusal" if complied else "compliance"))
            records.append(record(system, f"a{i}", benchmark, category, "answer", correct=i < 2))
    path = write_report(records, None, tmp_path / "r.html", title="dollars")
    alts = [img["alt"] for img in parse(path.read_text()).images]
    # every kind of chart was drawn: per category, the trade-off and the capability deltas
    assert f"{benchmark} attack success rate per category" in alts
    assert {"safety vs over-refusal trade-off", "capability deltas vs the baseline"} <= set(alts)
    assert matplotlib.rcParams["text.parse_math"]  # the setting is local to the report's charts


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(VisalignError, match="records file not found"):
        write_report(tmp_path / "nope.jsonl", None, tmp_path / "r.html", title="x")
    with pytest.raises(VisalignError, match=r"record 1 \(s::1\): expected must be one of"):
        write_report([{**record("s", "1", "b", "", "refuse"), "expected": "?"}], None, tmp_path / "r.html",
                     title="x")
    assert not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------------------------------- headless Chromium
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]
# Appended to a copy of the report (the report itself has no script): record what Chromium decoded.
PROBE = (
    "<script>window.addEventListener('load', () => { for (const img of document.images) {"
    " img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight); }"
    " document.body.setAttribute('data-probed', String(document.images.length)); });</script>"
)


def chromium():
    for name in (os.environ.get("VISALIGN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "headless Chromium is needed to check that the HTML report renders, and none was found (tried "
        "$VISALIGN_CHROMIUM, chromium, chromium-browser, google-chrome); install it with "
        "`apt-get install -y chromium` (Debian) or point VISALIGN_CHROMIUM at a Chrome binary"
    )


def run_chromium(tmp_path, *args):
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_in_headless_chromium(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    page = parse(dom)
    assert page.tables["overview-table"][0][0] == "System"
    assert {row[0] for row in page.tables["overview-table"][1:]} == set(SYSTEMS)
    assert {row[1] for row in page.tables["capability-table"][1:]} == set(SYSTEMS)
    body = next(attrs for tag, attrs in page.tags if tag == "body")
    assert body.get("data-probed") == "4"
    for img in page.images:
        assert img["data-natural"] == f"{img['width']}x{img['height']}"  # decoded, at its full size

    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri())
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    assert rgb.size == (1280, 2400)
    colours = rgb.getcolors(1 << 24)
    assert len(colours) > 50  # text, tables and plots, not a blank page
    # the first chart's bars (matplotlib's C0 blue, 31,119,180) were painted
    blue = sum(count for count, (r, g, b) in colours if abs(r - 31) < 8 and abs(g - 119) < 8 and abs(b - 180) < 8)
    assert blue > 2000
    dark = sum(count for count, (r, g, b) in colours if r + g + b < 200)
    assert dark > 5000  # text was drawn
