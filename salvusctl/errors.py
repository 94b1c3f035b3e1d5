"""The one family of user-facing errors.

Every expected failure is a ``SalvusError``: click's ``Command.main`` catches
it at the entry point and prints ``Error: <message>`` without a traceback,
then exits with the subclass's code. Messages name the problem and the fix.
"""

import click


class SalvusError(click.ClickException):
    """Base of every error an admin is meant to read."""

    exit_code = 1


class ConfigError(SalvusError):
    exit_code = 3


class NotInitialized(SalvusError):
    exit_code = 4


class PortInUse(SalvusError):
    exit_code = 5


class PostgresMissing(SalvusError):
    exit_code = 6


class DatabaseError(SalvusError):
    exit_code = 7


class MigrationError(SalvusError):
    exit_code = 8


class SupervisorUnreachable(SalvusError):
    exit_code = 9


class ProgramFailed(SalvusError):
    exit_code = 10


class UnknownProgram(SalvusError):
    exit_code = 11


class NotDelivered(SalvusError):
    exit_code = 12
