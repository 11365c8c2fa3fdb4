"""The parquet copy is streamed in row groups, loads back as the whole-table export did, and is kept when current."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visalign.vsfa import export_dataset
from visalign.vsfa.export import _write_parquet
from visalign.vsfa.imagegen import store_png

PARQUET_FILE = "data/train-00000-of-00001.parquet"
# more rows than one row group (64) holds, so that the file has several and the last one is partial
ROWS = 64 * 2 + 5


def _png(rng: np.random.Generator, index: int) -> bytes:
    """A small real PNG; sizes and modes vary so that the rows' images differ in more than their pixels."""
    size = (8 + index % 5, 6 + index % 3)
    mode = ("RGB", "RGBA", "L")[index % 3]
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_run(root: Path, count: int = ROWS) -> None:
    """A finished run of ``count`` scenes, one real PNG each (stored as the pipeline stores them), two pairs each."""
    rng = np.random.default_rng(0)
    lines: dict[str, list[dict]] = {"corpus": [], "scenes": [], "images": [], "vqa": []}
    for number in range(count):
        abstract, scene = f"2401.{number:05d}", f"2401.{number:05d}:s0"
        image = store_png(_png(rng, number), root, origin=scene).path
        pairs = [
            {"type": "objects", "question": f"What is on desk {number}?", "answer": f"A lamp and {k} cups ✓."}
            for k in range(2)
        ]
        lines["corpus"].append({"id": abstract, "title": "t", "abstract": "a"})
        lines["scenes"].append({"id": abstract, "status": "ok", "source": "llm",
                                "scenes": [{"id": scene, "index": 0, "title": "x", "description": "d"}]})  # fmt: skip
        lines["images"].append({"id": scene, "status": "ok", "image": image, "abstract_id": abstract, "index": 0})
        lines["vqa"].append({"id": scene, "status": "ok", "source": "llm", "image": image, "abstract_id": abstract,
                             "index": 0, "pairs": pairs, "rejected": []})  # fmt: skip
    for name, records in lines.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _whole_table_export(dataset: Path, target: Path) -> None:
    """The parquet copy as the export wrote it before streaming: one ``datasets`` table of every row, saved."""
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "images": List(ImageFeature()),
        }
    )
    sharegpt = json.loads((dataset / "sharegpt.json").read_text())
    rows = {
        "id": [item["id"] for item in sharegpt],
        "messages": [item["messages"] for item in sharegpt],
        "images": [[{"bytes": (dataset / p).read_bytes(), "path": p} for p in item["images"]] for item in sharegpt],
    }
    Dataset.from_dict(rows, features=features).to_parquet(str(target))


def _load(path: Path, cache: Path, *, decode: bool = True):
    """``path`` read as the card says, with ``datasets.load_dataset("parquet", ...)``, cached under ``cache``."""
    from datasets import Image as ImageFeature
    from datasets import List, load_dataset

    loaded = load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache))
    return loaded if decode else loaded.cast_column("images", List(ImageFeature(decode=False)))


@pytest.fixture
def run(tmp_path) -> Path:
    root = tmp_path / "run"
    _write_run(root)
    return root


