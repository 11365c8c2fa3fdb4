"""``--debug`` is on the help pages a user reads, and still works anywhere on the command line."""

from __future__ import annotations

import pytest
from cli_in_process import run_in_process as run


def test_the_top_level_help_lists_debug(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "--debug" in out and "traceback" in out


@pytest.mark.parametrize("argv", [["judge"], ["judge", "refusal"], ["vsfa", "train"], ["magic", "apply"], ["chat"]])
def test_every_command_help_mentions_debug(argv, capsys):
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0 and "--debug" in out, out


@pytest.mark.parametrize("where", ["first", "last"])
def test_debug_still_raises_the_error_with_its_traceback(tmp_path, capsys, where):
    argv = ["judge", "refusal", "--input", str(tmp_path / "absent.jsonl")]
    argv = ["--debug", *argv] if where == "first" else [*argv, "--debug"]
    from visalign.errors import VisalignError

    with pytest.raises(VisalignError, match="input file not found"):
        run(argv, capsys)


def test_without_debug_the_same_error_is_one_line(tmp_path, capsys):
    code, _, err = run(["judge", "refusal", "--input", str(tmp_path / "absent.jsonl")], capsys)
    assert code == 2 and err == f"error: {tmp_path / 'absent.jsonl'}: input file not found\n"
