"""The models CLI as a user runs it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from PIL import Image


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visalign", *args], capture_output=True, text=True, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "models" in result.stdout and "chat" in result.stdout


def test_models_list_names_every_family():
    result = run_cli("models", "list")
    assert result.returncode == 0
    for name in ("Qwen2.5-VL", "Qwen3-VL", "LLaVA-1.5", "LLaVA-NeXT", "smollm2-vlm"):
        assert name in result.stdout


def test_chat_with_an_image_on_a_tiny_checkpoint(tiny_checkpoints, tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (56, 56), "red").save(image)
    result = run_cli("chat", "--model", str(tiny_checkpoints["qwen2_5_vl"]), "--image", str(image),
                     "--max-new-tokens", "4", "What is this?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != ""


def test_bad_image_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"GIF89a-but-not-really")
    assert_one_line_error(run_cli("chat", "--image", str(bad), "hi"), "fake.jpg", "not an image")


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"nope")
    result = run_cli("--debug", "chat", "--image", str(bad), "hi")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_family_is_refused(tiny_checkpoints, tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"")
    assert_one_line_error(run_cli("chat", "--model", str(folder), "hi"), "unsupported model family 'bert'")


def test_partial_checkpoint_names_the_missing_shard(tiny_checkpoints, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}'
    )
    assert_one_line_error(run_cli("chat", "--model", str(folder), "hi"), "partial checkpoint",
                          "model-00001-of-00002.safetensors")


@pytest.mark.parametrize("index", [
    '{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safet',  # an interrupted download
    '{"metadata": {}}',  # no weight_map
    '["model-00001-of-00002.safetensors"]',
])  # fmt: skip
def test_a_damaged_shard_index_is_one_line_that_says_to_re_download(tiny_checkpoints, tmp_path, capsys, index):
    from cli_in_process import run_in_process

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    (folder / "model.safetensors.index.json").write_text(index)
    code, _, err = run_in_process(["chat", "--model", str(folder), "hi"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "model.safetensors.index.json: unreadable shard index (" in lines[0]
    assert lines[0].endswith("re-download the checkpoint")


def test_missing_weights_are_reported(tiny_checkpoints, tmp_path):
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoints["llava"], folder)
    (folder / "model.safetensors").unlink()
    assert_one_line_error(run_cli("chat", "--model", str(folder), "hi"), "no weight files")


def test_default_model_not_built_says_what_to_run(tmp_path):
    import os

    env = {**os.environ, "VISALIGN_HOME": str(tmp_path / "empty-home")}
    assert_one_line_error(run_cli("chat", "hi", env=env), "visalign models build-default")


def test_usage_errors_are_click_messages_with_exit_2_not_tracebacks():
    """Typer >= 0.29 raises its own copy of click's exceptions: each must still end as a usage message, exit 2."""
    for args, message in ((["eval"], "Missing option '--config'"), (["nosuch"], "No such command 'nosuch'"),
                          (["chat", "--max-new-tokens", "abc"], "Invalid value for '--max-new-tokens'")):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr
    bare = run_cli()
    assert bare.returncode == 2 and "Traceback" not in bare.stderr and "Usage:" in bare.stdout


def test_max_new_tokens_below_one_is_a_usage_error_before_the_model_loads(tmp_path, capsys):
    from cli_in_process import run_in_process

    missing = str(tmp_path / "no-model")  # never read: the option is refused first
    for argv in (["chat", "--model", missing, "--max-new-tokens", "0", "hi"],
                 ["magic", "apply", "--images", missing, "--value-system", "standard", "--max-new-tokens", "-3",
                  "--prompt", "hi"]):  # fmt: skip
        code, _, err = run_in_process(argv, capsys)
        assert code == 2 and "Invalid value for '--max-new-tokens'" in err and "Traceback" not in err, err


def test_generate_refuses_max_new_tokens_below_one(tiny_checkpoints):
    from visalign.errors import VisalignError
    from visalign.models import load_vlm, user

    vlm = load_vlm(str(tiny_checkpoints["llava"]))
    with pytest.raises(VisalignError, match="max_new_tokens must be at least 1, got 0"):
        vlm.generate([[user("hi")]], max_new_tokens=0)
