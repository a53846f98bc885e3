"""Redaction rules, and what the redactor works out from them before scanning.

A :class:`Rule` is a named regular expression over bytes; the part it replaces
(a group, so that for ``password=...`` only the value goes) becomes
``[REDACTED:<rule name>]``. From each rule's parsed pattern this module derives:

* its bounded width (:func:`rule_width`), which makes chunked streaming exact;
* a *prefilter* (:func:`rule_prefilter`): Hyperscan patterns, forwards and
  reversed, for a prefix of the rule, with look-arounds and anchors dropped and
  case folding spelled out; it matches at least wherever the rule does, so the
  scanner (:mod:`affidavit.collectors.redact_scan`) can look for all rules in
  one pass and leave the exact Python regex only the few positions it finds;
* the combined Python regex that decides (:func:`combine`).

Python's own parser (``re._parser``) is the one place that knows a pattern's
structure; it is private, hence typed as ``Any`` and every result is checked.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# A rule that can match more than this is refused: the overlap window carried
# between chunks is as long as the longest match.
MAX_RULE_WIDTH = 256 * 1024


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


def _parser() -> Any:
    return importlib.import_module("re._parser")


# -- width -------------------------------------------------------------------------


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


# -- prefilter -----------------------------------------------------------------------

# The largest repeat count a prefilter keeps (counts multiply when nested): a
# longer repeat ends the prefilter after its first repetitions.
_MAX_COUNT = 256
# A prefilter is worth it only if it rarely matches: the estimated chance that
# it matches at a position of ordinary text must be at most this. Otherwise
# running the exact regex at every candidate costs more than a full scan.
MAX_CANDIDATE_RATE = 1e-3


def _bits(values: Iterable[int]) -> int:
    """A byte set as a 256-bit mask."""
    mask = 0
    for c in values:
        mask |= 1 << c
    return mask


_ALL = (1 << 256) - 1
# Byte frequencies for the estimate: text is mostly printable ASCII.
_TEXTLIKE = _bits((*range(0x20, 0x7F), 0x09, 0x0A, 0x0D))
_TEXT_SHARE = 0.95
_LETTERS = tuple(range(ord("A"), ord("Z") + 1))
_SPACE = _bits(b" \t\n\r\x0b\x0c")
_DIGIT = _bits(b"0123456789")
_WORD = _DIGIT | _bits(b"_") | _bits(_LETTERS) | _bits(c + 32 for c in _LETTERS)
_CATEGORIES = {
    "CATEGORY_DIGIT": _DIGIT,
    "CATEGORY_NOT_DIGIT": _ALL ^ _DIGIT,
    "CATEGORY_SPACE": _SPACE,
    "CATEGORY_NOT_SPACE": _ALL ^ _SPACE,
    "CATEGORY_WORD": _WORD,
    "CATEGORY_NOT_WORD": _ALL ^ _WORD,
}


@dataclass(frozen=True)
class Prefilter:
    """What the fast scanner looks for on behalf of one rule.

    ``forward`` (a Hyperscan pattern over bytes) matches a prefix of every
    match of the rule, so it matches at least wherever the rule does; each of
    its matches is ``min_width`` to ``max_width`` bytes long. ``backward`` is
    the same pattern reversed (it finds exact start positions by scanning a
    reversed window). ``rate`` estimates how often it matches ordinary text.
    """

    forward: bytes
    backward: bytes
    min_width: int
    max_width: int
    rate: float


class _Piece(NamedTuple):
    fwd: bytes
    bwd: bytes
    rate: float
    lo: int
    hi: int
    complete: bool  # False: only a prefix was translated, nothing may follow it


_NOTHING = _Piece(b"", b"", 1.0, 0, 0, False)


def _fold(mask: int) -> int:
    """ASCII case folding, as Python's re does for bytes patterns with IGNORECASE."""
    for upper in _LETTERS:
        if mask >> upper & 1 or mask >> (upper + 32) & 1:
            mask |= 1 << upper | 1 << (upper + 32)
    return mask


def _share(mask: int) -> float:
    """Estimated frequency, in ordinary text, of a byte in the set."""
    text = (mask & _TEXTLIKE).bit_count()
    other = (mask & ~_TEXTLIKE).bit_count()
    return text * _TEXT_SHARE / _TEXTLIKE.bit_count() + other * (1 - _TEXT_SHARE) / (256 - _TEXTLIKE.bit_count())


def _esc(c: int) -> bytes:
    return bytes([c]) if bytes([c]).isalnum() else b"\\x%02x" % c


def _byte_class(mask: int) -> bytes:
    """A pattern matching exactly the bytes in ``mask``."""
    if mask.bit_count() == 1:
        return _esc(mask.bit_length() - 1)
    if not mask:
        return rb"[^\x00-\xff]"
    runs: list[bytes] = []
    c = 0
    while c < 256:
        if mask >> c & 1:
            end = c
            while end < 255 and mask >> (end + 1) & 1:
                end += 1
            runs.append(_esc(c) if end == c else _esc(c) + b"-" + _esc(end))
            c = end + 1
        else:
            c += 1
    return b"[" + b"".join(runs) + b"]"


