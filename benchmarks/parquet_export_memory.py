"""VSFA parquet export: the streamed writer against the one-table baseline it replaced, by time and peak memory.

Fast path: ``visalign.vsfa.export._write_parquet``, the export's own step. It writes with pyarrow's
``ParquetWriter`` under the ``datasets`` features schema, one row group of ``PARQUET_ROWS_PER_GROUP`` rows at a
time, and reads only that group's image files. Its time includes an ``fsync`` of the file, which the baseline
never did.

Baseline: the code it replaced (commit 3849068), copied below. It reads every image's bytes into one dict,
builds ``datasets.Dataset.from_dict(rows, features=...)`` and calls ``to_parquet``.

Data: N ShareGPT rows with one image each. The images are ~1.9 MB PNGs (800x800 RGB noise, which PNG cannot
compress; gpt-image-1's 1024x1024 PNGs run 1.5-3 MB). Only ``--distinct`` noise images are encoded (PNG-encoding
noise is slow); each of the N files is one of them plus a text chunk naming its row, so no two files are equal,
as in a real run, whose images are named by the SHA-256 of their bytes. With equal files, pyarrow's dictionary
encoding would store one copy per row group and flatter the streamed writer.

Memory: each path runs in its own spawned process (see ``_measure.py``). Its figure is the rise of the resident
set over the process's RSS just before the path starts: peak ``VmHWM`` minus ``VmRSS``, after imports. RSS
includes pyarrow's memory pool and the image bytes read in, which tracemalloc would miss. The page cache is
warmed before either path runs (the parent hashes every file), so neither pays the first read from disk.

Check: both files must hold the same rows, in order: ids, messages, image paths, and the SHA-256 of each
embedded image equal to its source file's. Both must carry the features schema (checked by
``datasets.Features.from_arrow_schema``), and ``datasets.load_dataset("parquet", streaming=True)`` must decode the
first row's image from each. Any mismatch exits 1.

    python benchmarks/parquet_export_memory.py               # 400 images, under a minute on 2 cores
    python benchmarks/parquet_export_memory.py --images 800 --json benchmarks/results/parquet_export_memory.json

The baseline's peak grows with N, about 6x the PNG bytes (8.6 GiB at 800 images); the streamed writer's stays near
0.9 GiB at 64 rows a group. Raise ``--images`` only as far as the machine's free memory allows the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _measure import environment, in_child, write_json
from datasets import Dataset
from PIL import Image

from visalign.vsfa.export import PARQUET_FILE, PARQUET_ROWS_PER_GROUP, _parquet_features, _write_parquet


def make_run(out: Path, n: int, distinct: int, side: int) -> list[dict]:
    """Write ``n`` different PNGs under ``out/images`` (see the module docstring); return the ShareGPT rows."""
    (out / "images").mkdir(parents=True)
    masters = []
    for k in range(distinct):
        pixels = np.random.default_rng(k).integers(0, 256, (side, side, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        masters.append(buffer.getvalue())
    rows = []
    for i in range(n):
        name = f"images/{i:06d}.png"
        master = masters[i % distinct]
        text = b"tEXt" + b"visalign-benchmark\0" + str(i).encode()
        chunk = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text))
        (out / name).write_bytes(master[:-12] + chunk + master[-12:])  # a text chunk before IEND
        rows.append(
            {
                "id": f"2401.{i:05d}:s0",
                "messages": [
                    {"role": "user", "content": "<image>What objects are on the desk?"},
                    {"role": "assistant", "content": f"A lamp, a notebook and {i % 7 + 1} pencils."},
                ],
                "images": [name],
            }
        )
    return rows


def streamed(out: Path, sharegpt: list[dict]) -> str:
    """The fast path: the export's own streamed writer."""
    _write_parquet(out, sharegpt)
    return arrow_peak(out / PARQUET_FILE)


def one_table(out: Path, sharegpt: list[dict], target: Path) -> str:
    """The baseline: the export's parquet step before commit 3849068 (minus its rename into place)."""
    rows = {
        "id": [item["id"] for item in sharegpt],
        "messages": [item["messages"] for item in sharegpt],
        "images": [
            [{"bytes": (out / path).read_bytes(), "path": path} for path in item["images"]] for item in sharegpt
        ],
    }
    datasets.disable_progress_bars()
    Dataset.from_dict(rows, features=_parquet_features()).to_parquet(str(target))
    return arrow_peak(target)


def arrow_peak(target: Path) -> dict:
    """What a path returns: its file, and the peak of pyarrow's memory pool in its process (part of the RSS)."""
    return {"file": str(target), "arrow_pool_peak_mib": pa.default_memory_pool().max_memory() / 2**20}


