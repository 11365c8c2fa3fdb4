"""Shared by CLI tests: run the ``visalign`` CLI in this process and capture its exit code and output."""

from __future__ import annotations

from visalign.cli import main


def run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``visalign argv...``; return (exit code, stdout, stderr) as pytest's ``capsys`` captured them."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
