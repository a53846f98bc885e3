"""in-toto Statement v1: the signed payload, one per run and one per exported bundle."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
EVIDENCE_PREDICATE = "https://affidavit.dev/attestation/evidence/v1"
BUNDLE_PREDICATE = "https://affidavit.dev/attestation/bundle/v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class StatementFormatError(ValueError):
    """The payload is not an in-toto Statement v1 of the expected shape."""


def make_statement(subjects: Iterable[tuple[str, str]], predicate_type: str, predicate: dict[str, Any]) -> bytes:
    """Serialise a statement; ``subjects`` are (name, sha256 hex) pairs.

    Pretty-printed with sorted keys, so an auditor can read (and grep) the
    payload she verified with OpenSSL.
    """
    subject = [{"name": name, "digest": {"sha256": hexd}} for name, hexd in subjects]
    if not subject:
        raise ValueError("an in-toto statement needs at least one subject")
    stmt = {"_type": STATEMENT_TYPE, "subject": subject, "predicateType": predicate_type, "predicate": predicate}
    return (json.dumps(stmt, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def parse_statement(payload: bytes) -> dict[str, Any]:
    """Parse and check a statement's shape; return it as a dict."""
    try:
        stmt = json.loads(payload)
    except (ValueError, RecursionError):
        raise StatementFormatError("payload is not JSON") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise StatementFormatError(f"payload is not an in-toto Statement v1 (_type must be {STATEMENT_TYPE})")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise StatementFormatError("statement has no subjects")
    for i, s in enumerate(subjects):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise StatementFormatError(f"subject[{i}] has no name")
        digest = s.get("digest")
        if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str) or not _HEX64.match(
            digest["sha256"]
        ):
            raise StatementFormatError(f"subject[{i}] has no sha256 digest")
    if not isinstance(stmt.get("predicateType"), str) or not isinstance(stmt.get("predicate"), dict):
        raise StatementFormatError("statement has no predicateType / predicate")
    return stmt


def subject_digests(stmt: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, sha256 hex) for every subject of a parsed statement."""
    return [(s["name"], s["digest"]["sha256"]) for s in stmt["subject"]]
