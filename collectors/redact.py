"""Secret redaction: every artefact goes through here before it is hashed.

A :class:`Rule` is a named regular expression over bytes; the part it replaces
(a group, so that for ``password=...`` only the value goes) becomes
``[REDACTED:<rule name>]``. Every rule has a bounded maximum match length, which
is what makes :meth:`Redactor.redact_stream` exact on inputs of any size: it
scans fixed-size chunks and carries an overlap window at least as long as the
longest possible match (plus the look-around context), so a secret split across
a chunk boundary is still caught and never emitted partially.

Speed: all rules form one alternation regex, but Python's engine tries every
alternative at every position (about 4 MiB/s). So each rule's literal
beginnings ("anchors", found from the parsed pattern: ``akia``, ``ghp_``,
``-----begin``...) are located with ``bytes.find`` on a lowercased copy of the
chunk, and the combined regex runs only at those positions; the result is the
same as a full scan (leftmost first, no overlaps) at about 70 MiB/s on clean
text. A rule without a literal beginning falls back to the full scan.

A :class:`~affidavit.collectors.base.Redaction` records where and by which rule,
never the secret itself; nothing here logs or raises with matched text in it.
"""

from __future__ import annotations

import importlib
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from affidavit.collectors.base import Redaction

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1 << 20
# A rule that can match more than this is refused: the overlap window carried
# between chunks is as long as the longest match.
MAX_RULE_WIDTH = 256 * 1024
# Extra bytes kept on both sides of the window for zero-width assertions that
# look one byte beyond the match (\b, $) on top of the measured look-arounds.
_ASSERT_SLACK = 8

SECRET_FIELD_RULE = "secret-field"
SECRET_FIELD_VALUE = "[REDACTED:secret-field]"


@dataclass(frozen=True)
class Rule:
    """A named secret pattern; ``group`` is the part replaced (0: the whole match)."""

    name: str
    pattern: re.Pattern[bytes]
    group: int = 0

    def __post_init__(self) -> None:
        if not self.name or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.name):
            raise ValueError(f"redaction rule name {self.name!r}: use lowercase letters, digits and '-'")
        if not isinstance(self.pattern.pattern, bytes):
            raise ValueError(f"redaction rule {self.name!r}: the pattern must be a bytes pattern")
        if not 0 <= self.group <= self.pattern.groups:
            raise ValueError(
                f"redaction rule {self.name!r}: group {self.group} does not exist "
                f"(the pattern has {self.pattern.groups})"
            )
        if self.pattern.groupindex:
            raise ValueError(f"redaction rule {self.name!r}: named groups are not supported, use numbered ones")

    @property
    def replacement(self) -> bytes:
        return b"[REDACTED:" + self.name.encode("ascii") + b"]"


def _rule(name: str, pattern: bytes, group: int = 0) -> Rule:
    return Rule(name, re.compile(pattern), group)


# Value characters of a key=value secret: quoted values may hold spaces.
_ASSIGNED_VALUE = rb"""((?<=["'])[^"'\r\n]{8,256}(?=["'])|[^\s"'`]{8,256})"""
_ASSIGN = rb"""["']?[ \t]{0,5}[:=][ \t]{0,5}["']?"""

# Order matters only between rules that match at the same position: the
# earlier rule wins. Specific formats come first, the generic assignment last.
DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(
        "private-key",
        rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        # a complete block, or (truncated input) everything base64/PEM-header-like after BEGIN
        rb"(?:[\s\S]{0,16384}?-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,.-]{0,16384})",
    ),
    _rule("aws-access-key-id", rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    _rule(
        "aws-secret-access-key",
        rb"(?i:aws[_-]?secret[_-]?(?:access[_-]?)?key|secret[_-]?access[_-]?key)"
        + _ASSIGN
        + rb"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        1,
    ),
    _rule(
        "github-token",
        rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})(?![A-Za-z0-9_])",
    ),
    _rule("gitlab-token", rb"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_.-]{20,250}"),
    _rule("slack-token", rb"(?<![A-Za-z0-9_-])xox[abprs]-[A-Za-z0-9-]{10,250}"),
    _rule("google-api-key", rb"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    _rule("stripe-key", rb"(?<![A-Za-z0-9_])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}(?![0-9A-Za-z])"),
    _rule(
        "jwt",
        rb"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,8192}"
        rb"(?![A-Za-z0-9_-])",
    ),
    # scheme://user:password@host — only the password is replaced
    _rule(
        "url-password",
        rb"(?<=[A-Za-z0-9+.-])://[^\s:/@?#\[\]\"'<>]{0,256}:([^\s/@?#\"'<>]{1,256})@",
        1,
    ),
    _rule(
        "secret-assignment",
        rb"(?i:passwd|password|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        + _ASSIGN
        + rb"(?!\$\{)"  # ${ENV_VAR} references are not secrets
        + _ASSIGNED_VALUE,
        1,
    ),
)


# -- measuring rules -----------------------------------------------------------


def _parser() -> Any:
    # The standard library's regex parser: the one place that knows a pattern's
    # width. Private, hence typed as Any and guarded by the checks below.
    return importlib.import_module("re._parser")


def _lookaround_width(tree: Any, parser: Any) -> int:
    """The summed maximum width of every look-around in a parsed pattern."""
    total = 0
    for op, av in tree.data:
        if op in (parser.ASSERT, parser.ASSERT_NOT):
            total += av[1].getwidth()[1] + _lookaround_width(av[1], parser)
        elif op is parser.SUBPATTERN:
            total += _lookaround_width(av[-1], parser)
        elif op is parser.BRANCH:
            total += sum(_lookaround_width(sub, parser) for sub in av[1])
        elif op in (parser.MAX_REPEAT, parser.MIN_REPEAT, getattr(parser, "POSSESSIVE_REPEAT", None)):
            total += _lookaround_width(av[2], parser)
        elif op is getattr(parser, "ATOMIC_GROUP", None):
            total += _lookaround_width(av, parser)
        elif op in (parser.GROUPREF, parser.GROUPREF_EXISTS):
            raise ValueError("back-references are not supported")
    return total


def rule_width(rule: Rule) -> tuple[int, int]:
    """(maximum match length, look-around context) in bytes; ValueError if unbounded."""
    parser = _parser()
    try:
        tree = parser.parse(rule.pattern.pattern, rule.pattern.flags)
        lo, hi = tree.getwidth()
        around = _lookaround_width(tree, parser)
    except ValueError as e:
        raise ValueError(f"redaction rule {rule.name!r}: {e}") from None
    if lo == 0:
        raise ValueError(f"redaction rule {rule.name!r} can match the empty string")
    if hi > MAX_RULE_WIDTH or around > MAX_RULE_WIDTH:
        raise ValueError(
            f"redaction rule {rule.name!r} has no bounded maximum match length of at most "
            f"{MAX_RULE_WIDTH} bytes; use bounded quantifiers such as {{0,256}}"
        )
    return int(hi), int(around)


_ANCHOR_LEN = 4  # anchors are cut to this many bytes: shorter ones mean fewer passes
_MAX_EXPANSION = 16


def _expand(ops: Any, prefixes: list[bytes], parser: Any) -> tuple[list[bytes], bool]:
    """Extend literal prefixes through ``ops``; the flag says whether all of ops was consumed."""
    for op, av in ops:
        if all(len(p) >= _ANCHOR_LEN for p in prefixes):
            return prefixes, False
        if op in (parser.ASSERT, parser.ASSERT_NOT, parser.AT):
            continue  # zero width
        if op is parser.LITERAL:
            prefixes = [p + bytes([av]) for p in prefixes]
            continue
        if op is parser.IN and all(o is parser.LITERAL for o, _ in av) and len(av) * len(prefixes) <= _MAX_EXPANSION:
            prefixes = [p + bytes([c]) for p in prefixes for _, c in av]
            continue
        if op is parser.SUBPATTERN:
            branches = [av[-1].data]
        elif op is parser.BRANCH:
            branches = [b.data for b in av[1]]
        else:
            return prefixes, False
        extended: list[bytes] = []
        complete = True
        for branch in branches:
            got, done = _expand(branch, prefixes, parser)
            extended.extend(got)
            complete = complete and done
        if len(extended) > _MAX_EXPANSION:
            return prefixes, False
        prefixes = extended
        if not complete:
            return prefixes, False
    return prefixes, True


def rule_anchors(rule: Rule) -> frozenset[bytes] | None:
    """Lowercase literals one of which every match starts with; None if the rule has none.

    The fast path finds candidate positions with ``bytes.find`` over a
    lowercased copy of the chunk and runs the combined regex only there.
    """
    parser = _parser()
    prefixes, _ = _expand(parser.parse(rule.pattern.pattern, rule.pattern.flags).data, [b""], parser)
    if any(len(p) < 2 for p in prefixes):
        return None
    return frozenset(p[:_ANCHOR_LEN].lower() for p in prefixes)


def _merge_anchors(anchors: Iterable[bytes]) -> tuple[bytes, ...]:
    """Fewer, shorter anchors (each is one pass over the chunk): anchors that share
    a 3-byte head (2 or more) or a 2-byte head (3 or more) are searched by the
    head; an anchor that another is a prefix of is dropped."""
    merged = set(anchors)
    for width, least in ((3, 2), (2, 3)):
        groups: dict[bytes, set[bytes]] = {}
        for a in merged:
            groups.setdefault(a[:width], set()).add(a)
        merged = {head if len(group) >= least else a for head, group in groups.items() for a in group}
    return tuple(sorted(a for a in merged if not any(b != a and a.startswith(b) for b in merged)))


_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def _combine(rules: Sequence[Rule]) -> tuple[re.Pattern[bytes], list[int]]:
    """One alternation over every rule; returns it and each rule's group offset."""
    parts: list[bytes] = []
    offsets: list[int] = []
    next_group = 1
    for i, rule in enumerate(rules):
        flags = "".join(c for f, c in _INLINE_FLAGS if rule.pattern.flags & f)
        body = rule.pattern.pattern
        if flags:
            body = b"(?" + flags.encode("ascii") + b":" + body + b")"
        parts.append(b"(?P<r" + str(i).encode("ascii") + b">" + body + b")")
        offsets.append(next_group)
        next_group += 1 + rule.pattern.groups
    return re.compile(b"|".join(parts)), offsets


# -- the redactor ----------------------------------------------------------------


class Redactor:
    """Applies a set of rules to documents, byte strings and streams."""

    def __init__(self, rules: Sequence[Rule] = DEFAULT_RULES, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
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
        self._combined, self._offsets = _combine(self.rules)
        anchors = [rule_anchors(r) for r in self.rules]
        self._anchors: tuple[bytes, ...] | None = (
            None if any(a is None for a in anchors) else _merge_anchors(x for a in anchors if a for x in a)
        )
        self._replacements = [r.replacement for r in self.rules]

    @property
    def anchored(self) -> bool:
        """Does every rule start with a literal, so that the fast candidate search is used?"""
        return self._anchors is not None

    # -- bytes -------------------------------------------------------------

    def _matches(self, buf: bytes, start: int, limit: int) -> Iterator[re.Match[bytes]]:
        """Leftmost-first, non-overlapping matches of the combined regex starting in [start, limit)."""
        if self._anchors is None:  # a rule without a literal start: scan every position
            for m in self._combined.finditer(buf, start):
                if m.start() >= limit:
                    return
                yield m
            return
        low = buf.lower()
        hits: set[int] = set()
        for a in self._anchors:
            end = limit + len(a) - 1
            i = low.find(a, start, end)
            while i >= 0:
                hits.add(i)
                i = low.find(a, i + 1, end)
        last_end = start
        for c in sorted(hits):
            if c < last_end:
                continue
            found = self._combined.match(buf, c)
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
                if item is not None and is_secret_key(str(key)):
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


class _RedactingRaw(io.RawIOBase):
    """The chunked redaction engine behind :class:`RedactingReader`."""

    def __init__(self, redactor: Redactor, source: IO[bytes]) -> None:
        super().__init__()
        self._r = redactor
        self._source = source
        # bytes kept after a chunk: this many trailing bytes are undecided
        self._hold = redactor.max_match + redactor.context
        self._carry = b""  # context (already emitted) + undecided bytes
        self._ctx = 0  # len of the already-emitted context prefix of _carry
        self._line = 1  # line number at _carry[_ctx]
        self._out = memoryview(b"")
        self._done = False
        self.redactions: list[Redaction] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on a closed redacting reader")
        with memoryview(buffer) as view, view.cast("B") as target:
            while not self._out and not self._done:
                self._step()
            n = min(len(target), len(self._out))
            target[:n] = self._out[:n]
            self._out = self._out[n:]
            return n

    def _step(self) -> None:
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
        pieces, emitted, last_end, line = self._r._scan(buf, start, limit, self._line, self.redactions, None)
        cut = len(buf) if final else max(limit, last_end)
        pieces.append(buf[emitted:cut])
        self._out = memoryview(b"".join(pieces))
        self._line = line
        if final:
            self._done = True
            self._carry = b""
            self._ctx = 0
            if self.redactions:
                n, rules = len(self.redactions), _rule_names(self.redactions)
                logger.debug("redacted %d secret(s) in a stream (rules: %s)", n, rules)
            return
        keep_from = max(0, cut - self._r.context)
        self._carry = buf[keep_from:]
        self._ctx = cut - keep_from

    def close(self) -> None:
        if not self.closed:
            try:
                self._source.close()
            finally:
                self._out = memoryview(b"")
                self._carry = b""
                super().close()


class RedactingReader(io.BufferedReader):
    """A buffered binary reader of redacted bytes; ``redactions`` is complete after EOF."""

    def __init__(self, raw: _RedactingRaw) -> None:
        super().__init__(raw, buffer_size=DEFAULT_CHUNK_SIZE)
        self._redacting_raw = raw

    @property
    def redactions(self) -> list[Redaction]:
        return self._redacting_raw.redactions
