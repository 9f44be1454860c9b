"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class CnnlabError(Exception):
    """A problem the user can fix: the message names what is wrong and what to do."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type when it has none,
    for quoting a library's error inside a one-line CnnlabError."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
