"""Any command that runs out of CPU RAM ends with one line: what ran out, what to do, what a job keeps.

Real faults: the CLI runs in a child process whose address space is capped (RLIMIT_AS) at what it holds after its
imports plus a margin, so the kernel refuses the allocation. Before, a traceback and exit 1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

_CAPPED_CLI = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import torch, transformers
    from visalign.cli import main

    status = Path("/proc/self/status").read_text()
    held = int(next(l for l in status.splitlines() if l.startswith("VmSize:")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (held + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
    main(sys.argv[2:])
""")
ADVICE = ("; free memory (close other programs) or use a machine with more RAM; in a job config, lower its batch sizes "
          "or set dtype: bfloat16; a job (data, train, optimize, eval) keeps its finished work: re-run the same "
          "command to resume")  # fmt: skip


def _capped(margin_mib: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CAPPED_CLI, str(margin_mib), *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip


def test_torch_cpu_allocator_failure_is_one_line_with_the_size_that_failed(tmp_path):
    # a 7B-shaped random checkpoint: its weights (~30 GB in float32) far past 256 MiB
    out = tmp_path / "qwen7b"
    done = _capped(256, "models", "write-random", "--family", "qwen2_5_vl", "--shape", "7b", "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip()
    assert re.fullmatch(r"error: CPU RAM ran out \(an allocation of [\d.]+ [MG]iB failed\)" + re.escape(ADVICE), line)
    assert not out.exists()


def test_a_model_whose_weights_cannot_be_mapped_is_one_line(default_model_dir):
    # the embedded default's model.safetensors (558 MB) is mapped whole as it loads
    done = _capped(200, "chat", "Hello", "--model", str(default_model_dir))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: CPU RAM ran out" + ADVICE


def test_debug_still_shows_the_traceback(tmp_path):
    done = _capped(256, "models", "write-random", "--family", "qwen2_5_vl", "--shape", "7b", "--out",
                   str(tmp_path / "qwen7b"), "--debug")  # fmt: skip
    assert done.returncode == 1 and "DefaultCPUAllocator: can't allocate memory" in done.stderr
    assert "Traceback" in done.stderr
