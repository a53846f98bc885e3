"""Checking the store's transparency log against its attestations (part of `store fsck` / `verify STORE`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from affidavit.errors import StoreError
from affidavit.signing.keys import PublicKey
from affidavit.signing.tlog import ProofError, verify_consistency
from affidavit.signing.tlog_entry import dsse_body_problem
from affidavit.signing.tlog_note import CheckpointError, log_id_of, verify_checkpoint
from affidavit.store.base import FsckProblem
from affidavit.store.tlog_store import ENTRIES, LOG_DIR, LogStore


def fsck_log(store_root: Path, envelopes: Mapping[str, dict[str, Any]]) -> list[FsckProblem]:
    """Check the store's log against its attestations (``envelopes``: run_id -> DSSE envelope); [] when clean.

    Errors: a log that does not open (damaged files, a checkpoint that does not
    verify), an entry naming a run the store does not hold, a run logged twice
    or logged with a body that is not its envelope's, a stored run not in the log.
    """
    if not LogStore.exists(store_root):
        return []
    try:
        log = LogStore.open(store_root)
    except StoreError as e:
        return [FsckProblem(LOG_DIR, e.diagnostics())]
    problems: list[FsckProblem] = []
    seen: dict[str, int] = {}
    with log:
        pending = log.pending()
        try:
            log.checked_leaves()
            for rec in log.records():
                where = f"{LOG_DIR}/{ENTRIES}"
                if rec.run_id in seen:
                    problems.append(FsckProblem(where, f"run {rec.run_id} is logged twice (entries "
                                                       f"{seen[rec.run_id]} and {rec.index})"))
                seen[rec.run_id] = rec.index
                envelope = envelopes.get(rec.run_id)
                if envelope is None:
                    if pending is None or pending.run_id != rec.run_id:
                        problems.append(FsckProblem(where, f"entry {rec.index} is run {rec.run_id}, which the store "
                                                           "does not hold"))
                    continue
                problem = _body_problem(rec.body, envelope)
                if problem:
                    problems.append(FsckProblem(where, f"entry {rec.index} (run {rec.run_id}): {problem}"))
        except StoreError as e:
            problems.append(FsckProblem(f"{LOG_DIR}/{ENTRIES}", e.diagnostics()))
            return problems
    for run_id in sorted(set(envelopes) - set(seen)):
        problems.append(FsckProblem(f"attestations/{run_id}.dsse.json", "the run is not in the transparency log"))
    return problems


def _body_problem(body: bytes, envelope: dict[str, Any]) -> str | None:
    try:
        sig = envelope["signatures"][0]
        payload = base64.b64decode(envelope["payload"], validate=True)
        return dsse_body_problem(body, envelope, payload, str(sig["sig"]), str(sig["keyid"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return "its attestation's envelope is malformed"


def check_store_log(store_root: Path, log_key: PublicKey | None, old_checkpoint: str | None) -> list[FsckProblem]:
    """With the auditor's log key: the store's log is that key's, and extends ``old_checkpoint`` if given."""
    if log_key is None:
        return []
    if not LogStore.exists(store_root):
        return [FsckProblem(LOG_DIR, "the store has no transparency log, but you passed --log-key")]
    try:
        log = LogStore.open(store_root)
    except StoreError as e:
        return [FsckProblem(LOG_DIR, e.diagnostics())]
    with log:
        if log_id_of(log.meta.public_key) != log_id_of(log_key):
            return [FsckProblem(LOG_DIR, f"the store's log key is {log_id_of(log.meta.public_key).hex()}, "
                                         f"not your --log-key ({log_id_of(log_key).hex()})")]
        if old_checkpoint is None:
            return []
        try:
            old = verify_checkpoint(old_checkpoint, log_key)
        except CheckpointError as e:
            return [FsckProblem("(--checkpoint)", f"not a checkpoint of the trusted log: {e}")]
        if old.origin != log.meta.origin:
            return [FsckProblem("(--checkpoint)", f"is for log {old.origin!r}; the store's log is {log.meta.origin!r}")]
        if old.size > log.size:
            return [FsckProblem("(--checkpoint)", f"your checkpoint (size {old.size}) is newer than the store's log "
                                                  f"(size {log.size}): the log lost entries")]
        try:
            verify_consistency(old.size, log.size, log.consistency_proof(old.size), old.root, log.root)
        except ProofError as e:
            return [FsckProblem("(--checkpoint)", f"the store's log does not extend your checkpoint: {e}")]
    return []
