"""What verifying one bundle may cost: one limits model, and the JSON guard that enforces its depth limit.

An auditor opens bundles from outside, so every dimension a hostile bundle could
inflate is bounded, with defaults far above any real bundle: the number of
entries, the expanded size, the size of each member the verifier reads into
memory (and of all of them together), the nesting depth of every JSON document,
and the length of a transparency-log proof. Going over a limit is a Failure that
names it (the bundle is INVALID), never an exception or a runaway.

``json_problem`` looks at a JSON text *before* it is parsed: nesting deeper than
the limit (``json.loads`` would recurse, and a deep value breaks ``repr`` and
``==`` later) and escaped unpaired surrogates (valid JSON grammar, but not text:
printing one raises UnicodeEncodeError). It is linear in the text's size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from affidavit.errors import UsageError

DEFAULT_MAX_PROOF_HASHES = 64  # = tlog_entry.MAX_PROOF_HASHES: a tree of fewer than 2**63 leaves never needs more

_STRING = re.compile(rb'"[^"]*"?')  # a JSON string, once its escaped quotes and backslashes are gone
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'[]{}"')
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # an escaped UTF-16 surrogate, \uD800-\uDFFF
_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")  # a high one, then a low one
_OPEN = frozenset(b"[{")
_CHUNK = 1 << 16
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class VerifyLimits:
    """Limits on one verification; every field is a count or a byte size (see the module docstring)."""

    max_members: int = 1_000_000  # entries in the archive or directory tree: files, directories, links
    max_total_bytes: int = 64 << 30  # expanded size: the sum of all members' sizes (and tar extension headers')
    max_metadata_bytes: int = 64 << 20  # one member the verifier reads (JSON, signatures, log, README)
    max_json_depth: int = 64  # nesting of arrays and objects in any JSON document (a bundle's are < 10)
    max_proof_hashes: int = DEFAULT_MAX_PROOF_HASHES  # hashes in one inclusion proof
    max_metadata_total_bytes: int = 1 << 30  # all the members the verifier holds in memory together

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name == "max_proof_hashes" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                flag = f" ({FLAGS[f.name]})" if f.name in FLAGS else ""
                raise UsageError(f"limit {f.name}{flag} must be an integer of at least {least}, not {value!r}")


# verify's flags, by the field each sets
FLAGS: Mapping[str, str] = MappingProxyType({
    "max_members": "--max-members", "max_total_bytes": "--max-bytes", "max_metadata_bytes": "--max-json-bytes",
    "max_json_depth": "--max-json-depth", "max_proof_hashes": "--max-proof-hashes"})


def limits_from_options(
    *,
    max_members: int | None = None,
    max_bytes: int | None = None,
    max_json_bytes: int | None = None,
    max_json_depth: int | None = None,
    max_proof_hashes: int | None = None,
) -> VerifyLimits:
    """The limits from ``verify``'s flags (None: the default); UsageError for a value out of range.

    ``--max-members``, ``--max-bytes`` (expanded size), ``--max-json-bytes`` (one
    member the verifier reads), ``--max-json-depth``, ``--max-proof-hashes``.
    """
    given = {"max_members": max_members, "max_total_bytes": max_bytes, "max_metadata_bytes": max_json_bytes,
             "max_json_depth": max_json_depth, "max_proof_hashes": max_proof_hashes}
    return VerifyLimits(**{k: v for k, v in given.items() if v is not None})


def parse_size(text: str) -> int:
    """A byte size from a flag: ``1048576``, ``64K``, ``512MiB``, ``64G`` (powers of 1024); UsageError if unreadable."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a size", hint="give a number of bytes, optionally with K, M, G or T")
    return int(match.group(1)) << (10 * " kmgt".index((match.group(2) or " ").lower()))


def json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether arrays/objects in the JSON text ``data`` nest deeper than ``max_depth`` (brackets in strings ignored)."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # cannot nest deeper than it has openers
    if b"\\" in data:  # escaped backslashes and quotes, paired from the left as JSON reads them
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # brackets and quotes only; then strings go: first the many with no bracket inside (two adjacent quotes
    # never have a bracket between them, so dropping them keeps every bracket in or out of its string)
    skeleton = data.translate(None, _NOT_STRUCTURAL).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    depth = 0
    for start in range(0, len(skeleton), _CHUNK):
        chunk = skeleton[start:start + _CHUNK]
        opens = chunk.count(b"[") + chunk.count(b"{")
        if depth + opens <= max_depth:  # this chunk cannot cross the limit: skip it whole
            depth += 2 * opens - len(chunk)
            continue
        for byte in chunk:
            if byte in _OPEN:
                depth += 1
                if depth > max_depth:
                    return True
            else:
                depth -= 1
    return False


def unpaired_surrogate(data: bytes) -> bool:
    """Whether the JSON text ``data`` escapes a UTF-16 surrogate that is not half of a pair (``"\\ud800"``)."""
    if _SURROGATE.search(data) is None:
        return False
    # without the escaped backslashes every \u left is a real escape; without the pairs, any surrogate left is alone
    return _SURROGATE.search(_PAIR.sub(b"", data.replace(b"\\\\", b""))) is not None


def json_problem(data: bytes, max_depth: int) -> str | None:
    """Why the JSON text ``data`` must not be parsed, or None (it may still not be valid JSON)."""
    if json_depth_exceeds(data, max_depth):
        return f"JSON nested deeper than {max_depth} levels (limit)"
    if unpaired_surrogate(data):
        return "a JSON string escapes an unpaired surrogate (\\ud800-\\udfff): not valid Unicode text"
    return None
