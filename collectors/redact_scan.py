"""The redactor's fast path: every position of a chunk where some rule may match.

Each rule's :class:`~affidavit.collectors.redact_rules.Prefilter` matches a
prefix of the rule's matches. Hyperscan scans the chunk once for all of them
(a SIMD pass, about 3 GB/s on text, without the GIL) and reports where matches
*end*; a match ending at ``e`` began ``min_width`` to ``max_width`` bytes
before. A window of a few possible starts is handed on as it is; a wider one is
scanned again, reversed, with the reversed prefilters, where an end is a start.
The result is a sorted superset of the positions where some rule matches,
usually empty; the redactor runs its exact regex only there.

Hyperscan's scratch space cannot be shared between threads, so each thread
gets its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import hyperscan

from affidavit.collectors.redact_rules import Prefilter, Rule, rule_prefilter

logger = logging.getLogger(__name__)

# A window of possible starts at most this wide is passed on position by
# position rather than scanned in reverse.
_NARROW_WINDOW = 4
# Appended to every buffer Hyperscan scans. The Vectorscan build in the
# hyperscan wheel can miss a match that ends on the last byte of the buffer
# (VectorCamp/vectorscan#358); with a byte after the data, no match of ours
# ends there. A match that runs into the padding is at worst one more candidate.
_PAD = b"\n"


class Scanner:
    """Finds, with Hyperscan, every position of a chunk where some rule's prefilter matches."""

    def __init__(self, prefilters: Sequence[Prefilter]) -> None:
        self._forward = _database([p.forward for p in prefilters])
        self._backward = _database([p.backward for p in prefilters])
        self._min = [p.min_width for p in prefilters]
        self._max = [p.max_width for p in prefilters]
        self._scratch = threading.local()  # Hyperscan's scratch space is per thread

    @classmethod
    def build(cls, rules: Sequence[Rule]) -> Scanner | None:
        """The scanner for these rules; None (with a warning) if one has no usable prefilter."""
        prefilters = [rule_prefilter(r) for r in rules]
        slow = [r.name for r, p in zip(rules, prefilters, strict=True) if p is None]
        try:
            if not slow:
                return cls([p for p in prefilters if p is not None])
        except hyperscan.error as e:
            slow = [f"all ({e})"]
        logger.warning(
            "redaction rules without a fast prefilter (%s): every position is tried, at a few MiB/s; "
            "give each rule a literal start or a narrow character class",
            ", ".join(slow),
        )
        return None

    def _scratches(self) -> tuple[hyperscan.Scratch, hyperscan.Scratch]:
        pair: tuple[hyperscan.Scratch, hyperscan.Scratch] | None = getattr(self._scratch, "pair", None)
        if pair is None:
            pair = (hyperscan.Scratch(self._forward), hyperscan.Scratch(self._backward))
            self._scratch.pair = pair
        return pair

    def candidates(self, buf: bytes, start: int, limit: int) -> list[int]:
        """Sorted positions in [start, limit), among them every one where a prefilter matches."""
        forward, backward = self._scratches()
        ends: list[tuple[int, int]] = []

        def on_end(rule: int, _start: int, end: int, _flags: int, _context: object) -> None:
            ends.append((rule, end))

        self._forward.scan(b"".join([memoryview(buf)[start:], _PAD]), match_event_handler=on_end, scratch=forward)
        found: set[int] = set()
        windows: list[tuple[int, int, int]] = []
        for rule, end in ends:  # a match ending here began max..min width before
            lo = max(start, start + end - self._max[rule])
            hi = min(limit - 1, start + end - self._min[rule])
            if hi - lo < _NARROW_WINDOW:
                found.update(range(lo, hi + 1))
            else:
                windows.append((lo, hi, self._max[rule]))

        def on_start(rule: int, _start: int, end: int, _flags: int, stop: object) -> None:
            assert isinstance(stop, int)  # the context given to scan()
            found.add(stop - end)  # an end in the reversed window is a start

        for lo, hi, reach in _merge(windows):
            stop = min(len(buf), hi + reach)  # every match starting by hi ends by here
            window = buf[lo:stop][::-1] + _PAD
            self._backward.scan(window, match_event_handler=on_start, context=stop, scratch=backward)
        return sorted(c for c in found if start <= c < limit)


def _database(patterns: Sequence[bytes]) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=list(patterns), ids=list(range(len(patterns))), elements=len(patterns), flags=0)
    return db


def _merge(windows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Windows (lo, hi, reach) whose scans (lo to hi + reach) overlap, merged; sorted."""
    merged: list[tuple[int, int, int]] = []
    for lo, hi, reach in sorted(windows):
        if merged and lo <= merged[-1][1] + merged[-1][2]:
            plo, phi, preach = merged[-1]
            end = max(phi + preach, hi + reach)
            merged[-1] = (plo, max(phi, hi), end - max(phi, hi))
        else:
            merged.append((lo, hi, reach))
    return merged
