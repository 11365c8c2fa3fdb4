"""The ``visalign`` command line: a thin Typer app. Each command group lives in its own module here.

Every command parses its arguments, loads a config, calls one library function and prints. Errors of type
:class:`visalign.errors.VisalignError` become one line on stderr and exit code 2 (a traceback with ``--debug``), as
do the errors of memory that ran out (CPU RAM or GPU memory) and of files the system refuses.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from typing import Annotated

import typer

from visalign.cli import attack as _attack
from visalign.cli import baseline as _baseline
from visalign.cli import eval as _eval
from visalign.cli import judge as _judge
from visalign.cli import magic as _magic
from visalign.cli import models as _models
from visalign.cli import quickstart as _quickstart
from visalign.cli import vsfa as _vsfa
from visalign.errors import VisalignError
from visalign.out_of_memory import CPU_RAM, failed_allocation, memory_exhausted
from visalign.plugins import load_plugins

app = typer.Typer(
    name="visalign",
    help="Safety alignment of vision-language models: VSFA, Magic Image and their evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each group module exposes register(app); add new groups here.
for _group in (_quickstart, _models, _vsfa, _attack, _judge, _magic, _eval, _baseline):
    _group.register(app)

DEBUG_HELP = "Add --debug anywhere on the command line for the full traceback of an error."


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the full traceback of an error; allowed anywhere on the line")
    ] = False,
) -> None:
    # Declared so that `visalign --help` lists it; main() takes --debug out of argv before Typer parses, because
    # only main() can act on it (it decides whether an error is re-raised) and there it works in any position.
    del debug


def _mention_debug(typer_app: typer.Typer) -> None:
    """Put :data:`DEBUG_HELP` under the ``--help`` of every command and group below ``typer_app``."""
    for command in typer_app.registered_commands:
        command.epilog = command.epilog or DEBUG_HELP
    for group in typer_app.registered_groups:
        if not isinstance(group.epilog, str):  # unset: Typer's placeholder for its default
            group.epilog = DEBUG_HELP
        _mention_debug(group.typer_instance)


_mention_debug(app)


_TERMINATED: list[bool] = []  # set when a SIGTERM stopped the command


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    """Handle SIGTERM (what SLURM and Kubernetes send before they kill) as Ctrl-C.

    A job stops through the same path as a KeyboardInterrupt: its ``finally`` blocks close stores and remove
    temporary files, and the CLI prints one line and exits 143. By default a SIGTERM ends the process at once,
    with no message.
    """
    _TERMINATED.append(True)
    # a second SIGTERM (a scheduler's after its grace period, or torchrun's forwarded one) kills at once, as
    # before, so that a cleanup that hangs does not keep the process alive
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


def _memory_message(memory: str, exc: BaseException) -> str:
    """The one line for memory that ran out in any command: what ran out, how large a request failed, what to do."""
    free = ("free memory (close other programs) or use a machine with more RAM" if memory == CPU_RAM else
            "free the GPU (nvidia-smi lists what holds it) or use one with more memory")  # fmt: skip
    failed = failed_allocation(exc)
    return (f"{memory} ran out{f' ({failed})' if failed else ''}; {free}; in a job config, lower its batch sizes or "
            "set dtype: bfloat16; a job (data, train, optimize, eval) keeps its finished work: re-run the same "
            "command to resume")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn a :class:`VisalignError` into one line on stderr and its exit code.

    A SIGTERM stops a command as Ctrl-C does (exit code 143), where no other handler was set.
    """
    # only where nobody chose a handler (an embedding program's own stays), and only from the main thread
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if own:
        _TERMINATED.clear()
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        _run(argv)
    finally:
        if own:  # main() called from Python (a test, a notebook) leaves the process's handling as it found it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(argv: list[str] | None) -> None:
    """The body of :func:`main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        try:
            load_plugins()  # the user's registered benchmarks, judges and families, before any argument is checked
        except KeyboardInterrupt:  # outside Typer, which turns one inside a command into its code 130
            code = 130
        else:
            # Outside standalone mode Typer *returns* the code of an Exit, Ctrl-C's 130 included, instead of raising
            code = app(args=args, standalone_mode=False)
    except VisalignError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # Typer turns an EOFError into Abort: a file that ends too early
            if debug:
                raise exc.__cause__ from None
            typer.echo(f"error: a file ended too early ({exc.__cause__ or 'EOFError'}): an empty or truncated file; "
                       "add --debug to see which", err=True)  # fmt: skip
            sys.exit(2)
        typer.echo("aborted", err=True)
        sys.exit(130)
    except (MemoryError, RuntimeError) as exc:  # after Abort (a RuntimeError): torch raises RuntimeErrors for memory
        memory = memory_exhausted(exc)
        if memory is None or debug:
            raise
        typer.echo(f"error: {_memory_message(memory, exc)}", err=True)
        sys.exit(2)
    except OSError as exc:  # a path that is a folder, a missing parent, no permission: the user's to fix
        if debug:
            raise
        if exc.errno == errno.ENOMEM:  # a failed mmap or fork
            typer.echo(f"error: {_memory_message(CPU_RAM, exc)}", err=True)
            sys.exit(2)
        where = f"{exc.filename}: " if exc.filename else ""
        advice = {errno.ENOSPC: "; free space and re-run the same command to resume",
                  errno.EDQUOT: "; free space (a disk quota is reached) and re-run the same command to resume",
                  errno.EFBIG: "; raise the file size limit (ulimit -f) and re-run the same command to resume",
                  }.get(exc.errno, "")  # fmt: skip
        typer.echo(f"error: {where}{exc.strerror or exc}{advice}", err=True)
        sys.exit(2)
    except typer.TyperException as exc:
        # Usage errors (a missing option, an unknown command, a bad number). Typer >= 0.29 raises its own copy of
        # click's exceptions, which the separate ``click`` package's classes do not match; each carries its exit code.
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        if code == 130:  # Typer's code for a KeyboardInterrupt, which a SIGTERM is turned into (see below)
            what = "terminated (SIGTERM)" if _TERMINATED else "interrupted"
            typer.echo(f"{what}; finished work is kept: re-run the same command to resume", err=True)
            code = 128 + signal.SIGTERM if _TERMINATED else code
        sys.exit(code)
