"""Errors that are the user's to fix.

The CLI prints a ``UserError`` as one line on stderr and exits non-zero; anything
else is a bug in mtedge and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad input, missing file, unsupported model, ..."""

    exit_code = 2


class BundleError(UserError):
    """A model bundle is missing, incomplete, corrupt, or of an unknown format."""


class UnsupportedModelError(UserError):
    """The model is not a supported seq2seq translation architecture."""


class DataError(UserError):
    """Parallel data that cannot be read or is empty after filtering."""
