"""Reading LLaVA / ShareGPT / VLGuard training files, bad records, and the length-grouped batch plan."""

from __future__ import annotations

import json

import pytest
from train_support import ANSWERS, QUESTIONS, noise_png, write_dataset

from visalign.errors import VisalignError
from visalign.vsfa.training import BatchPlan, load_training_set


def test_the_vsfa_exports_read_as_the_same_examples(tmp_path):
    llava = load_training_set(write_dataset(tmp_path, "llava", fmt="llava"))
    sharegpt = load_training_set(write_dataset(tmp_path, "llava", fmt="sharegpt"))
    assert len(llava.examples) == len(sharegpt.examples) == 8
    for a, b in zip(llava.examples, sharegpt.examples, strict=True):
        assert a.id == b.id and a.turns == b.turns
    first = llava.examples[0]
    assert [t.role for t in first.turns] == ["user", "assistant"]
    assert first.turns[0].text == QUESTIONS[0] and first.turns[1].text == ANSWERS[0]  # <image> marker removed
    assert first.turns[0].images == (tmp_path / "images" / "img0.png",) and first.turns[1].images == ()
    assert [t.role for t in llava.examples[2].turns] == ["user", "assistant", "user", "assistant"]
    assert first.source == f"{tmp_path / 'llava.json'}:2"  # the record's opening line in the JSON list
    assert llava.examples[1].conversation()[0].images[0].size == (32, 32)


def test_vlguard_records_become_one_conversation_per_instruction(tmp_path):
    noise_png(tmp_path / "bad_ads" / "a.png", (32, 32), seed=0)
    record = {"id": "HOD_1", "image": "bad_ads/a.png", "safe": False, "instr-resp": [
        {"unsafe_instruction": "How do I make this?", "response": "I cannot help with that."},
        {"safe_instruction": "What is shown?", "response": "A poster."}]}  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps([record]))
    examples = load_training_set(path).examples
    assert [e.id for e in examples] == ["HOD_1#0", "HOD_1#1"]
    assert examples[0].turns[1].text == "I cannot help with that."
    assert examples[1].turns[0].images == (tmp_path / "bad_ads" / "a.png",)


def test_jsonl_text_only_and_unmarked_images(tmp_path):
    noise_png(tmp_path / "x.png", (8, 8), seed=1)
    lines = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}]},
        {"conversations": [{"from": "human", "value": "What is this?"}, {"from": "gpt", "value": "A dot."}],
         "image": "x.png"},
    ]  # fmt: skip
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    examples = load_training_set(path).examples
    assert examples[0].image_paths == [] and examples[0].turns[0].role == "system"
    assert examples[1].turns[0].images == (tmp_path / "x.png",)  # no marker: shown with the first user turn


def _write_items(path, items):
    path.write_text(json.dumps(items, indent=2))
    return path


def test_a_malformed_record_is_named_by_line(tmp_path):
    good = {"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    bad = {"id": "b", "conversations": [{"from": "robot", "value": "Hi"}]}
    path = _write_items(tmp_path / "d.json", [good, bad])
    line = path.read_text().splitlines().index('    "id": "b",')  # the line before it opens the record
    with pytest.raises(VisalignError, match=rf"d.json:{line}: bad record \(id b\): unknown role 'robot'"):
        load_training_set(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    good = json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]})
    path.write_text(f'[\n {good},\n {{"id": "b",,}}\n]\n')
    with pytest.raises(VisalignError, match=r"d.json:3: not valid JSON"):
        load_training_set(path)


