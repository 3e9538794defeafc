"""One-line errors with distinct exit codes for the `diffgemma` command line.

Every command body runs inside `guarded`, which turns the errors a user can cause (bad
input, a missing daemon, a file changed underneath) into `diffgemma: error: ...` on stderr
and the exit code below, never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from enum import IntEnum
from typing import Any, ParamSpec, TypeVar

import typer

from diffgemma.runtime.api.config import MAX_HOLES
from diffgemma.runtime.api.errors import (
    DaemonError,
    DaemonUnavailable,
    DiffgemmaError,
    ErrorCode,
    InvalidValue,
    one_line,
)

# The exceptions of the click Typer runs on: Typer >= 0.25 ships its own copy (`typer._click`),
# older ones use click itself.
try:
    _click: Any = importlib.import_module("typer._click.exceptions")
except ImportError:  # pragma: no cover - depends on the Typer release
    _click = importlib.import_module("click.exceptions")
UsageError: Any = _click.UsageError  # a bad command line (unknown command, bad option)
MissingParameter: Any = _click.MissingParameter  # a required argument or option not given


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: an error nobody planned for (still one line, no traceback)
    USAGE = 2  # bad option, malformed position/selection, bad config file
    FILE = 3  # missing, directory, binary, non-UTF-8, unreadable/unwritable file, empty stdin
    RANGE = 4  # line/column/selection out of range, no marker or more than MAX_HOLES
    DAEMON = 5  # the daemon cannot be reached or started
    MODEL = 6  # the daemon could not load the model
    CHANGED = 7  # the file changed between read and write; nothing was written
    REQUEST = 8  # the daemon refused or failed the request, or it was cancelled
    SYNTAX = 9  # the answer would add syntax errors to the file; nothing was written
    INTERRUPTED = 130  # Ctrl-C


# Shown in `diffgemma --help` and the README; keep the three in step.
EXIT_CODES_HELP = f"""[bold]Exit codes[/bold]

  0    success
  2    usage or config error (bad option, malformed position or selection)
  3    file problem: missing, directory, binary, non-UTF-8, empty stdin
  4    line, column or selection out of range; marker missing (or more than {MAX_HOLES})
  5    daemon unavailable (it cannot be reached or started)
  6    the model failed to load (or no vLLM server behind the daemon answers)
  7    the file changed since it was read; nothing was written
  8    the request failed or was cancelled
  9    the answer would add syntax errors to the file; nothing was written
  130  interrupted (Ctrl-C)"""


class CliError(DiffgemmaError):
    """An error for the user: a one-line message and the exit code it maps to."""

    code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageProblem(CliError):
    code = ExitCode.USAGE


class FileProblem(CliError):
    code = ExitCode.FILE


class OutOfRange(CliError):
    code = ExitCode.RANGE


class DaemonDown(CliError):
    code = ExitCode.DAEMON


class ModelLoadFailed(CliError):
    code = ExitCode.MODEL


class FileChanged(CliError):
    code = ExitCode.CHANGED


class RequestFailed(CliError):
    code = ExitCode.REQUEST


class WouldBreakSyntax(CliError):
    code = ExitCode.SYNTAX


# The daemon's error codes -> exit codes, every code named (a test checks): what the user should
# look at when the daemon refuses. An answer without a code is a failed request (see exit_code_for).
EXIT_BY_ERROR_CODE: dict[ErrorCode, ExitCode] = {
    ErrorCode.MODEL_LOAD_FAILED: ExitCode.MODEL,
    ErrorCode.ENGINE_UNAVAILABLE: ExitCode.MODEL,  # the vLLM servers behind the daemon do not answer
    ErrorCode.MODEL_NOT_FOUND: ExitCode.MODEL,
    ErrorCode.NO_MODEL: ExitCode.MODEL,
    ErrorCode.UNAUTHORIZED: ExitCode.DAEMON,  # a daemon we may not use is, to us, no daemon
    ErrorCode.FORBIDDEN: ExitCode.DAEMON,
    ErrorCode.MODEL_LOCKED: ExitCode.REQUEST,
    ErrorCode.INVALID_REQUEST: ExitCode.REQUEST,
    ErrorCode.INVALID_JSON: ExitCode.REQUEST,
    ErrorCode.BODY_TOO_LARGE: ExitCode.REQUEST,
    ErrorCode.NOT_FOUND: ExitCode.REQUEST,
    ErrorCode.METHOD_NOT_ALLOWED: ExitCode.REQUEST,
    ErrorCode.DUPLICATE_ID: ExitCode.REQUEST,
    ErrorCode.QUEUE_FULL: ExitCode.REQUEST,
    ErrorCode.CANCELLED: ExitCode.REQUEST,
    ErrorCode.INTERNAL: ExitCode.REQUEST,
}


def exit_code_for(error: DaemonError) -> ExitCode:
    """The exit code of a daemon error, from its wire code (never from its message)."""
    if error.code is not None:
        return EXIT_BY_ERROR_CODE[error.code]
    if isinstance(error, DaemonUnavailable) or error.status in (401, 403):
        return ExitCode.DAEMON
    return ExitCode.REQUEST  # any other answer without a code we know (an older daemon, a proxy)


def classify(exc: BaseException) -> CliError | None:
    """Map an exception from a dependency to a CliError; None when it is not one we expect."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, DaemonError):  # the daemon's answer, or no daemon (a runtime dir that cannot be made)
        return CliError(one_line(exc), exit_code_for(exc))
    if isinstance(exc, InvalidValue):  # a bad request field, config.toml or engine setting
        return UsageProblem(one_line(exc))
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return FileProblem(f"{exc.strerror or one_line(exc)}{where}")
    return None


