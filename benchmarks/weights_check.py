"""The trainer's check after each optimiser step that the weights are finite: foreach norms against per-tensor isfinite.

Fast path: ``visalign.vsfa.training.trainer._weights_finite`` itself. It groups the optimiser's parameters by
device and dtype, takes ``torch._foreach_norm`` of each group (one multi-tensor launch per group on a GPU, the
op torch's own ``clip_grad_norm_`` uses) and checks the stacked norms for finiteness, then sums the verdict over
the processes.

Baseline: the check it replaced (commit 5641336), copied below as ``per_tensor_check``: one
``torch.isfinite(p).all()`` per tensor (two kernels and a bool tensor the size of the weight each), stacked, then
the same sum over processes.

Parameters: the LoRA adapters (r=16) of Qwen2.5-7B's language model: 28 layers x (q, k, v, o, gate, up, down),
hidden 3584, intermediate 18944, k/v dim 512; A is (16, in), B is (out, 16); 392 tensors, 40.4 M values,
float32 (seeded normal values, std 0.02). Both checks run through a real ``accelerate.Accelerator`` (one process,
so its reduce is a no-op) and end in ``.item()``, as in the training step.

Each path runs in its own spawned process (see ``_measure.py``), builds the parameters, runs ``--warmup`` calls,
then times ``--calls`` calls. Peak memory is what the calls add over the memory held before them: on a GPU,
``torch.cuda.max_memory_allocated`` after a reset; on a CPU, the resident set's high-water mark (``VmHWM`` after a
``clear_refs`` reset) minus ``VmRSS``. Both must give the same verdict on the clean list and on the list with one
inf value (``--inf-at``); the script exits 1 if not. It also prints both verdicts on weights of 1e30 (finite, but
their float32 norm overflows), where the two are meant to differ.

    .venv/bin/python benchmarks/weights_check.py                  # CPU, about 30 s on 2 shared cores
    python benchmarks/weights_check.py --device cuda --calls 500   # the GPU stage of benchmarks/gpu_session.sh
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from _measure import environment, in_child, write_json
from accelerate import Accelerator

from visalign.vsfa.training.trainer import _weights_finite

HIDDEN, INTERMEDIATE, KV_DIM, LAYERS, RANK = 3584, 18944, 512, 28, 16
# (in, out) of each LoRA-wrapped linear of one decoder layer
LINEARS = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, KV_DIM), "v": (HIDDEN, KV_DIM), "o": (HIDDEN, HIDDEN),
           "gate": (HIDDEN, INTERMEDIATE), "up": (HIDDEN, INTERMEDIATE), "down": (INTERMEDIATE, HIDDEN)}  # fmt: skip


def lora_params(device: str) -> list[torch.Tensor]:
    """The 392 LoRA tensors of Qwen2.5-7B's language model at r=16, float32, seeded."""
    generator = torch.Generator().manual_seed(0)
    params = []
    for _ in range(LAYERS):
        for fan_in, fan_out in LINEARS.values():
            for shape in ((RANK, fan_in), (fan_out, RANK)):
                params.append((torch.randn(shape, generator=generator) * 0.02).to(device))
    return params


def per_tensor_check(optimizer, accelerator: Accelerator) -> bool:
    """The baseline: ``trainer._weights_finite`` as it was at commit 5641336."""
    checks = [torch.isfinite(p.detach()).all() for group in optimizer.param_groups for p in group["params"]
              if p.numel()]  # fmt: skip
    bad = (~torch.stack(checks).all()).float() if checks else torch.tensor(0.0)
    return accelerator.reduce(bad.to(accelerator.device), reduction="sum").item() == 0


CHECKS = {"foreach": _weights_finite, "per_tensor": per_tensor_check}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_path(name: str, device: str, calls: int, warmup: int, inf_at: int) -> dict:
    """In a spawned child: time ``calls`` calls of check ``name`` and take its verdicts (see the module doc)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    check = CHECKS[name]
    accelerator = Accelerator(cpu=device == "cpu")
    params = lora_params(str(accelerator.device))
    optimizer = SimpleNamespace(param_groups=[{"params": params}])
    for _ in range(warmup):
        check(optimizer, accelerator)
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
        before = _status_kib("VmRSS") * 1024
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        clean = check(optimizer, accelerator)  # ends in .item(): the GPU work is done when it returns
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    with torch.no_grad():
        saved = params[inf_at].flatten()[7].item()
        params[inf_at].view(-1)[7] = float("inf")
        one_inf = check(optimizer, accelerator)
        params[inf_at].view(-1)[7] = saved
        for p in params:
            p.fill_(1e30)
        huge = check(optimizer, accelerator)
    return {
        "device": str(accelerator.device),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "tensors": len(params),
        "values": sum(p.numel() for p in params),
        "ms_per_call_median": 1000 * statistics.median(times),
        "ms_per_call_mean": 1000 * statistics.fmean(times),
        "peak_increase_mib": (peak - before) / 2**20,
        "verdict_clean": clean,
        "verdict_one_inf": one_inf,
        "verdict_weights_1e30": huge,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--calls", type=int, default=None, help="timed calls (default: 40 on a CPU, 500 on a GPU)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--inf-at", type=int, default=200, help="the tensor that gets one inf (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    calls = args.calls or (40 if args.device == "cpu" else 500)

    report = environment(["torch", "accelerate", "visalign"])
    results = {name: in_child(run_path, name, args.device, calls, args.warmup, args.inf_at)["value"]
               for name in ("foreach", "per_tensor")}  # fmt: skip
    fast, base = results["foreach"], results["per_tensor"]
    print(f"{fast['tensors']} LoRA tensors, {fast['values'] / 1e6:.1f} M float32 values on {fast['device']}"
          f"{' (' + fast['gpu'] + ')' if fast['gpu'] else ''}; torch {torch.__version__}; {calls} calls; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:>10}: {r['ms_per_call_median']:8.3f} ms a call (median; mean {r['ms_per_call_mean']:.3f}), "
              f"peak +{r['peak_increase_mib']:.2f} MiB; finite: clean {r['verdict_clean']}, one inf "
              f"{r['verdict_one_inf']}, weights of 1e30 {r['verdict_weights_1e30']}")  # fmt: skip
    ratio = base["ms_per_call_median"] / fast["ms_per_call_median"]
    print(f"speedup: per-tensor / foreach = {ratio:.2f}x (median per call)")
    same = all(fast[key] == base[key] for key in ("verdict_clean", "verdict_one_inf"))
    right = fast["verdict_clean"] and not fast["verdict_one_inf"]
    print("same verdicts (clean: finite, one inf: not)" if same and right else "VERDICTS DIFFER OR ARE WRONG")
    report["device"]["gpu"] = fast["gpu"]
    report.update(benchmark="weights_check", calls=calls, foreach=fast, per_tensor=base, speedup=ratio,
                  same_verdicts=same and right)  # fmt: skip
    if args.json:
        write_json(args.json, report)
    return 0 if same and right else 1


if __name__ == "__main__":
    sys.exit(main())
