"""One error hierarchy for the whole compiler.

Every message says what was received, what is valid, and how to fix it. The CLI turns a
`CompressError` into one line on stderr and exit code 2; `--debug` shows the traceback.
"""
from __future__ import annotations


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