def report(error: CliError) -> None:
    print(f"diffgemma: error: {one_line(error)}", file=sys.stderr, flush=True)


P = ParamSpec("P")
R = TypeVar("R")


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command body; user-facing failures become one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            print("diffgemma: interrupted", file=sys.stderr, flush=True)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): nothing left to tell anyone.
            _silence_stdout()
            raise typer.Exit(ExitCode.OK) from None
        except Exception as exc:
            error = classify(exc) or CliError(f"internal error: {type(exc).__name__}: {one_line(exc)}")
            report(error)
            raise typer.Exit(error.code) from None

    return wrapper


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _click_message(exc: Exception) -> str:
    """The one-line message of a click exception (``format_message``), else its text."""
    format_message = getattr(exc, "format_message", None)
    return one_line(format_message() if callable(format_message) else exc)


def run_app(app: Callable[..., Any]) -> None:
    """Run the Typer app so that even argument errors are one line and nothing escapes."""
    click_exception, usage_error, abort = _click.ClickException, UsageError, typer.Abort
    no_args_error = getattr(_click, "NoArgsIsHelpError", usage_error)
    try:
        code = app(standalone_mode=False)
    except no_args_error:
        # Bare `diffgemma infill`: Typer has printed the help already while raising this.
        sys.exit(ExitCode.USAGE)
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        argument = getattr(getattr(exc, "param", None), "param_type_name", "") == "argument"
        if isinstance(exc, MissingParameter) and argument and ctx is not None:
            # `diffgemma infill` alone: how to call it, then what is missing (not the whole help)
            print(one_line(ctx.get_usage()), file=sys.stderr)
        print(f"diffgemma: error: {_click_message(exc).rstrip('.')}{hint}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except click_exception as exc:
        print(f"diffgemma: error: {_click_message(exc)}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    except (abort, KeyboardInterrupt):
        print("diffgemma: interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(ExitCode.OK)
    except Exception as exc:  # the last net: one line, never a traceback
        error = classify(exc) or CliError(f"internal error: {type(exc).__name__}: {one_line(exc)}")
        report(error)
        sys.exit(error.code)
    sys.exit(code if isinstance(code, int) else 0)
