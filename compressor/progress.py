"""Progress bars that suit where stderr goes.

On a terminal (or in a notebook) `progress_bar` is tqdm as usual. Elsewhere (a CI log, `2> file`,
a pipe) a redrawn bar would fill the log with carriage returns, so the bar stays silent while it
runs and writes one plain line when it closes: `train 1/8: 24/24 [00:03, loss=0.4123]`.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

__all__ = ["progress_bar"]

LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class LineBar(tqdm):
    """A tqdm that never redraws: nothing while it runs, one line (no carriage return) at close."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        return False  # False: close() then writes no "\r" to clear a line that was never drawn

    def close(self) -> None:
        if self.disable:
            return
        line = self.format_meter(**{**self.format_dict, "bar_format": LINE_FORMAT})
        super().close()
        try:
            self.fp.write(line + "\n")
            self.fp.flush()
        except ValueError:  # the stream is already closed: a bar collected at interpreter exit
            pass


def _interactive(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs) on a terminal; off one, a bar that prints one line when it closes.

    Takes tqdm's arguments (desc, total, disable, leave, file, ...). Use it as tqdm: iterate it, or
    update() it and close() it (or use it as a context manager).
    """
    stream = kwargs.get("file") or sys.stderr
    if _interactive(stream):
        return auto_tqdm(iterable, **kwargs)
    kwargs.update(file=stream, leave=False, dynamic_ncols=False, mininterval=float("inf"))
    return LineBar(iterable, **kwargs)