def expected_rows(out: Path, sharegpt: list[dict]) -> list[tuple]:
    """What each file must hold, row by row, with each image as the SHA-256 of its source file's bytes."""
    digests: dict[str, str] = {}
    for item in sharegpt:
        for path in item["images"]:
            if path not in digests:
                digests[path] = hashlib.sha256((out / path).read_bytes()).hexdigest()
    return [(item["id"], item["messages"], [(p, digests[p]) for p in item["images"]]) for item in sharegpt]


def stored_rows(target: Path) -> list[tuple]:
    """The rows of a parquet file, images as (path, SHA-256 of the embedded bytes); read 16 rows at a time."""
    rows = []
    with pq.ParquetFile(target) as parquet:
        for batch in parquet.iter_batches(batch_size=16):
            for row in batch.to_pylist():
                images = [(image["path"], hashlib.sha256(image["bytes"]).hexdigest()) for image in row["images"]]
                rows.append((row["id"], row["messages"], images))
    return rows


def check(target: Path, wanted: list[tuple], side: int) -> list[str]:
    """Why ``target`` is not the export of ``wanted`` (empty when it is)."""
    problems = []
    schema = pq.read_schema(target)
    if datasets.Features.from_arrow_schema(schema) != _parquet_features():
        problems.append(f"{target.name}: features {datasets.Features.from_arrow_schema(schema)}")
    got = stored_rows(target)
    if len(got) != len(wanted):
        problems.append(f"{target.name}: {len(got)} rows, expected {len(wanted)}")
    differing = [i for i, (g, w) in enumerate(zip(got, wanted, strict=False)) if g != w]
    problems += [f"{target.name}: row {i} ({wanted[i][0]}) differs" for i in differing[:5]]
    first = next(iter(datasets.load_dataset("parquet", data_files=str(target), split="train", streaming=True)))
    image = first["images"][0]
    if not isinstance(image, Image.Image) or image.size != (side, side):
        problems.append(f"{target.name}: datasets decodes the first image as {image!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="rows, one ~1.9 MB PNG each (default 400)")
    parser.add_argument("--distinct", type=int, default=4, help="noise images encoded, used in turn (default 4)")
    parser.add_argument("--side", type=int, default=800, help="image width and height in pixels (default 800)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    report = environment(["pyarrow", "datasets", "Pillow", "numpy", "torch", "visalign"])
    work = Path(tempfile.mkdtemp(prefix="parquet_export_", dir=args.workdir))
    try:
        out = work / "dataset"
        sharegpt = make_run(out, args.images, args.distinct, args.side)
        png_mb = sum((out / p).stat().st_size for item in sharegpt for p in item["images"]) / 1e6
        wanted = expected_rows(out, sharegpt)  # also warms the page cache for both paths
        print(
            f"{args.images} rows, {png_mb:.0f} MB of PNG ({png_mb / args.images:.2f} MB each), "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
        )

        baseline_file = work / "baseline.parquet"
        results = {
            "streamed": in_child(streamed, out, sharegpt),
            "one_table": in_child(one_table, out, sharegpt, baseline_file),
        }
        problems = check(out / PARQUET_FILE, wanted, args.side) + check(baseline_file, wanted, args.side)
        for name, r in results.items():
            value = r.pop("value")
            r["file_mb"] = Path(value["file"]).stat().st_size / 1e6
            r["arrow_pool_peak_mib"] = value["arrow_pool_peak_mib"]
            print(
                f"{name:>9}: {r['seconds']:6.2f} s (CPU {r['cpu_seconds']:.1f} s), "
                f"peak RSS {r['peak_rss_mib']:7.0f} MiB "
                f"(+{r['peak_increase_mib']:.0f} MiB over {r['rss_before_mib']:.0f} MiB; pyarrow pool peak "
                f"{r['arrow_pool_peak_mib']:.0f} MiB), file {r['file_mb']:.0f} MB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fast, base = results["streamed"], results["one_table"]
    ratios = {
        "peak_increase_baseline_over_streamed": base["peak_increase_mib"] / fast["peak_increase_mib"],
        "seconds_baseline_over_streamed": base["seconds"] / fast["seconds"],
    }
    print(
        f"peak memory increase: baseline / streamed = {ratios['peak_increase_baseline_over_streamed']:.1f}x; "
        f"time: baseline / streamed = {ratios['seconds_baseline_over_streamed']:.2f}x"
    )
    print("files identical row for row" if not problems else "MISMATCH:\n  " + "\n  ".join(problems))
    report.update(
        benchmark="parquet_export_memory",
        rows=args.images,
        png_mb=round(png_mb, 1),
        image_side=args.side,
        distinct_images=args.distinct,
        rows_per_group=PARQUET_ROWS_PER_GROUP,
        streamed=fast,
        one_table=base,
        ratios=ratios,
        identical_rows=not problems,
        problems=problems,
    )
    if args.json:
        write_json(args.json, report)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
