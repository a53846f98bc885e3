"""Incremental collection: compare what the server shows now with what the last runs stored.

MLflow's timestamps cannot say what changed (setting a tag or an alias leaves
``last_updated_timestamp`` alone; runs have no update time; deleted versions
vanish), so each object's document is digested exactly as the pipeline will
store it (redacted, canonical JSON, SHA-256) and compared with the digest the
source's earlier runs stored under the same name. A document is yielded when
it is new, changed, or its stored copy expires within the margin (re-attested
so it never goes stale); everything else is only marked as seen. Names stored
before and not seen now are the objects that disappeared.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from affidavit.collectors.base import Evidence, Seen, canonical_json
from affidavit.collectors.redact import Redactor


def stored_digest(doc: Any, redactor: Redactor) -> str:
    """The digest the pipeline gives a JSON document it stores (redacted, canonical, SHA-256)."""
    redacted, _ = redactor.redact_document(doc)
    return hashlib.sha256(canonical_json(redacted)).hexdigest()


class Delta:
    """The baseline of one source's earlier runs and what this run has seen so far."""

    def __init__(self, previous: Mapping[str, Seen], prefix: str, now: datetime, margin: timedelta,
                 redactor: Callable[[], Redactor] = Redactor) -> None:
        self.previous = {k: v for k, v in previous.items() if k.startswith(prefix)}
        self._sorted = sorted(self.previous)
        self.now = now
        self.margin = margin
        self._make_redactor = redactor
        self._redactor: Redactor | None = None
        self.seen: set[str] = set()
        self.yielded = 0
        self.unchanged = 0

    def due(self, name: str) -> bool:
        """No stored copy yet, or the stored one expires within the margin."""
        prev = self.previous.get(name)
        if prev is None:
            return True
        return prev.expires_at is not None and prev.expires_at - self.margin <= self.now

    def digest_matches(self, name: str, doc: Any) -> bool:
        """Would the pipeline store exactly the bytes stored last time under this name?

        Fast path: the stored bytes are already redacted, and redaction is
        idempotent, so when the document's own canonical bytes equal the stored
        ones, redacting it changes nothing and the digests match without
        running the redactor (the common case: no secret in the document).
        """
        prev = self.previous.get(name)
        if prev is None:
            return False
        if hashlib.sha256(canonical_json(doc)).hexdigest() == prev.digest:
            return True
        if self._redactor is None:  # built on first need: most runs never need it
            self._redactor = self._make_redactor()
        return prev.digest == stored_digest(doc, self._redactor)

    def offer(self, ev: Evidence) -> Evidence | None:
        """The evidence to yield for a JSON document, or None when its stored copy is current."""
        self.seen.add(ev.name)
        if ev.data is not None and not self.due(ev.name) and self.digest_matches(ev.name, ev.data):
            self.unchanged += 1
            return None
        self.yielded += 1
        return ev

    def keep(self, name: str) -> None:
        """Seen, and not collected again this run (a stored copy that is still current)."""
        self.seen.add(name)
        self.unchanged += 1

    def keep_under(self, prefix: str) -> bool:
        """Keep every stored name under a prefix; False when there is none."""
        start = bisect.bisect_left(self._sorted, prefix)
        found = []
        for n in self._sorted[start:]:
            if not n.startswith(prefix):
                break
            found.append(n)
        for n in found:
            self.keep(n)
        return bool(found)

    def missing(self) -> Iterator[str]:
        """Stored names this run has not seen, sorted."""
        return iter(sorted(n for n in self.previous if n not in self.seen))

    def is_marker(self, name: str, doc: Any) -> bool:
        """Is the stored copy already this marker document (so nothing needs storing)?"""
        return self.digest_matches(name, doc)
