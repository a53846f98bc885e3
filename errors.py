"""The one error hierarchy.

Every error a user can hit is an :class:`AffidavitError` whose message says what
was wrong and, where there is one, what to do about it. The CLI prints
``error: <message>`` on one line and exits with :attr:`AffidavitError.exit_code`.
Exit codes (architecture.md): 0 success, 1 some sources failed / bundle invalid,
2 usage, config or unreadable input.
"""

from __future__ import annotations


class AffidavitError(Exception):
    """Root of every error Affidavit raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """One line for a human: the problem, then what to do."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(AffidavitError):
    """The command line was wrong (missing trust anchor, bad flag combination)."""


class ConfigError(AffidavitError):
    """The config file is missing, malformed or invalid; the message names the key path."""


class SigningKeyError(AffidavitError):
    """A signing key could not be created, read or decrypted."""


class PassphraseError(SigningKeyError):
    """The key's passphrase is missing or wrong."""


class StoreError(AffidavitError):
    """The evidence store could not be opened, read or written."""


class StoreLockedError(StoreError):
    """Another collection holds the store lock."""


class InputError(AffidavitError):
    """An input file (bundle, key, trust file) is missing or unreadable."""


class CollectorError(AffidavitError):
    """A collector could not produce its evidence; the run for that source fails."""

    exit_code = 1


class ConnectorError(CollectorError):
    """A connector could not talk to its system."""


class RetriableError(ConnectorError):
    """Temporary failure (429, 5xx, connection reset): worth retrying later."""


class FatalError(ConnectorError):
    """Permanent failure: retrying will not help until something changes."""


class AuthError(FatalError):
    """The credentials were refused."""
