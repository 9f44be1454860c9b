"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class CnnlabError(Exception):
    """A problem the user can fix: the message names what is wrong and what to do."""