class _Translator:
    """Python regex parse tree -> Hyperscan patterns for a prefix of it.

    Look-arounds and anchors are dropped (that only adds positions), case
    folding is spelled out as byte classes, and the prefix stops (``complete``
    False) after a repeat longer than the count budget, or at a variable
    repeat at the very end, cut to its minimum (which spares the scanner one
    report per possible length). Every match of the rule begins with a match
    of the prefix, so the prefix matches at every position where the rule does.
    """

    def __init__(self, parser: Any) -> None:
        self.p = parser
        self.zero_width = {parser.ASSERT, parser.ASSERT_NOT, parser.AT}
        self.repeats = {parser.MAX_REPEAT, parser.MIN_REPEAT, getattr(parser, "POSSESSIVE_REPEAT", None)}
        self.categories = {getattr(parser, name): mask for name, mask in _CATEGORIES.items()}

    def seq(self, ops: Any, flags: int, budget: int, tail: bool) -> _Piece:
        """``budget``: the largest repeat count allowed here; ``tail``: nothing follows."""
        items = [(op, av) for op, av in ops if op not in self.zero_width]
        fwd: list[bytes] = []
        bwd: list[bytes] = []
        rate, lo, hi = 1.0, 0, 0
        for k, (op, av) in enumerate(items):
            piece = self._item(op, av, flags, budget, tail and k == len(items) - 1)
            fwd.append(piece.fwd)
            bwd.append(piece.bwd)
            rate, lo, hi = rate * piece.rate, lo + piece.lo, hi + piece.hi
            if not piece.complete:
                return _Piece(b"".join(fwd), b"".join(reversed(bwd)), rate, lo, hi, False)
        return _Piece(b"".join(fwd), b"".join(reversed(bwd)), rate, lo, hi, True)

    def _item(self, op: Any, av: Any, flags: int, budget: int, tail: bool) -> _Piece:
        p = self.p
        if op in (p.LITERAL, p.NOT_LITERAL, p.ANY, p.IN):
            mask = self._mask(op, av, flags)
            cls = _byte_class(mask)
            return _Piece(cls, cls, _share(mask), 1, 1, True)
        if op is p.SUBPATTERN or op is getattr(p, "ATOMIC_GROUP", None):
            sub = av[-1] if op is p.SUBPATTERN else av
            inner = (flags | av[1]) & ~av[2] if op is p.SUBPATTERN else flags
            got = self.seq(sub.data, inner, budget, tail)
            return got._replace(fwd=b"(?:" + got.fwd + b")", bwd=b"(?:" + got.bwd + b")")
        if op is p.BRANCH:
            alts = [self.seq(sub.data, flags, budget, tail) for sub in av[1]]
            return _Piece(
                b"(?:" + b"|".join(a.fwd for a in alts) + b")",
                b"(?:" + b"|".join(a.bwd for a in alts) + b")",
                min(1.0, sum(a.rate for a in alts)),
                min(a.lo for a in alts),
                max(a.hi for a in alts),
                all(a.complete for a in alts),
            )
        if op in self.repeats:
            return self._repeat(int(av[0]), int(av[1]), av[2], flags, budget, tail)
        raise ValueError(f"unsupported construct {op}")

    def _mask(self, op: Any, av: Any, flags: int) -> int:
        p = self.p
        if op is p.ANY:
            return _ALL if flags & re.DOTALL else _ALL ^ (1 << 10)
        if op is p.IN:
            mask, negate = 0, False
            for item, value in av:
                if item is p.NEGATE:
                    negate = True
                elif item is p.LITERAL:
                    mask |= 1 << value
                elif item is p.RANGE:
                    mask |= ((1 << (value[1] + 1)) - 1) ^ ((1 << value[0]) - 1)
                elif item is p.CATEGORY and value in self.categories:
                    mask |= self.categories[value]
                else:
                    raise ValueError(f"unsupported character class item {item}")
        else:
            mask, negate = 1 << av, op is p.NOT_LITERAL
        if flags & re.IGNORECASE:
            mask = _fold(mask)
        return _ALL ^ mask if negate else mask

    def _repeat(self, lo: int, hi: int, sub: Any, flags: int, budget: int, tail: bool) -> _Piece:
        whole = hi <= budget and not (tail and lo < hi)
        n = hi if whole else min(lo, budget)  # repetitions kept
        if n == 0:
            return _NOTHING._replace(complete=whole)
        inner = self.seq(sub.data, flags, budget // n, False)
        if not inner.complete:  # one (partial) repetition begins every match
            return inner if lo else _NOTHING
        least = lo if whole else n
        count = b"{%d}" % n if least == n else b"{%d,%d}" % (least, n)
        return _Piece(
            b"(?:" + inner.fwd + b")" + count,
            b"(?:" + inner.bwd + b")" + count,
            inner.rate**least,
            inner.lo * least,
            inner.hi * n,
            whole,
        )


def rule_prefilter(rule: Rule) -> Prefilter | None:
    """The rule's prefilter; None if it has no selective one (then every position is tried).

    Patterns with ``re.LOCALE`` (locale-dependent case folding) get none.
    """
    parser = _parser()
    tree = parser.parse(rule.pattern.pattern, rule.pattern.flags)
    if tree.state.flags & re.LOCALE:
        return None
    try:
        got = _Translator(parser).seq(tree.data, tree.state.flags, _MAX_COUNT, True)
    except ValueError:
        return None
    if got.rate > MAX_CANDIDATE_RATE or got.lo == 0:
        return None
    return Prefilter(got.fwd, got.bwd, got.lo, got.hi, got.rate)


# -- the combined Python regex ------------------------------------------------------

_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def combine(rules: Sequence[Rule]) -> tuple[re.Pattern[bytes], list[int]]:
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
