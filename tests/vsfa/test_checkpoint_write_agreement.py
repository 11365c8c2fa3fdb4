"""Under two processes, a checkpoint write that fails on one of them fails on both, with one and the same line.

Real processes and a real fault: ``torchrun`` (gloo on the CPU) starts the CLI twice through a launcher that gives
process 1 alone a 1 KiB file size limit, so its ``rng-1.pt`` cannot be written, as on a full local disk. Before, process
1 printed its line alone; process 0, at the barrier after the writes, died with gloo's "Connection closed by peer"
traceback (NCCL's barrier waits on until torchrun kills it), and the staging folder stayed behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import yaml
from train_support import train_config, write_dataset

# What torchrun runs for each process: the CLI, with process 1's file size limit at 1 KiB (SIGXFSZ ignored, so a write
# past it fails with EFBIG instead of killing the process). Process 1 writes no file but its rng-1.pt.
_LAUNCHER = textwrap.dedent("""
    import os, resource, signal, sys
    if os.environ["RANK"] == "1":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    from visalign.cli import main
    main(sys.argv[1:])
""")


def test_a_write_that_fails_on_process_1_stops_both_processes_with_the_same_line(tiny_checkpoints, tmp_path):
    data = write_dataset(tmp_path / "data", "llava")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(train_config(tiny_checkpoints["llava"], data, epochs=1, checkpoint_every=1)))
    launcher = tmp_path / "launcher.py"
    launcher.write_text(_LAUNCHER)
    run = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(launcher), "vsfa", "train",
               "-c", str(config), "-o", str(run)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    # the processes print it word for word (before: one line, from process 1 only, and a traceback from process 0);
    # torchrun may stop one process with SIGTERM once the other has exited, at times before it printed
    assert 1 <= len(errors) <= 2 and len(set(errors)) == 1, done.stderr[-4000:]
    assert errors[0].startswith(f"error: {run / 'checkpoints'}: saving failed (process 1: ")
    assert errors[0].endswith("); the disk may be full or not writable; free space and re-run the same command: no "
                              "checkpoint was written yet, so it starts again")  # fmt: skip
    assert "rng-1.pt" in errors[0] or "File too large" in errors[0] or "unexpected pos" in errors[0]
    # Each process ended on the error: exit 2, or SIGTERM from torchrun when the other one's exit came first (after
    # the line was printed). No process traceback; torchrun's own report is a ChildFailedError traceback.
    codes = re.findall(r"exitcode  : (-?\d+) ", done.stderr)
    assert done.returncode != 0 and len(codes) == 2 and set(codes) <= {"2", "-15"} and "2" in codes, codes
    assert not re.search(r"^\[rank\d\]:", done.stderr, re.MULTILINE)
    assert done.stderr.count("Traceback") == done.stderr.count("ChildFailedError:") == 1
    # the failed save's staging folder is gone, and nothing was taken for a checkpoint
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == []
