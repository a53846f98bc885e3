"""Secret redaction: every artefact goes through here before it is hashed.

The rules (:mod:`affidavit.collectors.redact_rules`) are bounded regular
expressions over bytes, which is what makes :meth:`Redactor.redact_stream`
exact on inputs of any size: it scans fixed-size chunks and carries an overlap
window at least as long as the longest possible match (plus the look-around
context), so a secret split across a chunk boundary is still caught and never
emitted partially.

Speed: all rules form one alternation regex, but Python's engine tries every
alternative at every position (about 4 MiB/s). So each rule also has a
*prefilter* (:func:`~affidavit.collectors.redact_rules.rule_prefilter`), and a
:class:`~affidavit.collectors.redact_scan.Scanner` finds with Hyperscan, in one
SIMD pass over a chunk, every position where one of them matches; the exact
combined regex runs only at those positions, so the result is the same as a
full scan (leftmost first, no overlaps). A rule without a selective prefilter
(one that would match at many positions of ordinary text) makes the redactor
fall back to the full scan. Streams are redacted one chunk ahead in a thread,
so that redaction overlaps with the caller's hashing and writing.

A :class:`~affidavit.collectors.base.Redaction` records where and by which rule,
never the secret itself; nothing here logs or raises with matched text in it.
"""

from __future__ import annotations

import functools
import io
import logging
import queue
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from affidavit.collectors.base import Redaction
from affidavit.collectors.redact_rules import DEFAULT_RULES, Rule, combine, rule_width
from affidavit.collectors.redact_scan import Scanner

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1 << 20
# Extra bytes kept on both sides of the window for zero-width assertions that
# look one byte beyond the match (\b, $) on top of the measured look-arounds.
_ASSERT_SLACK = 8

SECRET_FIELD_RULE = "secret-field"
SECRET_FIELD_VALUE = "[REDACTED:secret-field]"


# -- the redactor ----------------------------------------------------------------


class Redactor:
    """Applies a set of rules to documents, byte strings and streams."""

    def __init__(
        self, rules: Sequence[Rule] = DEFAULT_RULES, *, chunk_size: int = DEFAULT_CHUNK_SIZE, prefilter: bool = True
    ) -> None:
        """``prefilter=False`` forces the full scan (same results, much slower): for tests."""
        if not rules:
            raise ValueError("a Redactor needs at least one rule")
        names = [r.name for r in rules]
        if len(set(names)) != len(names) or SECRET_FIELD_RULE in names:
            raise ValueError(f"redaction rule names must be unique and not {SECRET_FIELD_RULE!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.rules: tuple[Rule, ...] = tuple(rules)
        widths = [rule_width(r) for r in self.rules]
        self.max_match = max(w for w, _ in widths)
        # bytes of context a match's outcome may depend on beyond its own extent
        self.context = max(a for _, a in widths) + _ASSERT_SLACK
        self.chunk_size = chunk_size
        self._combined, self._offsets = combine(self.rules)
        self._replacements = [r.replacement for r in self.rules]
        self._scanner = Scanner.build(self.rules) if prefilter else None
        # documents repeat the same few keys ("key", "value", a run's param names): decide each once
        self._secret_key = functools.lru_cache(maxsize=4096)(is_secret_key)

    @property
    def prefiltered(self) -> bool:
        """Does every rule have a selective prefilter, so that the fast candidate search is used?"""
        return self._scanner is not None

    # -- bytes -------------------------------------------------------------

    def _matches(self, buf: bytes, start: int, limit: int) -> Iterator[re.Match[bytes]]:
        """Leftmost-first, non-overlapping matches of the combined regex starting in [start, limit)."""
        if self._scanner is None:  # a rule without a selective prefilter: try every position
            for m in self._combined.finditer(buf, start):
                if m.start() >= limit:
                    return
                yield m
            return
        last_end = start
        match = self._combined.match
        for c in self._scanner.candidates(buf, start, limit):
            if c < last_end:
                continue
            found = match(buf, c)
            if found is not None:
                last_end = found.end()
                yield found

    def _scan(
        self, buf: bytes, start: int, limit: int, line: int, found: list[Redaction], path: str | None
    ) -> tuple[list[bytes], int, int, int]:
        """Redact matches starting in buf[start:limit].

        Returns (output pieces up to the last replaced byte, index of the first
        unemitted byte, end of the last match, line number at max(limit, that end)).
        """
        pieces: list[bytes] = []
        emitted = start
        last_end = start
        counted = start
        for m in self._matches(buf, start, limit):
            s = m.start()
            which = m.lastgroup
            assert which is not None  # every alternative is a named group
            idx = int(which[1:])
            g = self._offsets[idx] + self.rules[idx].group
            gs, ge = m.span(g)
            if gs < 0:  # the group did not take part: replace the whole match
                gs, ge = m.span()
            line += buf.count(b"\n", counted, s)
            counted = s
            pieces.append(buf[emitted:gs])
            pieces.append(self._replacements[idx])
            emitted = ge
            last_end = m.end()
            found.append(Redaction(path=path if path is not None else f"line {line}", rule=self.rules[idx].name))
        line += buf.count(b"\n", counted, max(limit, last_end)) if path is None else 0
        return pieces, emitted, last_end, line

    def redact_bytes(self, data: bytes) -> tuple[bytes, list[Redaction]]:
        """Redact a whole byte string; redaction paths are ``line N``."""
        found: list[Redaction] = []
        pieces, emitted, _, _ = self._scan(data, 0, len(data), 1, found, None)
        if not found:
            return data, found
        pieces.append(data[emitted:])
        return b"".join(pieces), found

    def redact_text(self, text: str, path: str) -> tuple[str, list[Redaction]]:
        """Redact a string; every redaction gets ``path``."""
        data = text.encode("utf-8", "surrogatepass")
        found: list[Redaction] = []
        pieces, emitted, _, _ = self._scan(data, 0, len(data), 1, found, path)
        if not found:
            return text, found
        pieces.append(data[emitted:])
        # a bounded value may end inside a multi-byte character: never fail on it
        return b"".join(pieces).decode("utf-8", "replace"), found

    # -- documents -------------------------------------------------------------

    def redact_document(self, data: Any) -> tuple[Any, list[Redaction]]:
        """A redacted copy of a JSON-able structure, and the redactions (JSON pointers).

        Strings anywhere are redacted by the rules. A value under a key that
        names a secret (:func:`is_secret_key`) is replaced whole, whatever it
        is, except ``null``: an absent secret is not hidden behind a marker.
        """
        found: list[Redaction] = []
        result = self._walk(data, "", found)
        if found:
            logger.debug("redacted %d value(s) in a document (rules: %s)", len(found), _rule_names(found))
        return result, found

    def _walk(self, value: Any, pointer: str, found: list[Redaction]) -> Any:
        if isinstance(value, str):
            text, hits = self.redact_text(value, pointer)
            found.extend(hits)
            return text
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                child = pointer + "/" + _pointer_token(str(key))
                if item is not None and self._secret_key(str(key)):
                    out[key] = SECRET_FIELD_VALUE
                    found.append(Redaction(path=child, rule=SECRET_FIELD_RULE))
                else:
                    out[key] = self._walk(item, child, found)
            return out
        if isinstance(value, (list, tuple)):
            return [self._walk(item, f"{pointer}/{i}", found) for i, item in enumerate(value)]
        # the value's repr could hold a secret: name only its type
        raise TypeError(f"cannot redact a {type(value).__name__} at {pointer or '/'}: not a JSON value")

    # -- streams -------------------------------------------------------------------

    def redact_stream(self, source: IO[bytes]) -> RedactingReader:
        """A reader of ``source`` with every secret replaced, in constant memory.

        ``reader.redactions`` is complete once the reader has returned EOF.
        Closing the reader closes ``source``.
        """
        return RedactingReader(_RedactingRaw(self, source))


def _rule_names(found: Iterable[Redaction]) -> str:
    return ", ".join(sorted({r.rule for r in found}))


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# -- secret-looking keys ---------------------------------------------------------

_SECRET_KEY_TERMS: tuple[tuple[str, ...], ...] = tuple(
    tuple(term.split("_"))
    for term in (
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "access_key",
        "accesskey",
        "secret_key",
        "secretkey",
        "private_key",
        "privatekey",
        "client_secret",
        "clientsecret",
        "credential",
        "credentials",
    )
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def is_secret_key(key: str) -> bool:
    """Does a mapping key name a secret (``password``, ``DB-Password``, ``githubToken``...)?

    The key's words must end with one of the secret terms, so ``api_key``,
    ``x-api-key`` and ``XApiKey`` are secrets but ``max_tokens`` and
    ``secret_name`` are not.
    """
    words = tuple(w for w in _SEPARATORS.split(_CAMEL.sub("_", key).lower()) if w)
    compact = "".join(words)
    return any(
        (len(words) >= len(term) and words[-len(term) :] == term)
        or (len(term) == 1 and len(term[0]) >= 6 and compact.endswith(term[0]))
        for term in _SECRET_KEY_TERMS
    )


# -- the streaming reader ----------------------------------------------------------

# Chunks redacted ahead of the reader: the next chunk is redacted (Hyperscan
# runs without the GIL) while the caller hashes and writes the previous one.
_PREFETCH = 1
_POLL_SECONDS = 0.1


class _Chunker:
    """Reads ``source`` a chunk at a time and redacts it, carrying the overlap window."""

    def __init__(self, redactor: Redactor, source: IO[bytes], redactions: list[Redaction]) -> None:
        self._r = redactor
        self._source = source
        # bytes kept after a chunk: this many trailing bytes are undecided
        self._hold = redactor.max_match + redactor.context
        self._carry = b""  # context (already emitted) + undecided bytes
        self._ctx = 0  # len of the already-emitted context prefix of _carry
        self._line = 1  # line number at _carry[_ctx]
        self._redactions = redactions

    def step(self) -> tuple[memoryview, bool]:
        """The next piece of redacted output, and whether it is the last."""
        parts: list[bytes] = []
        got = 0
        final = False
        while got < self._r.chunk_size:  # gather a whole chunk, even from a pipe
            data = self._source.read(self._r.chunk_size - got)
            if not data:
                final = True
                break
            parts.append(data)
            got += len(data)
        buf = b"".join([self._carry, *parts])
        start = self._ctx
        limit = len(buf) if final else max(start, len(buf) - self._hold)
        pieces, emitted, last_end, line = self._r._scan(buf, start, limit, self._line, self._redactions, None)
        cut = len(buf) if final else max(limit, last_end)
        if pieces:
            pieces.append(buf[emitted:cut])
            out = memoryview(b"".join(pieces))
        else:  # nothing redacted: the chunk itself, not a copy
            out = memoryview(buf)[emitted:cut]
        self._line = line
        if final:
            self._carry = b""
            self._ctx = 0
            if self._redactions:
                n, rules = len(self._redactions), _rule_names(self._redactions)
                logger.debug("redacted %d secret(s) in a stream (rules: %s)", n, rules)
        else:
            keep_from = max(0, cut - self._r.context)
            self._carry = buf[keep_from:]
            self._ctx = cut - keep_from
        return out, final


class _Prefetcher:
    """Runs a :class:`_Chunker` in a thread, a bounded number of chunks ahead.

    It holds no reference to the reader, so a reader dropped without close()
    is still finalised (and its close() stops this thread).
    """

    def __init__(self, chunker: _Chunker) -> None:
        self._chunker = chunker
        self._queue: queue.Queue[tuple[memoryview, bool] | BaseException] = queue.Queue(maxsize=_PREFETCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="affidavit-redact", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: tuple[memoryview, bool] | BaseException
        final = False
        while not final and not self._stop.is_set():
            try:
                item = self._chunker.step()
                final = item[1]
            except BaseException as e:  # handed to the reader, which raises it
                item, final = e, True
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    continue

    def get(self) -> tuple[memoryview, bool]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stop.set()
        if not sys.is_finalizing():  # at interpreter exit a daemon thread may never run again
            self._thread.join()


class _RedactingRaw(io.RawIOBase):
    """The raw stream behind :class:`RedactingReader`: redacted chunks, one after another.

    The first chunk is redacted in the caller's thread (a small artefact never
    starts a thread); later ones by a :class:`_Prefetcher`.
    """

    def __init__(self, redactor: Redactor, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self.redactions: list[Redaction] = []
        self._chunker = _Chunker(redactor, source, self.redactions)
        self._prefetcher: _Prefetcher | None = None
        self._out = memoryview(b"")
        self._done = False
        self._error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on a closed redacting reader")
        if self._error is not None:
            raise self._error
        with memoryview(buffer) as view, view.cast("B") as target:
            while not self._out and not self._done:
                self._next()
            n = min(len(target), len(self._out))
            target[:n] = self._out[:n]
            self._out = self._out[n:]
            return n

    def _next(self) -> None:
        try:
            if self._prefetcher is None:
                out, final = self._chunker.step()
                if not final:
                    self._prefetcher = _Prefetcher(self._chunker)
            else:
                out, final = self._prefetcher.get()
        except Exception as e:  # the source failed: so will every later read
            self._error = e
            raise
        self._out = out
        self._done = final

    def close(self) -> None:
        if not self.closed:
            try:
                if self._prefetcher is not None:
                    self._prefetcher.stop()
            finally:
                try:
                    self._source.close()
                finally:
                    self._out = memoryview(b"")
                    super().close()


class RedactingReader(io.BufferedReader):
    """A buffered binary reader of redacted bytes; ``redactions`` is complete after EOF."""

    def __init__(self, raw: _RedactingRaw) -> None:
        super().__init__(raw, buffer_size=DEFAULT_CHUNK_SIZE)
        self._redacting_raw = raw

    @property
    def redactions(self) -> list[Redaction]:
        return self._redacting_raw.redactions
