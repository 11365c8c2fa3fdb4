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
# Equivalence check tolerances by dtype: float32 on the CPU agrees to rounding; in bfloat16 every matmul rounds to
# 8 mantissa bits, and the batched step pads its rows and reduces in a different order than the per-sample loop.
CHECK_TOLERANCE = {torch.float32: {"loss_rel": 1e-5, "grad_rel": 1e-4},
                   torch.bfloat16: {"loss_rel": 1e-2, "grad_rel": 1e-1}}  # fmt: skip


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


def batched_step(vlm, rows, pixels: torch.Tensor, step: int, batch_size: int) -> torch.Tensor:
    """Our step on batch ``step`` of ``rows``: returns the loss; its gradient is left on ``pixels``."""
    chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
    loss, _ = dual_loss(vlm, chunk, pixels, l1=0.5, l2=0.5)
    loss.backward()
    return loss


def naive_step(vlm, batches, pixels: torch.Tensor, step: int, batch_size: int) -> list[torch.Tensor]:
    """The naive step on batch ``step``: each sample's loss share (they sum to the loss); gradients on ``pixels``."""
    shares = []
    for i in range(batch_size):
        batch = dict(batches[(step * batch_size + i) % len(batches)])
        batch.update(vlm._to_device(vlm.pixels_from_images([pixels])))
        share = vlm.loss(batch) / batch_size
        share.backward()
        shares.append(share)
    return shares


def batched_steps(vlm, rows, magic, batch_size: int, steps: int) -> float:
    """Seconds for ``steps`` of our step over consecutive batches of ``rows``."""
    began = time.perf_counter()
    for step in range(steps):
        batched_step(vlm, rows, magic.clone().requires_grad_(True), step, batch_size)
    sync(vlm.device)
    return time.perf_counter() - began


def naive_steps(vlm, batches, batch_size: int, steps: int, magic) -> float:
    """Seconds for the same number of samples, one at a time, vision tower per sample, gradients accumulated."""
    began = time.perf_counter()
    for step in range(steps):
        naive_step(vlm, batches, magic.clone().requires_grad_(True), step, batch_size)
    sync(vlm.device)
    return time.perf_counter() - began


def check_first_batch(vlm, rows, batches, magic, batch_size: int, tolerance: dict) -> dict:
    """Loss and pixel gradient of both steps on the first batch, from the same image; ``passed`` within tolerance."""
    ours_pixels = magic.clone().requires_grad_(True)
    ours_loss = float(batched_step(vlm, rows, ours_pixels, 0, batch_size).detach())
    naive_pixels = magic.clone().requires_grad_(True)
    naive_loss = sum(float(share.detach()) for share in naive_step(vlm, batches, naive_pixels, 0, batch_size))
    ours_grad, naive_grad = ours_pixels.grad.double().flatten(), naive_pixels.grad.double().flatten()
    naive_norm = float(naive_grad.norm())
    loss_rel = abs(ours_loss - naive_loss) / max(abs(naive_loss), 1e-30)
    grad_rel = float((ours_grad - naive_grad).norm()) / max(naive_norm, 1e-30)
    summary = (f"loss {ours_loss:.6f} vs naive {naive_loss:.6f} (rel diff {loss_rel:.2e}, tolerance "
               f"{tolerance['loss_rel']:.0e}); pixel gradient norm {float(ours_grad.norm()):.6g} vs {naive_norm:.6g}, "
               f"rel L2 diff {grad_rel:.2e} (tolerance {tolerance['grad_rel']:.0e})")  # fmt: skip
    return {"what": f"one step on the first batch ({batch_size} rows) from the same image, before any timing",
            "ours_loss": ours_loss, "naive_loss": naive_loss, "loss_rel_diff": loss_rel,
            "ours_pixel_grad_norm": float(ours_grad.norm()), "naive_pixel_grad_norm": naive_norm,
            "pixel_grad_rel_l2_diff": grad_rel,
            "tolerance": {"loss_rel_diff": tolerance["loss_rel"], "pixel_grad_rel_l2_diff": tolerance["grad_rel"]},
            "passed": loss_rel <= tolerance["loss_rel"] and grad_rel <= tolerance["grad_rel"], "summary": summary}


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
    if batch_size % 2:  # dual_loss's 0.5/0.5 halves equal the loop's plain mean only on a half-harmful batch
        raise SystemExit(f"magic_throughput.py: --batch-size {batch_size} is odd; use an even batch size so both "
                         "steps compute the same objective")
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
    batches = [vlm.training_inputs([c]) for c in conversations]  # tokenised outside the timing, as ours is
    out = args.out or (RESULTS_TINY if tiny else RESULTS)

    check = check_first_batch(vlm, rows, batches, magic, batch_size, CHECK_TOLERANCE[dtype])
    if not check["passed"]:
        # beside the result file, not over it: a recorded result stays until a run that passes replaces it
        failed_to = out.with_name(f"{out.stem}_check_failed.json")
        failed_to.parent.mkdir(parents=True, exist_ok=True)
        failed_to.write_text(json.dumps({"benchmark": "magic_throughput", "equivalence_check": check}, indent=2) + "\n")
        raise SystemExit(f"magic_throughput.py: equivalence check failed, batched step vs per-sample loop on the "
                         f"first batch: {check['summary']}; not timed, figures in {failed_to}")
    print(f"check batched vs per-sample loop: {check['summary']}: ok", flush=True)

    batched_steps(vlm, rows, magic, batch_size, 1)  # warm-up (kernels, allocator)
    reset_peak(dev)
    ours_s = batched_steps(vlm, rows, magic, batch_size, steps)
    ours_peak = peak_memory_gib(dev)
    naive_steps(vlm, batches, 2, 1, magic)  # warm-up
    reset_peak(dev)
    naive_s = naive_steps(vlm, batches, batch_size, steps, magic)
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
        "equivalence_check": check,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": {name: metadata.version(name) for name in ("torch", "transformers")},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
