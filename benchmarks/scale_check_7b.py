"""Scale check: a random-weight 7B/8B-shaped model of each family goes once through every adapter operation.

For each family: write the checkpoint (published shapes, bfloat16; drawn on the GPU) to disk, load it back
through ``load_vlm`` (``from_pretrained``), build chat inputs with an image, generate, compute the masked loss
and push a gradient to the image through the differentiable pixels. Prints and records
the time of each step and the peak memory.

    python benchmarks/scale_check_7b.py [--families qwen2_5_vl qwen3_vl llava llava_next] [--shape 7b]

On a CPU, ``--shape tiny`` runs the same path in seconds (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_checkpoints import cached_random_checkpoint  # noqa: E402
from peak_memory import peak_memory  # noqa: E402

from visalign.models import assistant, load_vlm, user  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIDE = {"qwen2_5_vl": 448, "qwen3_vl": 448, "llava": 336, "llava_next": 336}


def check_family(family: str, shape: str, device: str, keep: bool) -> dict:
    """Run one family through write -> load -> chat inputs -> generate -> loss -> pixel gradient."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    dtype = torch.bfloat16 if shape == "7b" else torch.float32
    path = cached_random_checkpoint(family, shape, dtype)
    timings["write_s"] = time.perf_counter() - start  # ~0 when the checkpoint was already cached
    with peak_memory(device) as memory:
        start = time.perf_counter()
        vlm = load_vlm(str(path), dtype=dtype, device=device, attn_implementation="sdpa")
        timings["load_s"] = time.perf_counter() - start
        side = IMAGE_SIDE[family] if shape == "7b" else {"qwen2_5_vl": 56, "qwen3_vl": 64}.get(family, 32)
        image = torch.rand(3, side, side, device=device, requires_grad=True)
        start = time.perf_counter()
        inputs = vlm.chat_inputs([[user("Describe the image in detail.", image.detach())]])
        timings["chat_inputs_s"] = time.perf_counter() - start
        start = time.perf_counter()
        answer = vlm.generate([[user("Describe the image in detail.", image.detach())]], max_new_tokens=16)[0]
        timings["generate_16_tokens_s"] = time.perf_counter() - start
        start = time.perf_counter()
        batch = vlm.training_inputs([[user("What is shown?", image), assistant("A picture of random noise.")]])
        loss = vlm.loss(batch)
        loss.backward()
        timings["loss_and_pixel_grad_s"] = time.perf_counter() - start
    params = sum(p.numel() for p in vlm.model.parameters())
    result = {
        "family": family, "parameters": params, "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "image_tokens": int((inputs["input_ids"] == vlm.model.config.image_token_id).sum()),
        "loss": loss.item(), "pixel_grad_abs_sum": image.grad.abs().sum().item(),
        "answer_chars": len(answer), "peak_mib": memory["peak_mib"], **timings,
    }
    del vlm, batch, loss
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(IMAGE_SIDE))
    parser.add_argument("--shape", default="7b", choices=["7b", "tiny"])
    parser.add_argument("--keep", nargs="*", default=["qwen2_5_vl"],
                        help="families whose checkpoints stay cached under $VISALIGN_HOME/bench for the other "
                             "benchmarks (each 7B one is ~16 GB); the others are deleted after their check")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale_check_7b.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    for family in args.families:
        result = check_family(family, args.shape, device, keep=family in args.keep)
        results.append(result)
        print(json.dumps(result), flush=True)
    report = {
        "benchmark": "scale_check_7b", "command": "python " + " ".join(sys.argv), "shape": args.shape,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "families": results,
    }
    if args.shape == "7b":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
