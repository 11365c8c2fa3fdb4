"""Image loaders check every row's image in threads, and still report rows, errors and ids in file order."""

from __future__ import annotations

import json
import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from visalign.evaluation.benchmarks import load_benchmark
from visalign.evaluation.benchmarks._io import image_problem

from .conftest import write_image


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels and holds none (what a decompression bomb opens as)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    """Real files, one of each outcome: good PNG and JPEG, missing, empty, truncated, text, bomb, oversized."""
    good = write_image(tmp_path / "good.png")
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter
    Image.new("RGB", (40, 20), (10, 200, 10)).save(rotated, exif=exif)
    truncated = tmp_path / "truncated.png"
    write_image(truncated, size=(300, 200))
    truncated.write_bytes(truncated.read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    return {
        "good": good,
        "rotated": rotated,
        "missing": tmp_path / "missing.png",
        "empty": tmp_path / "empty.png",
        "truncated": truncated,
        "text": tmp_path / "text.png",
        # over Pillow's own bomb limit (a warning that load_image makes an error), and over ours only
        "bomb": _png_header_only(tmp_path / "bomb.png", 10_000, 10_000),
        "oversized": _png_header_only(tmp_path / "oversized.png", 9_000, 8_000),
    }


def test_image_problems_gives_each_image_the_message_load_image_gives_it(images):
    from visalign.images import image_problems

    paths = list(images.values())
    filters = list(warnings.filters)
    problems = image_problems([*paths, *reversed(paths)])  # each image checked once, keys in first-seen order
    assert list(problems) == paths
    assert problems == {path: image_problem(path) for path in paths}
    assert problems[images["good"]] is None and problems[images["rotated"]] is None
    assert "image file not found" in problems[images["missing"]]
    assert "not an image file" in problems[images["empty"]] and "not an image file" in problems[images["text"]]
    assert "unreadable or truncated" in problems[images["truncated"]]
    # Pillow's bomb warning became the error it is for load_image, in the worker threads too
    assert "image too large" in problems[images["bomb"]]
    assert "over the limit of 64,000,000" in problems[images["oversized"]]
    assert warnings.filters == filters  # and the process-wide filters are as they were


def test_map_images_runs_in_threads_and_passes_errors_on(tmp_path):
    import os

    from visalign.images import map_images

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: one thread")
    both = threading.Barrier(2, timeout=10)

    def meet(path: Path) -> str:
        both.wait()  # returns only when another thread waits too: the paths are worked on at the same time
        return path.name

    paths = [tmp_path / f"{n}.png" for n in range(4)]
    assert map_images(meet, paths) == {path: path.name for path in paths}

    def fail(path: Path) -> None:
        raise RuntimeError(f"no {path.name}")

    with pytest.raises(RuntimeError, match="no 0.png"):
        map_images(fail, paths[:1])
    with pytest.raises(RuntimeError, match="no "):
        map_images(fail, paths)


def _moss_item(pid: str, image: str, over: str = "type 1") -> dict:
    return {"pid": pid, "question": f"Question {pid}?", "image": image, "metadata": {"over": over}}


def test_mossbench_rows_keep_file_order_and_an_id_is_claimed_only_by_a_usable_row(tmp_path):
    write_image(tmp_path / "images" / "a.png", (1, 2, 3))
    write_image(tmp_path / "images" / "b.png", (4, 5, 6))
    (tmp_path / "images" / "c.png").write_bytes(b"")
    rows = {
        "1": _moss_item("1", "images/a.png"),
        "2": _moss_item("2", "images/missing.png"),
        "3": _moss_item("3", "images/c.png"),
        "4": _moss_item("2", "images/b.png"),  # pid 2 again: its first row had no image, so this one is the sample
        "5": _moss_item("1", "images/a.png"),  # pid 1 again, after a usable row: a duplicate
        "6": _moss_item("6", "images/a.png", over="type 9"),
        "7": _moss_item("7", "images/b.png"),
        "8": _moss_item("8", "images/c.png"),  # the same empty file as row 3: an error here too
    }
    (tmp_path / "information.json").write_text(json.dumps(rows))
    result = load_benchmark("mossbench", tmp_path / "information.json")
    assert [s.id for s in result.samples] == ["mossbench:1", "mossbench:2", "mossbench:7"]
    assert [s.images for s in result.samples] == [
        [tmp_path / "images/a.png"], [tmp_path / "images/b.png"], [tmp_path / "images/b.png"]
    ]  # fmt: skip
    assert [(e.row, e.message.split(": ", 1)[-1][:24]) for e in result.errors] == [
        ("pid 2", "image file not found; ch"),
        ("pid 3", "not an image file Pillow"),
        ("pid 5", "duplicate id '1'"),
        ("pid 6", "unknown category metadat"),
        ("pid 8", "not an image file Pillow"),
    ]


def test_vlguard_rows_keep_file_order_and_an_id_is_claimed_only_by_a_usable_row(tmp_path):
    write_image(tmp_path / "test" / "good.png")
    (tmp_path / "test" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")

    def item(ident: str, image: str, safe: bool = False) -> dict:
        return {"id": ident, "image": image, "safe": safe, "instr-resp": [{"instruction": f"Do {ident}."}]}

    items = [
        item("u1", "good.png"),
        {"id": "x", "image": "good.png"},  # no 'safe'
        item("u2", "gone.png"),
        item("u2", "good.png"),  # u2's first row had no image: this one is the sample
        item("s1", "good.png", safe=True),  # another subset's row
        item("u3", "bad.png"),
        item("u1", "good.png"),  # u1 again, after a usable row: a duplicate
    ]
    (tmp_path / "test.json").write_text(json.dumps(items))
    result = load_benchmark("vlguard", tmp_path / "test.json")
    assert [(s.id, s.text) for s in result.samples] == [
        ("vlguard:unsafes:u1", "Do u1."),
        ("vlguard:unsafes:u2", "Do u2."),
    ]
    assert [e.row for e in result.errors] == ["item 2 (id x)", "item 3 (id u2)", "item 6 (id u3)", "item 7 (id u1)"]
    assert "malformed item" in result.errors[0].message and "not found" in result.errors[1].message
    assert "not an image file" in result.errors[2].message
    assert result.errors[3].message == "duplicate id 'u1'"


def test_mm_vet_rows_keep_file_order(tmp_path):
    write_image(tmp_path / "images" / "1.png")
    write_image(tmp_path / "images" / "5.png")
    (tmp_path / "images" / "4.png").write_text("no")

    def item(name: str) -> dict:
        return {"imagename": name, "capability": ["ocr"], "question": f"What is in {name}?", "answer": "x"}

    data = {"v1": item("1.png"), "v2": item("2.png"), "v3": {"question": "q"}, "v4": item("4.png"), "v5": item("5.png")}
    (tmp_path / "mm-vet.json").write_text(json.dumps(data))
    result = load_benchmark("mm-vet", tmp_path / "mm-vet.json")
    assert [s.id for s in result.samples] == ["mm-vet:v1", "mm-vet:v5"]
    assert [e.row for e in result.errors] == ["id v2", "id v3", "id v4"]
    missing, malformed, corrupt = (e.message for e in result.errors)
    assert "not found" in missing and "malformed" in malformed and "not an image" in corrupt
