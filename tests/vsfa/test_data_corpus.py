import json

import pytest
from conftest import write_arxiv

from visalign.errors import VisalignError
from visalign.vsfa.config import CorpusConfig
from visalign.vsfa.corpus import load_corpus


def test_starter_corpus_ships_at_least_30_abstracts():
    result = load_corpus(CorpusConfig(source="starter"))
    assert result.read >= 30
    assert len(result.abstracts) == result.read
    assert all(len(a.abstract.split()) >= 20 and a.title for a in result.abstracts)
    assert len({a.id for a in result.abstracts}) == result.read


def test_arxiv_jsonl_with_category_and_keyword_filters(tmp_path):
    path = write_arxiv(tmp_path / "a.jsonl")
    by_category = load_corpus(CorpusConfig(source="file", path=path, categories=["cs.RO"]))
    assert [a.id for a in by_category.abstracts] == ["2401.00001", "2401.00005"]
    assert by_category.filtered_out == 4
    by_keyword = load_corpus(CorpusConfig(source="file", path=path, keywords=["fog", "voice"]))
    assert [a.id for a in by_keyword.abstracts] == ["2401.00005", "2401.00006"]
    prefix = load_corpus(CorpusConfig(source="file", path=path, categories=["cs"]))
    assert len(prefix.abstracts) == 6


def test_csv_dedupes_on_normalised_text_and_hashes_missing_ids(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "Title,Abstract\n"
        'One,"A drone hovers over the square."\n'
        'Two,"a drone  hovers over the SQUARE!"\n'
        'Three,""\n'
        'Four,"A robot arm in a lab."\n'
    )
    result = load_corpus(CorpusConfig(source="file", path=path))
    assert [a.title for a in result.abstracts] == ["One", "Four"]
    assert result.duplicates == 1
    assert result.skipped == [
        {"where": f"{path}:4", "reason": "no abstract text (fields ('abstract', 'summary', 'text'))"}
    ]
    assert all(a.id.startswith("h") and len(a.id) == 13 for a in result.abstracts)


def test_sampling_is_deterministic_by_seed_and_keeps_file_order(tmp_path):
    path = write_arxiv(tmp_path / "a.jsonl")
    first = [a.id for a in load_corpus(CorpusConfig(source="file", path=path, limit=3), seed=1).abstracts]
    again = [a.id for a in load_corpus(CorpusConfig(source="file", path=path, limit=3), seed=1).abstracts]
    assert first == again and len(first) == 3 and first == sorted(first)
    other_seeds = {
        tuple(a.id for a in load_corpus(CorpusConfig(source="file", path=path, limit=3), seed=s).abstracts)
        for s in range(2, 8)
    }
    assert len(other_seeds) > 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.jsonl", "", "corpus is empty"),
        ("notext.jsonl", json.dumps({"id": "x", "title": "t", "abstract": "  "}) + "\n", "no abstract left"),
        ("bad.jsonl", '{"id": "1", "abstract": "ok"}\n{not json\n', "bad.jsonl:2: not a JSON object"),
        ("corpus.txt", "hello", "unknown corpus format '.txt'"),
        ("nocol.csv", "title,body\nA,B\n", "no abstract column"),
    ],
)
def test_bad_corpus_is_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(VisalignError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        load_corpus(CorpusConfig(source="file", path=path))
    assert "\n" not in str(info.value)
    assert name in str(info.value)


def test_missing_file_and_file_source_without_path(tmp_path):
    with pytest.raises(VisalignError, match="corpus file not found"):
        load_corpus(CorpusConfig(source="file", path=tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="needs corpus.path"):
        CorpusConfig(source="file")


@pytest.mark.parametrize("name", ["excel.csv", "notepad.jsonl"])
def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        text = "id,abstract,title\nx1,A drone hovers over a market square at noon.,Drones\n"
    else:
        text = json.dumps({"id": "x1", "abstract": "A drone hovers over a market square at noon.", "title": "Drones"})
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Excel and Notepad save UTF-8
    [abstract] = load_corpus(CorpusConfig(source="file", path=path)).abstracts
    assert (abstract.id, abstract.title) == ("x1", "Drones")


@pytest.mark.parametrize("categories", [5, True, 0, {"main": "cs.AI"}, [["cs.AI"]], ["cs.AI", None]],
                         ids=["int", "bool", "zero", "object", "nested-list", "list-with-null"])  # fmt: skip
def test_categories_of_another_shape_is_one_line_naming_the_row(tmp_path, categories):
    path = tmp_path / "c.jsonl"
    rows = [{"id": "a0", "abstract": "A robot arm sorts parts in a lab."},
            {"id": "a1", "abstract": "A drone hovers over a market square.", "categories": categories}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(VisalignError) as info:
        load_corpus(CorpusConfig(source="file", path=path, categories=["cs.AI"]))
    message = str(info.value)
    assert message.startswith(f"{path}:2: 'categories' must be a string") and "\n" not in message


def test_categories_as_a_string_a_list_numbers_or_absent_still_load(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": "a0", "abstract": "A robot arm sorts parts.", "categories": "cs.AI, cs.RO"},
            {"id": "a1", "abstract": "A drone over a square.", "categories": ["cs.CV", 42]},
            {"id": "a2", "abstract": "A ship in fog.", "categories": None}, {"id": "a3", "abstract": "A lamp.",
             "categories": ""}]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = load_corpus(CorpusConfig(source="file", path=path))
    assert [a.categories for a in result.abstracts] == [["cs.AI", "cs.RO"], ["cs.CV", "42"], [], []]
