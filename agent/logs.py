"""Logging set-up with a filter that strips known secrets from every record."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class SecretFilter(logging.Filter):
    """Replaces each known secret value in a record's final message with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
        return True


def configure(verbosity: int, secrets: Iterable[str] = ()) -> SecretFilter:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    scrubber = SecretFilter(secrets)
    handler.addFilter(scrubber)
    root = logging.getLogger("affidavit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return scrubber
