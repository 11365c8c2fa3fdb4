"""Magic Image step throughput: our batched step vs a naive per-sample loop, in one process.

Ours (``visalign.magic.objective.dual_loss``): a mixed batch of cached token rows, the magic image encoded once and
shared by every row, only the target positions projected to the vocabulary, one backward pass. Naive: one sample
at a time, the vision tower run for each sample, the adapter's plain ``loss`` over the whole target, gradients
accumulated on the pixels. Both see the same rows (tokenised once, outside the timing) and the same image.

GPU (the reported figure): a random Qwen2.5-VL-7B-shaped model in bfloat16, a 448 px magic image (256 image
tokens), synthetic requests of 56 words (after a "Request N:" prefix) with 28-word targets. The recorded run's
rows held 652 tokens on average, 116 of them target tokens (``sequence_tokens_mean``, ``target_tokens_mean`` in the
result file): longer rows than the design notes' naive step (96 text tokens, 32 target tokens), so the two naive
figures are not the same workload. ``--tiny``: the tiny random Qwen2.5-VL on CPU, a smoke test of the same code
path. Writes benchmarks/results/magic_throughput.json (GPU) or magic_throughput_tiny.json (``--tiny``); ``--out``
to change.

    .venv/bin/python benchmarks/magic_throughput.py            # GPU
    .venv/bin/python benchmarks/magic_throughput.py --tiny     # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch
from bench_checkpoints import cached_random_checkpoint

from visalign.magic.data import Example
from visalign.magic.objective import build_rows, dual_loss
from visalign.magic.placement import attach, resolve_placement
from visalign.models import IGNORE_INDEX, load_vlm

RESULTS = Path(__file__).resolve().parent / "results" / "magic_throughput.json"
RESULTS_TINY = RESULTS.with_name("magic_throughput_tiny.json")
WORDS = ("safety", "image", "model", "request", "answer", "policy", "vision", "language", "token", "prompt")


def make_examples(count: int, prompt_words: int, target_words: int) -> list[Example]:
    """Distinct synthetic requests, half harmful (refusal target) and half benign (answer target)."""
    examples = []
    for i in range(count):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(prompt_words)]
        target = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(target_words))
        kind = "harmful" if i % 2 == 0 else "benign"
        examples.append(Example(f"s{i}", kind, f"Request {i}: " + " ".join(words), [], target=target))
    return examples


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_steps(vlm, rows, magic, batch_size: int, steps: int) -> float:
    """Seconds for ``steps`` of our step over consecutive batches of ``rows``."""
    began = time.perf_counter()
    for step in range(steps):
        chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
        pixels = magic.clone().requires_grad_(True)
        loss, _ = dual_loss(vlm, chunk, pixels, l1=0.5, l2=0.5)
        loss.backward()
    sync(vlm.device)
    return time.perf_counter() - began


def naive_steps(vlm, conversations, batch_size: int, steps: int, magic) -> float:
    """Seconds for the same number of samples, one at a time, vision tower per sample, gradients accumulated."""
    batches = [vlm.training_inputs([c]) for c in conversations]  # tokenised outside the timing, as ours is
    began = time.perf_counter()
    for step in range(steps):
        pixels = magic.clone().requires_grad_(True)
        for i in range(batch_size):
            batch = dict(batches[(step * batch_size + i) % len(batches)])
            batch.update(vlm._to_device(vlm.pixels_from_images([pixels])))
            (vlm.loss(batch) / batch_size).backward()
    sync(vlm.device)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Qwen2.5-VL on CPU (smoke test)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="result file (default by mode)")
    args = parser.parse_args()
    tiny = args.tiny
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no GPU: run with --tiny for the CPU smoke test")
    batch_size = args.batch_size or (4 if tiny else 16)
    steps = args.steps or (3 if tiny else 5)
    side = 56 if tiny else 448
    prompt_words, target_words = (8, 8) if tiny else (56, 28)
    dtype = torch.float32 if tiny else torch.bfloat16
    device = "cpu" if tiny else "cuda"
    path = cached_random_checkpoint("qwen2_5_vl", "tiny" if tiny else "7b", dtype)
    vlm = load_vlm(str(path), dtype=dtype, device=device, attn_implementation="sdpa")
    for parameter in vlm.model.parameters():
        parameter.requires_grad_(False)
    placement = resolve_placement(vlm.family)
    examples = make_examples(batch_size * 2, prompt_words, target_words)
    first_k = 10_000  # the whole target: both sides train on the same tokens
    rows = [r for own in build_rows(vlm, examples, placement=placement, size=(side, side), first_k=first_k)
            for r in own]
    magic = torch.ones(3, side, side, device=vlm.device)
    from visalign.models import assistant, user

    conversations = [attach([user(e.prompt), assistant(e.target)], magic, placement) for e in examples]
    text_tokens = [int(r.batch["input_ids"].shape[1]) for r in rows]
    target_tokens = [int((r.batch["labels"] != IGNORE_INDEX).sum()) for r in rows]
    dev = vlm.device

    batched_steps(vlm, rows, magic, batch_size, 1)  # warm-up (kernels, allocator)
    reset_peak(dev)
    ours_s = batched_steps(vlm, rows, magic, batch_size, steps)
    ours_peak = peak_memory_gib(dev)
    naive_steps(vlm, conversations, 2, 1, magic)  # warm-up
    reset_peak(dev)
    naive_s = naive_steps(vlm, conversations, batch_size, steps, magic)
    naive_peak = peak_memory_gib(dev)

    samples = batch_size * steps
    result = {
        "benchmark": "magic_throughput",
        "mode": "tiny-cpu" if tiny else "gpu-7b",
        "model": "random qwen2_5_vl " + ("tiny" if tiny else "7b shape"),
        "dtype": str(dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name(0) if not tiny else f"cpu ({platform.processor() or platform.machine()})",
        "image_px": side,
        "sequence_tokens_mean": round(sum(text_tokens) / len(text_tokens), 1),
        "target_tokens_mean": round(sum(target_tokens) / len(target_tokens), 1),
        "batch_size": batch_size,
        "steps": steps,
        "samples": samples,
        "ours": {"seconds": round(ours_s, 3), "samples_per_s": round(samples / ours_s, 3),
                 "peak_gpu_memory_gib": ours_peak},
        "naive": {"seconds": round(naive_s, 3), "samples_per_s": round(samples / naive_s, 3),
                  "peak_gpu_memory_gib": naive_peak},
        "speedup": round(naive_s / ours_s, 2),
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {name: metadata.version(name) for name in ("torch", "transformers")},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = args.out or (RESULTS_TINY if tiny else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
