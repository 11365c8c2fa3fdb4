"""Benchmark rows cannot reach files outside their folders: not by an MMBench index, nor by an image path.

A benchmark file is third-party data. An MMBench ``index`` names the file its decoded image is cached as, so
``../..`` or an absolute index used to write (or overwrite) image files anywhere. An image path that climbs out of
the image folder, or is absolute, used to load any picture on the machine and send it to the system under test.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from visalign.errors import VisalignError
from visalign.evaluation.benchmarks import LoadResult, load_benchmark
from visalign.evaluation.benchmarks._io import save_image_bytes

from .conftest import write_image

HEADER = "index\tquestion\thint\tA\tB\tanswer\tcategory\timage"


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _mmbench(tmp_path: Path, indexes: list[str], colour=(255, 0, 0)) -> LoadResult:
    """Load a TSV with one valid row per index, caching images in ``tmp_path/work/images``."""
    cell = base64.b64encode(_png(colour)).decode()
    rows = [HEADER, *(f"{index}\tq?\tnan\tyes\tno\tA\tc\t{cell}" for index in indexes)]
    tsv = tmp_path / "work" / "mmbench.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text("\n".join(rows) + "\n")
    return load_benchmark("mmbench", tsv, image_dir=tmp_path / "work" / "images")


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_hostile_mmbench_index_writes_nothing_outside_the_image_folder(tmp_path):
    images = tmp_path / "work" / "images"
    absolute = tmp_path / "elsewhere" / "absolute"
    result = _mmbench(tmp_path, ["../../outside/relative", str(absolute), "a/../../b"])

    assert result.errors == []  # the rows are usable: only their cache file names change
    assert not (tmp_path / "outside").exists() and not absolute.parent.exists()
    written = _files(tmp_path)
    assert written == {tmp_path / "work" / "mmbench.tsv", *(images / p.name for p in _files(images))}
    cached = [s.images[0] for s in result.samples]
    assert all(p.parent == images for p in cached) and len(set(cached)) == 3  # one file each, none shared
    assert [s.id for s in result.samples] == [
        "mmbench:../../outside/relative",
        f"mmbench:{absolute}",
        "mmbench:a/../../b",
    ]


def test_an_absolute_mmbench_index_does_not_overwrite_the_file_it_names(tmp_path):
    victim = tmp_path / "magic_out" / "safety.png"
    victim.parent.mkdir()
    victim.write_bytes(_png((0, 255, 0)))
    before = victim.read_bytes()
    [sample] = _mmbench(tmp_path, [str(victim.with_suffix(""))]).samples
    assert victim.read_bytes() == before
    assert sample.images[0].parent == tmp_path / "work" / "images"


def test_plain_mmbench_indexes_keep_the_cache_names_earlier_versions_wrote(tmp_path):
    result = _mmbench(tmp_path, ["17", "dev_3", "A-9"])
    assert [s.images[0].name for s in result.samples] == ["17.png", "dev_3.png", "A-9.png"]


def test_a_nul_or_empty_mmbench_index_is_a_row_error_not_an_aborted_load(tmp_path):
    result = _mmbench(tmp_path, ["1", "bad\x00index", "2"])
    assert [s.id for s in result.samples] == ["mmbench:1", "mmbench:2"]
    [error] = result.errors
    assert error.row == "line 3" and "control characters" in error.message and "\n" not in error.message


def test_save_image_bytes_refuses_a_name_that_is_no_plain_file_name(tmp_path):
    for name in ("../x", "/tmp/x", "a/b", "..", "", ".hidden", "nul\x00"):
        with pytest.raises(VisalignError, match="not a plain file name"):
            save_image_bytes(_png((1, 2, 3)), tmp_path / "cache", name)
    assert _files(tmp_path) == set()


def test_save_image_bytes_does_not_write_through_a_link_planted_in_the_cache(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(_png((0, 255, 0)))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "5.png").symlink_to(victim)
    with pytest.raises(VisalignError, match="leads out of the image cache"):
        save_image_bytes(_png((255, 0, 0)), cache, "5")
    assert victim.read_bytes() == _png((0, 255, 0))


# --- image paths in rows -------------------------------------------------------------------------------------------


def _scienceqa(tmp_path: Path, images: list[str]) -> LoadResult:
    root = tmp_path / "sqa"
    write_image(root / "images" / "test" / "0" / "ok.png")
    problems = {
        str(pid): {"question": "Which?", "choices": ["a", "b"], "answer": 0, "image": image, "split": "test"}
        for pid, image in enumerate(images)
    }
    (root / "problems.json").write_text(json.dumps(problems))
    return load_benchmark("scienceqa-img", root / "problems.json")


def _mm_vet(tmp_path: Path, images: list[str]) -> LoadResult:
    root = tmp_path / "mmvet"
    write_image(root / "images" / "ok.png")
    data = {
        f"v{n}": {"imagename": image, "capability": ["rec"], "question": "What?", "answer": "x"}
        for n, image in enumerate(images)
    }
    (root / "mm-vet.json").write_text(json.dumps(data))
    return load_benchmark("mm-vet", root / "mm-vet.json")


def _vlguard(tmp_path: Path, images: list[str]) -> LoadResult:
    root = tmp_path / "vlguard"
    write_image(root / "test" / "ok.png")
    items = [
        {"id": f"u{n}", "image": image, "safe": False, "instr-resp": [{"instruction": "Do it.", "response": "No."}]}
        for n, image in enumerate(images)
    ]
    (root / "test.json").write_text(json.dumps(items))
    return load_benchmark("vlguard", root / "test.json", subset="unsafes")


def _mossbench(tmp_path: Path, images: list[str]) -> LoadResult:
    root = tmp_path / "moss"
    write_image(root / "ok.png")
    data = {
        str(n): {"image": image, "question": "Describe it.", "pid": str(n), "metadata": {"over": "type 1"}}
        for n, image in enumerate(images)
    }
    (root / "information.json").write_text(json.dumps(data))
    return load_benchmark("mossbench", root / "information.json")


def _spa_vl(tmp_path: Path, images: list[str]) -> LoadResult:
    root = tmp_path / "spavl"
    write_image(root / "ok.png")
    records = [{"image": image, "question": "What is shown?", "class1": "Privacy"} for image in images]
    (root / "harm.json").write_text(json.dumps(records))
    return load_benchmark("spa-vl", root / "harm.json", split="harm", image_dir=tmp_path / "spavl-cache")


LOADERS: dict[str, Callable[[Path, list[str]], LoadResult]] = {
    "scienceqa-img": _scienceqa,
    "mm-vet": _mm_vet,
    "vlguard": _vlguard,
    "mossbench": _mossbench,
    "spa-vl": _spa_vl,
}


@pytest.mark.parametrize("name", LOADERS)
def test_an_image_path_out_of_the_image_folder_is_a_row_error(tmp_path, name):
    private = write_image(tmp_path / "private" / "holiday.png")
    climb = "../" * 30  # past the file system root whatever the temporary folder's depth
    escapes = [climb + str(private).lstrip("/"), str(private), "ok/" + climb + str(private).lstrip("/")]
    result = LOADERS[name](tmp_path, ["ok.png", *escapes])

    assert len(result.samples) == 1 and result.samples[0].images[0].name == "ok.png"
    assert all(private not in s.images for s in result.samples)
    assert len(result.errors) == 3
    for error in result.errors:
        assert "leads out of the image folder" in error.message and "\n" not in error.message
        assert error.row  # the report names the row


def test_an_mm_safetybench_id_that_climbs_out_of_imgs_is_a_row_error(tmp_path):
    write_image(tmp_path / "private" / "holiday.jpg")
    root = tmp_path / "mmsb"
    questions = root / "data" / "processed_questions"
    questions.mkdir(parents=True)
    item = {"Question": "Q?", "Rephrased Question": "R?", "Rephrased Question(SD)": "S?"}
    escape = "../../../../private/holiday"
    (questions / "01-Illegal_Activitiy.json").write_text(json.dumps({"0": item, escape: item}))
    write_image(root / "imgs" / "01-Illegal_Activitiy" / "SD" / "0.jpg")
    result = load_benchmark("mm-safetybench", root, variant="SD")
    assert [s.id for s in result.samples] == ["mm-safetybench:01-Illegal_Activitiy:0:SD"]
    [error] = result.errors
    assert error.row == f"id {escape}" and "leads out of the image folder" in error.message
