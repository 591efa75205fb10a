"""One exception type for bad user input.

Every error a user can fix (a malformed file, an unknown config key, a mesh that does not match the
devices) is raised as :class:`JaxrecError` with a message naming the file/line/field and what was
expected. The CLI prints it as one line and exits with status 2, never with a traceback.
"""


class JaxrecError(Exception):
    """A user-facing error: the message says what was wrong and where."""


class ConfigError(JaxrecError):
    """An invalid configuration (unknown key, wrong type, bad value)."""


class DataError(JaxrecError):
    """Invalid input data (malformed line, missing field, inconsistent ids)."""


class TrainingDiverged(JaxrecError):
    """The loss or gradient norm became NaN/Inf (see ``train.nan_policy``)."""
