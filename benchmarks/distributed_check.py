"""Does ``vsfa train`` under a shipped accelerate config train the same adapter as a plain single-process run?

FSDP and DeepSpeed cannot run on the CPU (accelerate enables them only for GPU backends), so the sharded code
paths of the trainer (``Accelerator.save_state`` checkpoints, the adapter saved from a gathered state dict) are
checked here, on a GPU, with one process: a tiny random Qwen2.5-VL checkpoint, 8 solid-colour images, 4 steps.

1. ``python -m visalign vsfa train`` (the reference);
2. ``accelerate launch --config_file CONFIG --num_processes 1 -m visalign vsfa train`` with the same job config;
3. the launched run's checkpoints after step 2 and its adapter are deleted and the command is run again, so it
   resumes from the checkpoint the launcher's path wrote and redoes steps 3 and 4.

It prints and writes (``--out``) both loss curves, the largest adapter difference and the checkpoint's files;
it exits 1 when the curves or the adapters differ. ``--config configs/accelerate/ddp.yaml --cpu`` runs the same
check on the CPU (no sharding) to test the script itself.

    python benchmarks/distributed_check.py --out results/distributed_check_fsdp.json        # GPU, FSDP
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from visalign.models.random_checkpoints import write_random_checkpoint
from visalign.vsfa.export import llava_entry

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (230, 210, 40)}


def write_job(work: Path) -> Path:
    """A tiny checkpoint, 8 images with a question each, and the job config; return the config's path."""
    checkpoint = write_random_checkpoint("qwen2_5_vl", work / "checkpoint")
    (work / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (name, rgb) in enumerate(list(COLOURS.items()) * 2):
        Image.new("RGB", (84, 56), rgb).save(work / "images" / f"{i}.png")  # a size the tiny processor keeps
        pairs = [{"question": "What colour is this picture?", "answer": f"It is {name}."}]
        records.append(llava_entry({"id": f"c{i}", "image": f"images/{i}.png", "pairs": pairs}))
    (work / "llava.json").write_text(json.dumps(records))
    job = {"name": "distributed-check", "model": str(checkpoint), "data": {"path": str(work / "llava.json")},
           "seed": 5, "epochs": 1, "batch_size": 2, "grad_accum": 1, "checkpoint_every": 1, "keep_checkpoints": 4,
           "lora": {"rank": 4, "alpha": 8}, "optim": {"lr": 0.02, "warmup_steps": 0, "schedule": "constant"},
           "logging": {"progress": False, "tensorboard": False}}  # fmt: skip
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(job))
    return config


def run(command: list[str], log: Path) -> int:
    """Run ``command``, its output to ``log``; return the exit status."""
    with log.open("w") as handle:
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def losses(run_dir: Path) -> list[float]:
    """The loss of each logged step of a run."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def adapter_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two saved adapters' tensors (inf when their keys differ)."""
    first, second = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    if first.keys() != second.keys():
        return float("inf")
    return max(float((first[k].float() - second[k].float()).abs().max()) for k in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/accelerate/fsdp.yaml", help="the accelerate config to check")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a test of this script)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="distributed-check-"))
    job = write_job(work)
    train = ["-m", "visalign", "vsfa", "train", "-c", str(job)]
    plain_status = run([sys.executable, *train, "-o", str(work / "plain")], work / "plain.log")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / args.config),
              "--num_processes", "1", *(["--cpu"] if args.cpu else [])]  # fmt: skip
    first = run([*launch, *train, "-o", str(work / "launched")], work / "launched-1.log")
    # Back to step 2: the re-run must load the checkpoint the launcher's path wrote and redo the rest of the curve.
    for later in [*(work / "launched" / "checkpoints").glob("step-0000000[34]"), work / "launched" / "adapter"]:
        shutil.rmtree(later, ignore_errors=True)
    launched_status = run([*launch, *train, "-o", str(work / "launched")], work / "launched-2.log")

    result = {"config": args.config, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "work": str(work), "plain_exit": plain_status,
              "first_launch_exit": first, "launched_exit": launched_status}  # fmt: skip
    if plain_status == first == launched_status == 0:
        result["plain_losses"] = losses(work / "plain")
        result["launched_losses"] = losses(work / "launched")
        result["adapter_max_abs_difference"] = adapter_difference(work / "plain" / "adapter",
                                                                  work / "launched" / "adapter")  # fmt: skip
        last = sorted((work / "launched" / "checkpoints").glob("step-*"))[-1]
        result["last_checkpoint_files"] = sorted(str(p.relative_to(last)) for p in last.rglob("*") if p.is_file())
        result["resumed"] = "resumed at step 2" in (work / "launched-2.log").read_text()
        plain, launched = result["plain_losses"], result["launched_losses"]
        curves_match = len(plain) == len(launched) and all(
            abs(a - b) <= args.tolerance for a, b in zip(plain, launched, strict=True))
        result["same"] = curves_match and result["resumed"] and result["adapter_max_abs_difference"] <= args.tolerance
    else:
        result["same"] = False
        result["log_tail"] = {p.name: p.read_text()[-3000:] for p in sorted(work.glob("*.log"))}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    raise SystemExit(0 if result["same"] else 1)


if __name__ == "__main__":
    main()
