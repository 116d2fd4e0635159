"""One error hierarchy for the whole compiler.

Every message says what was received, what is valid, and how to fix it. The CLI turns a
`CompressError` into one line on stderr and exit code 2; `--debug` shows the traceback.
"""
from __future__ import annotations

import re


def one_line(text: str) -> str:
    """An error message as one line (a message that quotes another tool's output may span several)."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class CompressError(Exception):
    """Base class of every error the compiler raises on purpose."""


class ConfigError(CompressError):
    """A pipeline file, option or command-line value is invalid."""


class DataError(CompressError):
    """A dataset is missing, malformed or empty."""


class FrontendError(CompressError):
    """A model could not be built, loaded or lowered to the IR."""


class PassError(CompressError):
    """A compression pass failed or was given an IR it cannot handle."""


class ExportError(CompressError):
    """An exporter failed, or its artifact did not reproduce the model's outputs."""


class StoreError(CompressError):
    """The stage store (or a file a stage record covers) is damaged: a stored file does not match its
    checksum, a stage path is not a directory, or the store cannot be read or written. Never the fault of
    the stage that was running, so no reproducer is written for it."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(exc: BaseException) -> str:
    """`Type: first non-empty line` of an exception (ANSI colours removed), plus the first line of its cause
    when there is one: how a third-party failure is quoted inside a one-line error."""

    def one(e: BaseException) -> str:
        lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
        return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__

    text = one(exc)
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and cause is not exc:
        text += f" (caused by {one(cause)})"
    return text
