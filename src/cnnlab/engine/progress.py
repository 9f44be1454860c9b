"""The per-epoch progress bar: a widget in Jupyter, a live bar in a terminal, nothing in a log file.

A bar redrawn with carriage returns is unreadable once written to a file or a pipe (every redraw
stays in it), and the fit loop already prints one line per epoch there; so the bar is drawn only
where it can be redrawn: a terminal, or a Jupyter kernel (``tqdm.auto``: an ipywidgets bar when
ipywidgets is installed, text otherwise).
"""
from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm

NOTEBOOK, TERMINAL = "notebook", "terminal"


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the test ``tqdm.autonotebook`` makes)."""
    return "ipykernel.zmqshell" in sys.modules


def is_terminal(stream: IO) -> bool:
    """True when ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def bar_style(stream: IO, enabled: bool = True) -> str | None:
    """``notebook``, ``terminal``, or None when no bar should be drawn on ``stream``."""
    if not enabled:
        return None
    if in_notebook():
        return NOTEBOOK
    return TERMINAL if is_terminal(stream) else None


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """A bar of ``total`` steps starting at ``initial`` (a disabled one where no bar belongs)."""
    style = bar_style(sys.stderr, enabled)
    common = dict(total=total, initial=initial, desc=desc, unit="batch", leave=True)
    if style == NOTEBOOK:
        from tqdm.auto import tqdm as notebook_tqdm

        return notebook_tqdm(**common)
    return tqdm(**common, disable=style is None, dynamic_ncols=True, file=sys.stderr)


__all__ = ["bar_style", "in_notebook", "is_terminal", "progress_bar"]
