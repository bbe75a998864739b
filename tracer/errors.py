"""The one error type for bad input files: it always names the file and the position."""

from __future__ import annotations


class InputError(Exception):
    """A user-supplied file or argument is wrong. Printed as one line; never a traceback."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
