"""One exception type for every user-facing input problem.

Every check that can be failed by a user's file or config raises
:class:`ZhuntError` with a single line that names the file (and line) or the
config key and says what was expected. Workflow scripts turn it into one line
on stderr and a non-zero exit (see :func:`zhunt.io.run_main`).
"""


class ZhuntError(Exception):
    """A user-facing error whose message is one self-contained line."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")
