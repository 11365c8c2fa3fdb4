"""Training records may not reach images outside the image root by climbing out with ``..``.

Training sets are often third-party: a record whose relative image path climbs out of ``image_root`` would train a
shareable adapter on whatever picture lies there. Such a record is a bad record, reported in one line or skipped.
Absolute paths stay allowed (users point at their own images), and what the project's exporters write still loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from train_support import write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import load_training_set

TURNS = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A blue square."}]


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), "blue").save(path)
    return path


def _llava(path: Path, images: dict[str, str]) -> Path:
    """Write a LLaVA file with one record per ``id: image``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps([{"id": ident, "image": image, "conversations": TURNS} for ident, image in images.items()])
    )
    return path


@pytest.fixture()
def layout(tmp_path) -> Path:
    """``data/images/ok.png`` inside the data folder, ``private/holiday.png`` beside it."""
    _image(tmp_path / "data" / "images" / "ok.png")
    _image(tmp_path / "private" / "holiday.png")
    return tmp_path


@pytest.mark.parametrize("climbing", ["../private/holiday.png", "images/../../private/holiday.png"])
def test_a_relative_path_out_of_the_image_root_is_a_one_line_bad_record(layout, climbing):
    data = _llava(layout / "data" / "llava.json", {"ok": "images/ok.png", "escape": climbing})
    with pytest.raises(VisalignError) as refused:
        load_training_set(data)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{data}:1: bad record (id escape): image path {climbing!r} climbs out of the image root")
    assert message.endswith("; fix it or set data.on_bad_record: skip")


def test_skipped_records_that_climb_out_leave_only_the_images_inside(layout):
    escape = "../private/holiday.png"
    messages = [{"role": "user", "content": "<image><image>Compare."}, {"role": "assistant", "content": "Same."}]
    records = [
        {"id": "ok", "image": "images/ok.png", "conversations": TURNS},
        {"id": "llava", "image": escape, "conversations": TURNS},
        {"id": "sharegpt", "images": ["images/ok.png", escape], "messages": messages},
        {"id": "vlguard", "image": escape, "instr-resp": [{"instruction": "Describe it.", "response": "A square."}]},
    ]
    data = layout / "data" / "mixed.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    loaded = load_training_set(data, on_bad_record="skip")
    assert [e.id for e in loaded.examples] == ["ok"]
    skipped = [(b["id"], "climbs out of the image root" in b["error"]) for b in loaded.bad_records]
    assert skipped == [("llava", True), ("sharegpt", True), ("vlguard", True)]
    private = (layout / "private").resolve()
    assert all(private not in p.resolve().parents for e in loaded.examples for p in e.image_paths)


def test_an_absolute_path_and_a_path_that_stays_inside_still_load(layout):
    holiday = layout / "private" / "holiday.png"
    data = _llava(layout / "data" / "llava.json", {"absolute": str(holiday), "inside": "images/../images/ok.png"})
    loaded = load_training_set(data)
    assert [e.image_paths for e in loaded.examples] == [[holiday], [layout / "data" / "images/../images/ok.png"]]


def test_a_path_under_another_image_root_still_loads(layout):
    data = _llava(layout / "data" / "llava.json", {"holiday": "holiday.png"})
    [example] = load_training_set(data, image_root=layout / "private").examples
    assert example.image_paths == [layout / "private" / "holiday.png"]


@pytest.mark.parametrize("fmt", ["llava", "sharegpt"])
def test_what_the_vsfa_exporter_writes_still_loads(tmp_path, fmt):
    data = write_dataset(tmp_path / "export", "llava", count=4, fmt=fmt)
    loaded = load_training_set(data)
    assert len(loaded.examples) == 4 and loaded.bad_records == []
