"""Runs in the transparency log: committing each signed run, finishing an interrupted one, exporting proofs.

The pipeline's order for a run (all under the store lock) is: sign the envelope,
record the run as *pending* (its envelope, in ``log/pending.json``), append its
Rekor-shaped entry and sign the new checkpoint (the commit point), store the
attestation with its ``tlogEntries``, index it, clear the pending record. A crash
before the commit leaves nothing logged and nothing stored (the signature never
left the process); a crash after it leaves a pending record that the next
:meth:`RunLog.open` (or commit) turns into the stored, indexed run. So the store
never holds a signed run without its log entry, nor the log an entry whose run
it cannot produce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from affidavit.errors import StoreError
from affidavit.signing.bundle import LogMaterial
from affidavit.signing.keys import PublicKey, Signer
from affidavit.signing.predicate import run_from_statement
from affidavit.signing.sigstore import make_bundle
from affidavit.signing.tlog_entry import dsse_body, tlog_entry, trusted_root
from affidavit.store.base import Store
from affidavit.store.tlog_store import LogStore, Pending

logger = logging.getLogger(__name__)


def entry_for(log: LogStore, index: int, run_id: str, body: bytes, integrated_time: int) -> dict[str, Any]:
    """The tlogEntry of entry ``index`` with its inclusion proof against the log's current checkpoint."""
    if log.checkpoint is None:
        raise StoreError("the transparency log has no checkpoint yet")
    return tlog_entry(index=index, log_id=log.meta.log_id, integrated_time=integrated_time, body=body,
                      tree_size=log.size, root=log.root, hashes=log.inclusion_proof(index), checkpoint=log.checkpoint)