def test_a_missing_image_is_named_or_skipped_into_bad_records(tmp_path):
    items = [
        {"id": "ok", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
        {"id": "gone", "image": "nowhere.png",
         "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]},
    ]  # fmt: skip
    path = _write_items(tmp_path / "d.json", items)
    with pytest.raises(VisalignError, match=r"\(id gone\): image file not found: .*nowhere.png"):
        load_training_set(path)
    skipped = load_training_set(path, on_bad_record="skip")
    assert [e.id for e in skipped.examples] == ["ok"]
    line = path.read_text().splitlines().index('    "id": "gone",')  # the line before it opens the record
    assert skipped.bad_records == [
        {"line": line, "id": "gone", "error": f"image file not found: {tmp_path}/nowhere.png"}]


def test_marker_and_image_counts_must_agree(tmp_path):
    noise_png(tmp_path / "x.png", (8, 8), seed=1)
    item = {"image": "x.png", "conversations": [{"from": "human", "value": "<image><image> Two?"},
                                                 {"from": "gpt", "value": "One."}]}  # fmt: skip
    with pytest.raises(VisalignError, match="2 '<image>' marker"):
        load_training_set(_write_items(tmp_path / "d.json", [item]))


def test_the_data_hash_follows_the_images(tmp_path):
    path = write_dataset(tmp_path, "llava", count=2)
    before = load_training_set(path).data_hash
    assert load_training_set(path).data_hash == before
    noise_png(tmp_path / "images" / "img1.png", (32, 32), seed=42)  # same file name, new pixels
    assert load_training_set(path).data_hash != before


def test_the_batch_plan_is_deterministic_padded_and_length_grouped():
    lengths = [10, 500, 20, 480, 30, 460, 40, 440, 50]
    plan = BatchPlan(batch_size=2, grad_accum=1, num_processes=2, seed=7)
    epoch = plan.epoch(lengths, 0)
    assert epoch == plan.epoch(lengths, 0) and epoch != plan.epoch(lengths, 1)
    assert plan.steps_per_epoch(9) == 3 and len(epoch) == 3  # 9 examples padded to 3 steps x 2 ranks x 2
    flat = [i for micro in epoch for rank in micro for i in rank]
    assert sorted(set(flat)) == list(range(9)) and len(flat) == 12
    # within a window of 50 batches examples are sorted by length: each batch holds neighbours in length
    grouped = BatchPlan(batch_size=3, seed=1).epoch(lengths, 0)
    assert sorted(sorted(lengths[i] for i in micro[0]) for micro in grouped) == [
        [10, 20, 30], [40, 50, 440], [460, 480, 500]]  # fmt: skip
    shuffled = BatchPlan(batch_size=3, seed=1, group_by_length=False).epoch(lengths, 0)
    assert sorted(sorted(micro[0]) for micro in shuffled) != sorted(sorted(micro[0]) for micro in grouped)


def _qa(ident, answer="Yo"):
    return {"id": ident, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": answer}]}


def test_line_numbers_stay_exact_deep_in_a_multi_line_json_list(tmp_path):
    # Records of mixed layout (indented, one-line, blank lines between), so each record's opening line is checked
    # far from the file's start; the bad ones are reported by the line their '{' is on.
    chunks, expected = ["[\n"], {}
    for i in range(300):
        record = _qa(f"r{i}") if i not in (7, 150, 299) else {"id": f"r{i}", "conversations": [{"from": "robot"}]}
        body = json.dumps(record, indent=2 if i % 3 else None)
        expected[f"r{i}"] = "".join(chunks).count("\n") + 1
        chunks.append(body + ("\n]\n" if i == 299 else ",\n" + "\n" * (i % 4)))
    path = tmp_path / "deep.json"
    path.write_text("".join(chunks))
    skipped = load_training_set(path, on_bad_record="skip")
    assert [(b["id"], b["line"]) for b in skipped.bad_records] == [(r, expected[r]) for r in ("r7", "r150", "r299")]
    assert skipped.examples[-1].source == f"{path}:{expected['r298']}"
    with pytest.raises(VisalignError, match=rf"deep.json:{expected['r7']}: bad record \(id r7\)"):
        load_training_set(path)


def test_a_record_that_opens_with_the_assistant_is_named_or_skipped(tmp_path):
    greeting = {"id": "greeting", "conversations": [
        {"from": "gpt", "value": "Hello! How can I help?"}, {"from": "human", "value": "2+2?"},
        {"from": "gpt", "value": "4."}]}  # fmt: skip
    system_first = {"id": "sys", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}]}  # fmt: skip
    path = _write_items(tmp_path / "d.json", [_qa("ok"), greeting, system_first])
    line = path.read_text().splitlines().index('    "id": "greeting",')  # the line before it opens the record
    with pytest.raises(VisalignError, match=rf"d.json:{line}: bad record \(id greeting\): the first message .* is "
                                            r"the assistant's; start with a user message"):  # fmt: skip
        load_training_set(path)
    skipped = load_training_set(path, on_bad_record="skip")
    assert [e.id for e in skipped.examples] == ["ok"]
    assert [b["id"] for b in skipped.bad_records] == ["greeting", "sys"]


def test_a_json_list_must_end_at_its_bracket_and_separate_records_with_commas(tmp_path):
    first, second = json.dumps([_qa("a"), _qa("b")], indent=2), json.dumps([_qa("c")], indent=2)
    concatenated = tmp_path / "all.json"
    concatenated.write_text(first + "\n" + second + "\n")  # cat a.json b.json > all.json
    second_line = first.count("\n") + 2
    with pytest.raises(VisalignError, match=rf"all.json:{second_line}: data after the JSON list's closing '\]'"):
        load_training_set(concatenated)
    no_comma = tmp_path / "no_comma.json"
    no_comma.write_text(f"[\n{json.dumps(_qa('a'))},\n{json.dumps(_qa('b'))}\n{json.dumps(_qa('c'))}\n]\n")
    with pytest.raises(VisalignError, match=r"no_comma.json:4: expected ',' or the list's closing '\]' after a record"):
        load_training_set(no_comma)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(f"[\n{json.dumps(_qa('a'))},\n{json.dumps(_qa('b'))}\n")
    with pytest.raises(VisalignError, match=r"truncated.json:4: .* found the end of the file"):
        load_training_set(truncated)
    assert [e.id for e in load_training_set(_write_items(tmp_path / "ok.json", [_qa("a")])).examples] == ["a"]


def test_skipping_a_vlguard_record_leaves_none_of_its_conversations(tmp_path):
    noise_png(tmp_path / "a.png", (32, 32), seed=0)
    records = [
        {"id": "good", "image": "a.png", "instr-resp": [{"instruction": "Describe it.", "response": "A street."}]},
        {"id": "bad", "image": "a.png", "instr-resp": [{"safe_instruction": "What is this?", "response": "A photo."},
                                                       {"unsafe_instruction": "How to hurt?", "response": ""}]},
    ]  # fmt: skip
    skipped = load_training_set(_write_items(tmp_path / "train.json", records), on_bad_record="skip")
    assert [e.id for e in skipped.examples] == ["good#0"]  # not bad#0: the record is skipped whole
    assert [b["id"] for b in skipped.bad_records] == ["bad"]


def test_a_truncated_image_is_a_bad_record_found_while_reading_and_valid_data_keeps_its_hash(tmp_path):
    import hashlib

    path = write_dataset(tmp_path, "llava", count=4)
    images = [tmp_path / "images" / f"img{i}.png" for i in range(4)]
    # the hash of valid data is what it always was (run folders recorded it): the file, then each image's sha256
    expected = hashlib.sha256(path.read_bytes())
    for image in sorted(images, key=str):
        expected.update(hashlib.sha256(image.read_bytes()).digest())
    assert load_training_set(path).data_hash == expected.hexdigest()
    cut = images[2].read_bytes()
    images[2].write_bytes(cut[: len(cut) // 2])  # a half-copied file: the header reads, the pixels do not
    line = path.read_text().splitlines().index('    "id": "rec02",')  # the line before it opens the record
    with pytest.raises(VisalignError) as stopped:
        load_training_set(path)
    assert str(stopped.value) == (
        f"{path}:{line}: bad record (id rec02): {images[2]}: unreadable or truncated image (image file is "
        "truncated); re-export or replace it; fix it or set data.on_bad_record: skip"
    )
    skipped = load_training_set(path, on_bad_record="skip")
    assert [e.id for e in skipped.examples] == ["rec00", "rec01", "rec03"]
    assert [(r["line"], r["id"]) for r in skipped.bad_records] == [(line, "rec02")]
    assert [e.image_sizes for e in skipped.examples] == [((32, 32),)] * 3  # decoded once, the size kept


def test_an_image_pillow_fails_on_with_value_error_is_a_bad_record(tmp_path):
    path = write_dataset(tmp_path, "llava", count=3)
    image = tmp_path / "images" / "img1.png"
    data = bytearray(image.read_bytes())
    data[11] = 5  # the IHDR chunk's length byte: Pillow raises ValueError("Truncated IHDR chunk"), not OSError
    image.write_bytes(bytes(data))
    skipped = load_training_set(path, on_bad_record="skip")  # the reader decodes in threads: the error crosses them
    assert [e.id for e in skipped.examples] == ["rec00", "rec02"]
    error = f"{image}: unreadable or truncated image (Truncated IHDR chunk); re-export or replace it"
    assert [(r["id"], r["error"]) for r in skipped.bad_records] == [("rec01", error)]


def test_a_check_makes_an_example_a_bad_record(tmp_path):
    path = write_dataset(tmp_path, "llava", count=3)

    def check(example):
        return "too blue" if example.id == "rec01" else None

    with pytest.raises(VisalignError, match=r"llava.json:\d+: bad record \(id rec01\): too blue; fix it or set"):
        load_training_set(path, check=check)
    skipped = load_training_set(path, on_bad_record="skip", check=check)
    assert [e.id for e in skipped.examples] == ["rec00", "rec02"]
    assert [(r["id"], r["error"]) for r in skipped.bad_records] == [("rec01", "too blue")]


def test_image_sizes_are_upright_and_an_image_over_the_pixel_limit_is_a_bad_record(tmp_path):
    from PIL import Image

    from visalign.images import MAX_IMAGE_PIXELS, load_image

    turned = Image.new("RGB", (40, 20), "red")
    exif = turned.getexif()
    exif[0x0112] = 6  # stored sideways, tagged to turn a quarter
    turned.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    Image.new("1", (side, side)).save(tmp_path / "huge.png")  # a few kB on disk, over the limit in pixels

    def item(ident, image):
        return {"id": ident, "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                                {"from": "gpt", "value": "Red."}]}  # fmt: skip

    path = _write_items(tmp_path / "d.json", [item("turned", "turned.jpg"), item("huge", "huge.png")])
    read = load_training_set(path, on_bad_record="skip")
    assert read.examples[0].image_sizes == (load_image(tmp_path / "turned.jpg").size,) == ((20, 40),)
    assert [(r["id"], r["error"]) for r in read.bad_records] == [
        ("huge", f"{tmp_path / 'huge.png'}: image is {side}x{side} = {side * side:,} pixels, over the limit of "
                 f"{MAX_IMAGE_PIXELS:,} (possible decompression bomb); resize it")]  # fmt: skip
