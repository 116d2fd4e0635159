"""Click helpers shared by `compress` and the command groups plugins mount on it (`register_command`):
one-line errors with exit code 2 for CompressErrors (`handle_errors`) and for usage errors (`OneLineGroup`)."""
from __future__ import annotations

import difflib
import functools
import gc
import sys
import traceback
from typing import Any, Callable

import click

from compressor.errors import CompressError, one_line


def _release(exc: BaseException) -> None:
    """Drop the frames of the failed call now, so that progress bars still open in them close (and
    clear their line) before the error line is printed, not at exit after it."""
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    sys.stderr.flush()


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except CompressError as exc:
            if debug:
                raise
            _release(exc)
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; finished stages are kept, re-run to resume", err=True)
            sys.exit(130)

    return wrapper


class OneLineGroup(click.Group):
    """Usage errors (unknown command or option, missing argument, bad value) become one line,
    `error: ...`, and exit code 2, like every other error. `--help`, and `compress` alone, print the
    help as click does."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and self.get_command(ctx, name) is None:
            commands = self.list_commands(ctx)
            guess = difflib.get_close_matches(name, commands, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            ctx.fail(f"no such command '{name}'; {hint}valid: {', '.join(commands)}")
        return super().resolve_command(ctx, args)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = one_line(exc.format_message()).rstrip(".")
            ctx = getattr(exc, "ctx", None)
            hint = f"; see '{ctx.command_path} --help'" if isinstance(exc, click.UsageError) and ctx else ""
            click.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # non-standalone click returns the exit code of --help / --version / ctx.exit(n)
        sys.exit(rv if isinstance(rv, int) else 0)
