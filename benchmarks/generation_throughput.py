"""Batched local generation vs one prompt at a time, on the embedded default model, in one process.

Prints tokens/s for both paths, their ratio, peak memory, and whether every greedy answer is identical; writes
``benchmarks/results/generation_throughput.json``. Target: batched >= 8x one-at-a-time with identical outputs.

The comparison runs in float32 by default: identical greedy outputs test the padding and masking, and in bfloat16
a different batch shape changes the rounding enough to flip near-tied tokens (38/64 identical on an H100 in
bfloat16). Both paths are warmed up at their own shapes first, so lazy kernel loading is not timed.

    .venv/bin/python benchmarks/generation_throughput.py [--prompts 64] [--max-new-tokens 32] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak_memory  # noqa: E402

from visalign.models import load_vlm, user  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(os.environ.get("VISALIGN_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generation_throughput.json")
    args = parser.parse_args()

    vlm = load_vlm(args.model, dtype=args.dtype)
    device = str(vlm.device)
    with (BENCHMARKS / "xstest" / "xstest_prompts.csv").open() as handle:
        prompts = [row["prompt"] for row in csv.DictReader(handle)][: args.prompts]
    conversations = [[user(p)] for p in prompts]
    # warm-up at both paths' shapes: first-call allocations, lazy kernel loading, kernel selection
    vlm.generate(conversations, max_new_tokens=4, batch_size=args.batch_size)
    vlm.generate(conversations[:1], max_new_tokens=4)

    with peak_memory(device) as batched_memory:
        start = time.perf_counter()
        batched = vlm.generate(conversations, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        batched_s = time.perf_counter() - start
    with peak_memory(device) as single_memory:
        start = time.perf_counter()
        single = [vlm.generate([c], max_new_tokens=args.max_new_tokens)[0] for c in conversations]
        single_s = time.perf_counter() - start

    tokens = sum(len(vlm.tokenizer(answer).input_ids) + 1 for answer in single)  # +1: the end-of-turn token
    identical = sum(a == b for a, b in zip(batched, single, strict=True))
    result = {
        "benchmark": "generation_throughput",
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "model": args.model, "dtype": args.dtype, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "generated_tokens": tokens,
        "batched": {"seconds": batched_s, "tokens_per_s": tokens / batched_s, "peak_mib": batched_memory["peak_mib"]},
        "one_at_a_time": {"seconds": single_s, "tokens_per_s": tokens / single_s,
                          "peak_mib": single_memory["peak_mib"]},
        "speedup": single_s / batched_s,
        "identical_outputs": f"{identical}/{len(prompts)}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"batched:        {result['batched']['tokens_per_s']:8.1f} tokens/s  "
          f"peak {batched_memory['peak_mib']:.0f} MiB")
    print(f"one at a time:  {result['one_at_a_time']['tokens_per_s']:8.1f} tokens/s  "
          f"peak {single_memory['peak_mib']:.0f} MiB")
    print(f"speedup {result['speedup']:.2f}x; identical greedy outputs {result['identical_outputs']}")


if __name__ == "__main__":
    main()
