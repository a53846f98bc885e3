"""Export: the store's runs (all, or selected) as one signed auditor bundle.

When the store has a transparency log, every exported run's Sigstore bundle
carries its log entry, proved against the log's latest checkpoint, and the
bundle carries that checkpoint, the leaf hashes up to it and a trusted_root.json.
With a timestamp authority, the runs' tokens (stored with them at collection)
travel in their Sigstore bundles, trusted_root.json names the TSAs that made them,
and the bundle statement's own signature is timestamped into ``bundle.tsr``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from affidavit.errors import StoreError, UsageError
from affidavit.signing.bundle import LogMaterial, RunAttestation, timestamp_tokens, write_bundle
from affidavit.signing.keys import Signer
from affidavit.signing.tlog_runs import export_log
from affidavit.store.local import LocalStore
from affidavit.store.tlog_store import LogStore

logger = logging.getLogger(__name__)
TsaAuthorities = Callable[[list[tuple[bytes, bytes]]], list[dict[str, Any]]]  # (token, signature) pairs -> entries


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    runs: int
    artefacts: int
    members: int
    log_size: int | None = None  # the checkpoint the runs are proved against (None: the store has no log)


def export_bundle(
    store: LocalStore,
    signer: Signer,
    out: Path,
    *,
    agent: str,
    now: datetime,
    since: datetime | None = None,
    controls: Sequence[str] = (),
    library_files: Sequence[tuple[str, bytes]] = (),
    tsa_authorities: Sequence[dict[str, Any]] = (),
    timestamp: Callable[[bytes], bytes] | None = None,
    authorities_of: TsaAuthorities | None = None,
) -> ExportSummary:
    """Export the selected runs; ``library_files`` (bundle path, bytes) are the control catalogs and
    mappings in force, carried (and signed) so an auditor sees the mapping that was used;
    ``tsa_authorities`` (``signing.tsa.timestamp_authority_entry``) go into trusted_root.json, with
    those ``authorities_of`` finds for the runs' timestamp tokens; ``timestamp`` (signature ->
    RFC 3161 token) timestamps the bundle statement. ``agent.pipeline.Timestamper`` is both."""
    runs = list(store.runs(since=since))
    if controls:
        wanted = set(controls)
        runs = [r for r in runs if any(wanted & set(a.controls) for a in store.artefacts(run_id=r.run_id))]
    if not runs:
        raise UsageError("nothing to export: the store holds no signed runs matching the selection",
                         hint="run `affidavit collect` first, or widen --since / --control")
    attestations = [_attestation(store, r.run_id) for r in runs]
    authorities = list(tsa_authorities)
    if authorities_of is not None:
        authorities += [a for a in authorities_of(_tokens(attestations)) if a not in authorities]
    entries: dict[str, dict[str, object]] = {}
    material: LogMaterial | None = None
    if LogStore.exists(store.root):
        with LogStore.open(store.root) as log:
            if log.checkpoint is not None:  # else the log is empty: nothing to prove against
                exported = export_log(log, [r.run_id for r in runs], tsa_authorities=authorities)
                entries, material = exported.entries, exported.material
        for r in runs:
            if r.run_id not in entries:
                logger.warning("run %s is not in the store's transparency log: a verifier checking the log "
                               "will report it", r.run_id)
    for att in attestations:
        if isinstance(att.sigstore.get("verificationMaterial"), dict):
            # the entry as of the export's checkpoint replaces the one stored when the run was logged
            att.sigstore["verificationMaterial"]["tlogEntries"] = [entries[att.run_id]] if att.run_id in entries \
                else []
    summary = write_bundle(
        out, runs=attestations, open_blob=store.open_blob, signer=signer,
        public_keys=[signer.public_key], agent=agent, created=now, extra=list(library_files), log=material,
        timestamp=timestamp,
    )
    return ExportSummary(out, len(runs), summary.artefacts, summary.members,
                         len(material.leaves) // 32 if material else None)


def _attestation(store: LocalStore, run_id: str) -> RunAttestation:
    dsse_path, sig_path = store.attestation_paths(run_id)
    try:
        dsse, sigstore = json.loads(dsse_path.read_bytes()), json.loads(sig_path.read_bytes())
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read the attestation of run {run_id}: {e}",
                         hint="run `affidavit store fsck`") from None
    if not isinstance(dsse, dict) or not isinstance(sigstore, dict):
        raise StoreError(f"the attestation of run {run_id} is not a JSON object", hint="run `affidavit store fsck`")
    return RunAttestation(run_id, dsse, sigstore)


def _tokens(attestations: Sequence[RunAttestation]) -> list[tuple[bytes, bytes]]:
    """(token, the signature it timestamps) for every run's stored timestamp tokens."""
    pairs = []
    for att in attestations:
        try:
            tokens = timestamp_tokens(att.sigstore)
            signature = base64.b64decode(att.dsse["signatures"][0]["sig"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            logger.warning("run %s: its timestamps cannot be read (%s)", att.run_id, e)
            continue
        pairs += [(t, signature) for t in tokens]
    return pairs
