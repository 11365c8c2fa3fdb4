"""Benchmark loaders' image checks: the threaded check against the one-at-a-time decode it replaced.

Fast path: ``visalign.images.image_problems``. It decodes every distinct image in a thread pool
(``visalign.images.map_images``, ``min(8, os.cpu_count(), N)`` threads) and returns each one's verdict: the one-line
error ``load_image`` would raise, or None. The benchmark loaders call it through
``evaluation.benchmarks._io.rows_with_images``.

Baseline: what the loaders did before commit 3849068, ``evaluation.benchmarks._io.image_problem`` called on one
path after another.

Images: N paths in a temporary folder. They are hard links, taken in turn, to a pool of real-format files: the
MOSSBench and FigStep images of the shared benchmark folder (PNG, 700x393 to 2833x1594; ``$VISALIGN_BENCHMARKS``
or ``../shared/benchmarks``) and ``--jpegs`` generated 1600x1200 photo-like JPEGs with an EXIF orientation tag.
Without the shared folder, the pool is the JPEGs alone. Every ``--bad-every``-th path is a bad file instead: in
turn a truncated PNG, a text file named ``.png``, and a missing file. Pillow keeps no cache, so each path is decoded
in full. The parent reads every file once first, so both paths find them in the page cache. (Two of the shared
MOSSBench files, 203.png and 208.png, are not images Pillow can read: their links are bad verdicts too.)

Each path runs in its own spawned process (see ``_measure.py``): seconds, and the rise of the resident set over
the process's RSS just before the path starts (peak ``VmHWM`` minus ``VmRSS``). The two must give the same verdict,
word for word, for every path; if not, the script exits 1.

    .venv/bin/python benchmarks/image_checks.py                  # 2,000 images, about 2 minutes on 2 cores
    .venv/bin/python benchmarks/image_checks.py --images 5000 --json benchmarks/results/image_checks.json

On a machine with C cores the ratio can reach about min(8, C): Pillow releases the GIL while it decodes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from _measure import environment, in_child, write_json
from PIL import Image

from visalign.evaluation.benchmarks._io import image_problem
from visalign.images import image_problems

SHARED_FOLDERS = ("mossbench/images", "figstep/images")


def shared_images() -> list[Path]:
    root = Path(os.environ.get("VISALIGN_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
    suffixes = {".png", ".jpg", ".jpeg", ".webp"}
    return sorted(p for folder in SHARED_FOLDERS for p in (root / folder).rglob("*") if p.suffix.lower() in suffixes)


def make_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` 1600x1200 JPEGs of smooth gradients plus noise (photo-like sizes, ~0.5 MB), EXIF-rotated."""
    paths = []
    y, x = np.mgrid[0:1200, 0:1600]
    for k in range(count):
        rng = np.random.default_rng(k)
        base = np.stack([(x * (k + 1) // 13) % 256, (y * (k + 2) // 9) % 256, ((x + y) // 11) % 256], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees when shown
        path = folder / f"photo-{k}.jpg"
        Image.fromarray(pixels).save(path, quality=90, exif=exif)
        paths.append(path)
    return paths


def make_paths(folder: Path, pool: list[Path], n: int, bad_every: int) -> list[Path]:
    """``n`` distinct paths under ``folder``: hard links to ``pool`` in turn, every ``bad_every``-th one bad."""
    good = pool[0].read_bytes()
    paths = []
    for i in range(n):
        source = pool[i % len(pool)]
        path = folder / f"{i:06d}{source.suffix.lower()}"
        if bad_every and i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 3
            path = path.with_suffix(".png")
            if kind == 0:
                path.write_bytes(good[: len(good) // 2])  # truncated
            elif kind == 1:
                path.write_text("not an image\n")
            # kind 2: missing, nothing written
        else:
            try:
                os.link(source, path)
            except OSError:  # another file system, or no hard links
                shutil.copyfile(source, path)
        paths.append(path)
    return paths


def threaded(paths: list[Path]) -> list[str | None]:
    problems = image_problems(paths)
    return [problems[path] for path in paths]


def one_at_a_time(paths: list[Path]) -> list[str | None]:
    return [image_problem(path) for path in paths]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="paths to check (default 2000)")
    parser.add_argument("--jpegs", type=int, default=8, help="generated JPEGs in the pool (default 8)")
    parser.add_argument("--bad-every", type=int, default=50, help="every K-th path is bad (default 50; 0: none)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    report = environment(["Pillow", "numpy", "pyarrow", "datasets", "torch", "visalign"])
    work = Path(tempfile.mkdtemp(prefix="image_checks_", dir=args.workdir))
    try:
        shared = shared_images()
        pool = shared + make_jpegs(work, args.jpegs)
        paths = make_paths(work, pool, args.images, args.bad_every)
        on_disk = [p for p in paths if p.exists()]
        megabytes = sum(len(p.read_bytes()) for p in on_disk) / 1e6  # also warms the page cache
        threads = min(8, os.cpu_count() or 1, len(paths))
        print(
            f"{len(paths)} paths ({len(paths) - len(on_disk)} missing), {megabytes:.0f} MB on disk; pool of "
            f"{len(shared)} shared images and {args.jpegs} JPEGs; {threads} threads; load {os.getloadavg()[0]:.2f}"
        )
        results = {"threaded": in_child(threaded, paths), "one_at_a_time": in_child(one_at_a_time, paths)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    verdicts = {name: r.pop("value") for name, r in results.items()}
    for name, r in results.items():
        bad = sum(v is not None for v in verdicts[name])
        r["images_per_s"] = len(paths) / r["seconds"]
        r["bad_verdicts"] = bad
        print(
            f"{name:>13}: {r['seconds']:6.2f} s ({1000 * r['seconds'] / len(paths):.1f} ms an image; CPU "
            f"{r['cpu_seconds']:.1f} s), peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB (+{r['peak_increase_mib']:.0f} MiB over {r['rss_before_mib']:.0f} MiB), "
            f"{bad} bad"
        )
    fast, base = results["threaded"], results["one_at_a_time"]
    differ = [str(p) for p, a, b in zip(paths, verdicts["threaded"], verdicts["one_at_a_time"], strict=True) if a != b]
    ratio = base["seconds"] / fast["seconds"]
    print(f"speedup: one at a time / threaded = {ratio:.2f}x")
    print("same verdict for every path" if not differ else f"MISMATCH on {len(differ)} paths, e.g. {differ[:3]}")
    report.update(
        benchmark="image_checks",
        images=len(paths),
        megabytes_on_disk=round(megabytes, 1),
        pool={"shared_images": len(shared), "generated_jpegs": args.jpegs},
        bad_every=args.bad_every,
        threads=threads,
        threaded=fast,
        one_at_a_time=base,
        speedup=ratio,
        same_verdicts=not differ,
        differing_paths=differ[:20],
    )
    if args.json:
        write_json(args.json, report)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
