"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A problem with what the user gave us (path, file, flag), not a bug."""

    exit_code = 2


class DataError(UserError):
    """A data file that cannot be read as digits."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


class ValidationFailed(UserError):
    """Data that was read but failed its expectations."""

    exit_code = 1


class TooManyRejected(UserError):
    """Scoring finished and wrote its outputs, but more rows than allowed were rejected."""

    exit_code = 1


class PromotionRefused(UserError):
    """No lock that every worker sees guards the champion alias, and the user did not accept the risk."""