class RunLog:
    """The committer's handle on the store's log (open it under the store lock with :meth:`open`)."""

    def __init__(self, log: LogStore, signer: Signer, store: Store, clock: Callable[[], datetime]) -> None:
        self.log, self.signer, self.store, self.clock = log, signer, store, clock

    @classmethod
    def open(cls, store: Store, signer: Signer, *, origin: str | None, default_origin: str,
             run_keys: Mapping[str, PublicKey], clock: Callable[[], datetime]) -> RunLog:
        """Open (or start) the log, finish a run an interrupted process committed, and log older runs.

        A new log first takes in the store's runs signed before it existed
        (oldest first, in one checkpoint) whose signer is among ``run_keys``.
        """
        log = LogStore.open_for_append(store.root, signer.public_key, origin=origin, default_origin=default_origin,
                                       now=clock())
        run_log = cls(log, signer, store, clock)
        try:
            run_log.finish_pending()
            if log.size == 0:
                run_log._backfill(run_keys)
        except BaseException:
            log.close()
            raise
        return run_log

    def close(self) -> None:
        self.log.close()

    def commit(self, run_id: str, envelope: dict[str, Any], signer_key: PublicKey,
               timestamps: dict[str, Any] | None = None) -> dict[str, Any]:
        """Log a signed run (the commit point); return its tlogEntry. Call :meth:`stored` once it is stored.

        ``timestamps`` (the bundle's timestampVerificationData) is kept with the
        pending record, so a run finished after a crash keeps its RFC 3161 tokens.
        """
        self.finish_pending()
        body = dsse_body(envelope, signer_key)
        when = int(self.clock().timestamp())
        index = self.log.size
        self.log.set_pending(Pending(index, run_id, envelope, timestamps))
        self.log.append([(run_id, body, when)], self.signer)
        logger.info("logged run %s as entry %d of %s", run_id, index, self.log.meta.origin)
        return entry_for(self.log, index, run_id, body, when)

    def stored(self, run_id: str) -> None:
        """The committed run is stored and indexed: forget its pending record."""
        pending = self.log.pending()
        if pending is not None and pending.run_id == run_id:
            self.log.clear_pending()

    def finish_pending(self) -> None:
        """Store and index the run a previous process committed but did not finish storing."""
        pending = self.log.pending()
        if pending is None:
            return
        if pending.index >= self.log.size:  # never committed: the run was not stored, nor logged
            logger.info("dropping run %s: its process stopped before logging it", pending.run_id)
            self.log.clear_pending()
            return
        record = self.log.record(pending.index)
        if record.run_id != pending.run_id:
            raise StoreError(f"log/pending.json names run {pending.run_id} at log index {pending.index}, "
                             f"but that entry is run {record.run_id}",
                             hint="restore the store's log/ folder from a backup")
        sigs = pending.envelope.get("signatures")
        keyid = sigs[0].get("keyid") if isinstance(sigs, list) and sigs and isinstance(sigs[0], dict) else None
        if not isinstance(keyid, str):
            raise StoreError(f"log/pending.json holds a malformed envelope for run {pending.run_id}")
        dsse_path, _ = self.store.attestation_paths(pending.run_id)
        if not dsse_path.exists():
            bundle = make_bundle(pending.envelope, keyid)
            if pending.timestamps is not None:
                bundle["verificationMaterial"]["timestampVerificationData"] = pending.timestamps
            bundle["verificationMaterial"]["tlogEntries"] = [
                entry_for(self.log, record.index, record.run_id, record.body, record.integrated_time)]
            self.store.put_attestation(pending.run_id, pending.envelope, bundle)
        payload = base64.b64decode(pending.envelope["payload"])
        self.store.index_run(run_from_statement(payload, keyid, hashlib.sha256(payload).hexdigest()))
        self.log.clear_pending()
        logger.warning("finished storing run %s, logged before the previous process stopped", pending.run_id)

    def _backfill(self, run_keys: Mapping[str, PublicKey]) -> None:
        items: list[tuple[str, bytes, int]] = []
        when = int(self.clock().timestamp())
        for run in self.store.runs():
            dsse_path, _ = self.store.attestation_paths(run.run_id)
            try:
                envelope = json.loads(dsse_path.read_bytes())
            except (OSError, ValueError) as e:
                raise StoreError(f"cannot read the attestation of run {run.run_id}: {e}",
                                 hint="run `affidavit store fsck`") from None
            key = run_keys.get(run.keyid)
            if key is None:
                logger.warning("run %s is signed by key %s whose public key is not at hand; it is not logged",
                               run.run_id, run.keyid)
                continue
            items.append((run.run_id, dsse_body(envelope, key), when))
        if items:
            self.log.append(items, self.signer)
            logger.info("logged %d runs signed before the transparency log started", len(items))


@dataclass(frozen=True)
class ExportedLog:
    """What an export takes from the log: its runs' entries, proved against one checkpoint, and the material."""

    entries: dict[str, dict[str, Any]]  # run_id -> tlogEntry
    material: LogMaterial


def export_log(log: LogStore, run_ids: Iterable[str], *,
               tsa_authorities: Sequence[dict[str, Any]] = ()) -> ExportedLog:
    """Inclusion proofs for ``run_ids`` (those in the log) against the log's latest checkpoint.

    ``tsa_authorities`` go into trusted_root.json (see ``trusted_root``).
    """
    if log.checkpoint is None:
        raise StoreError("the transparency log has no checkpoint yet")
    wanted = set(run_ids)
    entries: dict[str, dict[str, Any]] = {}
    for rec in log.records():
        if rec.run_id in wanted:
            entries[rec.run_id] = entry_for(log, rec.index, rec.run_id, rec.body, rec.integrated_time)
    meta = log.meta
    manifest = {"origin": meta.origin, "log_id": meta.log_id.hex(), "tree_size": log.size,
                "root_hash": log.root.hex()}
    root = trusted_root(meta.public_key, origin=meta.origin, log_start=meta.created, tsa_authorities=tsa_authorities)
    return ExportedLog(entries, LogMaterial(log.checkpoint, log.checked_leaves(), root, manifest))
