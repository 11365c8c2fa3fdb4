"""`vsfa train` out of CPU RAM, in a step or while the model loads: one line with advice and the work kept.

Real faults: the CLI runs in a child process whose address space is capped (RLIMIT_AS), so the kernel refuses the
allocation and torch's CPU allocator (or safetensors' mmap) fails as it does on a full machine. Before, both gave a
traceback (``RuntimeError: ... DefaultCPUAllocator: can't allocate memory``, ``MemoryError``), exit 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import yaml
from train_support import train_config, write_dataset

# The CLI with its address space capped at what the process holds plus ``CAP_MARGIN_MIB``: when the language model's
# forward starts for the ``CAP_AT_FORWARD``-th time (a step's activations need far more than the margin), or else
# once its imports are done (the margin is less than the model's weights).
_CHILD = textwrap.dedent("""
    import os, resource, sys
    from pathlib import Path
    import torch, transformers
    import visalign.vsfa.training
    from visalign.cli import main

    def address_space():
        status = Path("/proc/self/status").read_text()
        return int(next(l for l in status.splitlines() if l.startswith("VmSize:")).split()[1]) * 1024

    def cap(extra):
        resource.setrlimit(resource.RLIMIT_AS, (address_space() + extra, resource.RLIM_INFINITY))

    forwards = []
    def cap_at_forward(module, args):
        if type(module).__name__ == "LlamaModel":
            forwards.append(1)
            if len(forwards) == int(os.environ["CAP_AT_FORWARD"]):
                handle.remove()
                cap(int(os.environ["CAP_MARGIN_MIB"]) * 2**20)

    if "CAP_AT_FORWARD" in os.environ:
        handle = torch.nn.modules.module.register_module_forward_pre_hook(cap_at_forward)
    else:
        cap(int(os.environ["CAP_MARGIN_MIB"]) * 2**20)
    main(sys.argv[1:])
""")


def _train(config, run, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, "vsfa", "train", "-c", str(config), "-o", str(run)],
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _config(tmp_path, model, count: int, long: tuple[int, ...] = ()):
    """A training config on ``count`` examples for ``model``; the records ``long`` answer in ~400 tokens."""
    data = write_dataset(tmp_path / "data", "default", count=count)
    rows = json.loads(data.read_text())
    for index in long:
        rows[index]["conversations"][-1]["value"] = " ".join(["The street is quiet and the sky is blue."] * 40)
    data.write_text(json.dumps(rows))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(train_config(model, data, epochs=1, checkpoint_every=1)))
    return path


def test_cpu_ram_that_runs_out_in_a_step_is_one_line_naming_the_checkpoint_to_resume(default_model_dir, tmp_path):
    # 2 steps of 2 examples; seed 3's batch plan puts the long records 2 and 3 in step 2
    config, run = _config(tmp_path, default_model_dir, count=4, long=(2, 3)), tmp_path / "run"
    # capped when step 2's forward starts, after step 1 and its checkpoint: 64 MiB more than the process holds, where
    # step 2's activations need several times what step 1's left free
    done = _train(config, run, CAP_AT_FORWARD="2", CAP_MARGIN_MIB="64")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    kept = run / "checkpoints" / "step-00000001"
    line = done.stderr.strip().splitlines()[-1]
    pattern = (
        r"error: CPU RAM ran out \(an allocation of [\d.]+ [MG]iB failed\); try batch_size: 1 with grad_accum: 2 "
        r"\(same effective batch\); gradient_checkpointing: true \(about half the activation memory, ~30% slower\); "
        r"dtype: bfloat16 \(half the memory of float32; slower on most CPUs\); shorter examples or smaller images "
        r"\(max_pixels in the processor\); close other programs, or train on a machine with more RAM or a GPU; "
        rf"stopped at step 2, the last good checkpoint is {re.escape(str(kept))} \(the same command resumes from it; "
        r"a changed config trains into a new --out directory\)"
    )
    assert re.fullmatch(pattern, line), line
    # what the line promises: the same command, with the memory back, resumes from that checkpoint and finishes
    again = subprocess.run([sys.executable, "-m", "visalign", "vsfa", "train", "-c", str(config), "-o", str(run)],
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 steps (resumed at step 1)" in again.stdout


def test_cpu_ram_that_runs_out_while_the_model_loads_is_one_line_with_advice(default_model_dir, tmp_path):
    config, run = _config(tmp_path, default_model_dir, count=2), tmp_path / "run"
    done = _train(config, run, CAP_MARGIN_MIB="200")  # the embedded default's weights are 558 MB in float32
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: CPU RAM ran out while loading the model {default_model_dir} in float32; try "
        "dtype: bfloat16 (half the memory of float32); close other programs, or train on a machine with more RAM or "
        "a GPU; training did not start, no checkpoint was written yet"
    )