def test_streamed_parquet_loads_back_as_the_whole_table_export_did(run, tmp_path):
    stats = export_dataset(run)
    assert stats["export"] == {"examples": ROWS, "pairs": 2 * ROWS}
    dataset = run / "dataset"
    streamed = dataset / PARQUET_FILE
    reference = tmp_path / "whole.parquet"
    _whole_table_export(dataset, reference)

    # Read with pyarrow: the same schema, the same features in its metadata, the same values, in groups of 64.
    new_table, old_table = pq.read_table(streamed), pq.read_table(reference)
    assert new_table.equals(old_table)
    assert new_table.schema.metadata[b"huggingface"] == old_table.schema.metadata[b"huggingface"]
    new_meta = pq.ParquetFile(streamed).metadata
    assert [group.num_rows for group in map(new_meta.row_group, range(new_meta.num_row_groups))] == [64, 64, 5]

    # Read with datasets, as the card says: same features, rows, ids, messages, image paths and bytes, pixels.
    new, old = _load(streamed, tmp_path / "hf"), _load(reference, tmp_path / "hf")
    assert new.features == old.features and new.num_rows == old.num_rows == ROWS
    raw_new, raw_old = _load(streamed, tmp_path / "hf", decode=False), _load(reference, tmp_path / "hf", decode=False)
    assert raw_new.to_list() == raw_old.to_list()
    sharegpt = json.loads((dataset / "sharegpt.json").read_text())
    for item, row in zip(sharegpt, raw_new, strict=True):
        assert row["id"] == item["id"] and row["messages"] == item["messages"]
        assert [image["path"] for image in row["images"]] == item["images"]
        assert [image["bytes"] for image in row["images"]] == [(dataset / p).read_bytes() for p in item["images"]]
    for index in (0, 1, 2, ROWS - 1):
        image = new[index]["images"][0]
        with Image.open(dataset / sharegpt[index]["images"][0]) as original:
            assert image.mode == original.mode and image.size == original.size
            assert np.array_equal(np.asarray(image), np.asarray(original))
    # nothing but the file itself under data/: no temporary file the card's data/train-* pattern could pick up
    assert [p.name for p in streamed.parent.iterdir()] == [streamed.name]


def test_an_export_with_no_rows_writes_the_same_empty_table(tmp_path):
    dataset = tmp_path / "dataset"
    _write_parquet(dataset, [])  # a shard given no abstracts exports an empty set
    (dataset / "sharegpt.json").write_text("[]")
    reference = tmp_path / "whole.parquet"
    _whole_table_export(dataset, reference)
    new_table, old_table = pq.read_table(dataset / PARQUET_FILE), pq.read_table(reference)
    assert new_table.equals(old_table)
    assert new_table.schema.metadata[b"huggingface"] == old_table.schema.metadata[b"huggingface"]
    assert pq.ParquetFile(dataset / PARQUET_FILE).metadata.num_rows == 0


def test_a_resume_with_nothing_new_keeps_the_parquet_and_a_change_rewrites_it(run, tmp_path):
    export_dataset(run)
    streamed = run / "dataset" / PARQUET_FILE
    before = streamed.stat()
    export_dataset(run)  # the same records: the same rows, so the file is not written again
    after = streamed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # One answer edited: the rows differ, so the file is written again and holds the new answer.
    vqa = [json.loads(line) for line in (run / "vqa.jsonl").read_text().splitlines()]
    vqa[3]["pairs"][1]["answer"] = "Only a chair."
    (run / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in vqa))
    export_dataset(run)
    assert streamed.stat().st_ino != before.st_ino
    assert _load(streamed, tmp_path / "hf")[3]["messages"][3]["content"] == "Only a chair."


@pytest.mark.parametrize("damage", ["torn", "not parquet", "other columns"])
def test_a_damaged_or_foreign_parquet_is_written_again(run, tmp_path, damage):
    export_dataset(run)
    streamed = run / "dataset" / PARQUET_FILE
    whole = streamed.read_bytes()
    if damage == "torn":
        streamed.write_bytes(whole[: len(whole) // 2])
    elif damage == "not parquet":
        streamed.write_text("hello")
    else:
        pq.write_table(pq.read_table(streamed).drop_columns(["messages"]), streamed)
    export_dataset(run)
    assert streamed.read_bytes() == whole
    assert _load(streamed, tmp_path / "hf").num_rows == ROWS


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(run):
    export_dataset(run)
    dataset = run / "dataset"
    streamed = dataset / PARQUET_FILE
    whole = streamed.read_bytes()
    sharegpt = json.loads((dataset / "sharegpt.json").read_text())
    # the last row group names an image that is not there: the write fails after two groups were written
    sharegpt[-1] = {**sharegpt[-1], "images": ["images/missing.png"]}
    with pytest.raises(FileNotFoundError):
        _write_parquet(dataset, sharegpt)
    assert streamed.read_bytes() == whole
    assert [p.name for p in streamed.parent.iterdir()] == [streamed.name]
